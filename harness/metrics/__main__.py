"""`python -m harness.metrics --doc`: print docs/metrics.md as the catalog generates it."""

from __future__ import annotations

import argparse
import sys

from harness.metrics.doc import metrics_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.metrics", description=__doc__)
    parser.add_argument("--doc", action="store_true", help="print docs/metrics.md generated from the catalog")
    args = parser.parse_args(argv)
    if not args.doc:
        parser.print_help()
        return 2
    sys.stdout.write(metrics_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
