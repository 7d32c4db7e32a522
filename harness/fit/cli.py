"""`harness fit SUITE --budget 24GiB|200MiB|host --device h100-80gb,... --axis batch_size|seq_len`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK, HarnessError, check_writable, write_text_file


def add_parser(sub: Any) -> None:
    f = sub.add_parser(
        "fit", help="largest batch (or seq_len) per technique combination under memory budgets"
    )
    f.add_argument("suite", type=Path)
    f.add_argument(
        "--budget", action="append", default=[], help="bytes with a unit (24GiB, 200MiB), or host; repeatable"
    )
    f.add_argument(
        "--device",
        action="append",
        default=[],
        help="named GPUs from harness/fit/devices.py, comma-separated",
    )
    f.add_argument("--axis", default="batch_size", help="batch_size (default) or seq_len")
    f.add_argument(
        "--max", type=int, default=None, dest="maximum", help="the axis ceiling (default 4096 / max_seq_len)"
    )
    f.add_argument(
        "--estimate", action="store_true", help="probe by fake-tensor estimates, then one real probe"
    )
    f.add_argument("--results", type=Path, default=Path("results"), help="where the fit run goes")
    f.add_argument("--resume", type=Path, help="an earlier fit run directory: re-ask nothing it knows")
    f.add_argument("--md", type=Path, help="also write the fits-on table as markdown to this file")
    f.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    from harness.console import table_console
    from harness.fit.budget import check_axis, parse_budgets
    from harness.fit.run import FIT_FILE, FitLog, FitOptions, Prober, fit_one
    from harness.fit.view import fit_markdown, fit_table
    from harness.results.store import RunStore
    from harness.runner.preflight import detect_environment, unsupported_reason
    from harness.suite.load import load_suite

    if args.md:
        check_writable(args.md, "--md")
    axis = check_axis(args.axis)
    budgets = parse_budgets(args.budget, args.device)
    if args.maximum is not None and args.maximum < 1:
        raise HarnessError(f"--max {args.maximum}: the axis ceiling must be positive, e.g. --max 256")
    suite = load_suite(args.suite)
    # What the answers depend on: a resumed fit run must have asked the same questions of the same suite.
    asked = {"fit_axis": axis, "fit_maximum": args.maximum, "fit_estimate": bool(args.estimate)}
    if args.resume:
        store = RunStore.open_existing(args.resume, suite.sha256)
        _check_resumable(args.resume, store.manifest(), asked)
    else:
        manifest = {"suite": suite.name, "suite_sha256": suite.sha256, "kind": "fit", **asked}
        store = RunStore.create(args.results, f"{suite.name}-fit", manifest)
    log = FitLog(store.path / FIT_FILE)
    prober = Prober(store.path, store.run_id, log)
    opts = FitOptions(axis=axis, maximum=args.maximum, estimate=args.estimate)
    env = detect_environment()
    answers = []
    for case in _combinations(suite.cases):
        cannot = unsupported_reason(case, env)
        for budget in budgets:
            answers.append(fit_one(case, budget, opts, prober, cannot))
    table_console().print(fit_table(answers, [b.name for b in budgets]))
    if args.md:
        write_text_file(args.md, fit_markdown(answers, [b.name for b in budgets]))
    probes = sum(1 for r in log.lines if r["record_kind"] == "fit_probe")
    print(f"fit: {log.path}  ({len(answers)} answers, {probes} probes)")
    return EXIT_OK


def _combinations(cases: list[Any]) -> list[Any]:
    """One case per model x workload x techniques: the suite's own batch/seq only seed the probes."""
    seen: dict[str, Any] = {}
    for c in cases:
        seen.setdefault(f"{c.model_name}/{c.workload_name}/{c.techniques_name}", c)
    return list(seen.values())


def _check_resumable(path: Any, manifest: dict[str, Any], asked: dict[str, Any]) -> None:
    """Only a fit run, of the same axis, ceiling and method, is resumed: its answers are then this call's."""
    if manifest.get("kind") != "fit":
        raise HarnessError(
            f"{path}: not a fit run (a `harness run` directory?); resume the folder `fit` made"
        )

    def shown(v: Any) -> str:
        return "default" if v is None else str(v)

    differs = [f"{k.removeprefix('fit_')} {shown(manifest.get(k))} there, {shown(v)} now"
               for k, v in asked.items() if manifest.get(k) != v]  # fmt: skip
    if differs:
        raise HarnessError(f"{path}: a fit run asked otherwise ({'; '.join(differs)}); repeat its options")
