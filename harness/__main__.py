try:
    from harness.cli import entry
except KeyboardInterrupt:  # Ctrl-C while Python imports the CLI: no traceback
    import sys

    print("harness: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

entry()
