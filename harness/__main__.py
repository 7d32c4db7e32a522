try:
    from harness.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the CLI: no traceback
    raise SystemExit(130) from None

raise SystemExit(main())
