"""The command line: a thin typed layer over the library. `main(argv) -> exit code`.

User mistakes (HarnessError) print one line and exit with their code; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from harness import __version__
from harness.catalog import add_commands as add_catalog_commands
from harness.console import table_console
from harness.errors import EXIT_FAILED, EXIT_OK, HarnessError, check_writable
from harness.logs import quiet_third_party_logs

OK_STATUSES = ("ok", "unsupported")


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.suite.load import load_suite

    code = EXIT_OK
    for path in args.suites:  # every file, every mistake: one line each
        try:
            suite = load_suite(path)
        except HarnessError as e:
            _print_error(e)
            code = e.exit_code
            continue
        print(f"{path}: ok, {len(suite.cases)} cases")
    return code


def _print_error(e: HarnessError) -> None:
    for line in str(e).splitlines() or [""]:
        print(f"harness: error: {line}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from harness.runner.preflight import detect_environment, unsupported_reason
    from harness.suite.load import load_suite

    suite = load_suite(args.suite)
    env = detect_environment()
    for case in suite.cases:
        reason = unsupported_reason(case, env)
        techs = "+".join(t.name for t in case.techniques) or "baseline"
        note = f"  [unsupported: {reason}]" if reason else ""
        print(f"{case.case_id}  {case.name}  ({techs}; batch {case.batch_size}, seq {case.seq_len}){note}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import signals
    from harness.runner.suite_runner import run_suite
    from harness.suite.load import load_suite
    from harness.summary import print_summary

    suite = load_suite(args.suite)
    if args.report:
        check_writable(args.report, "--report", folder_ok=True)
    resume_done = 0
    if args.resume:  # checked before anything starts, so a wrong path is one line and nothing else
        from harness.results.store import RunStore

        checked = RunStore.open_existing(args.resume, suite.sha256, lock=False)
        resume_done = len(checked.done_ids() & {c.case_id for c in suite.cases})
    if args.executor == "local" and suite.cases:
        from harness.runner.parent import prestart_memory_server

        # The first memory pass's fork server imports torch on another core while this process does
        # (below) and prepares the reference weights: ~2 s of the first case's start-up, hidden.
        prestart_memory_server(suite.cases[0])
    _import_uninterrupted("torch")  # torch is imported anyway; first, and uninterrupted
    console = Console(stderr=True)
    run_dir: list[Path] = []
    with _progress(console) as bar:
        task = bar.add_task("starting", total=len(suite.cases), completed=resume_done, resumed=resume_done)

        def on_case(case: Any, record: dict[str, Any] | None) -> None:
            if record is None:
                bar.update(task, description=case.name)
            else:
                bar.advance(task)

        def on_pass(case: Any, name: str) -> None:
            bar.update(task, description=f"{case.name} [{name}]")

        try:
            with signals.as_interrupts():  # SIGTERM / SIGHUP end the run as Ctrl-C does
                outcome = run_suite(
                    suite,
                    args.results,
                    resume=args.resume,
                    progress=on_case,
                    profile=args.profile,
                    started=run_dir.append,
                    on_pass=on_pass,
                    executor=_executor(args),
                )
        except KeyboardInterrupt as e:
            console.print(
                signals.stopped_message(e, args.suite, run_dir[0] if run_dir else None), markup=False
            )
            return signals.exit_code(e)
    print_summary(outcome.records, table_console())
    failed = [r for r in outcome.records if r["status"] not in OK_STATUSES]
    print(f"results: {outcome.store.path}  ({len(outcome.records)} cases, {len(failed)} failed)")
    if args.report:
        from harness.report import build_report

        print(f"report: {build_report([outcome.store.path], args.report, 'html')}")
    return EXIT_FAILED if failed else EXIT_OK


def _executor(args: argparse.Namespace) -> Any:
    from harness.executors import ExecutorOptions, make_executor, parse_options

    options = ExecutorOptions(
        address=args.address, local_nodes=args.ray_nodes, slurm=parse_options(args.slurm)
    )
    return make_executor(args.executor, options)


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import build_report

    check_writable(args.out, "-o", folder_ok=True)
    print(build_report(args.paths, args.out, args.format, args.policy))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import run_compare

    for path, option in ((args.junit, "--junit"), (args.md, "--md"), (args.json_out, "--json")):
        if path is not None:
            check_writable(path, option)
    return run_compare(
        args.baseline,
        args.current,
        policy_file=args.policy_file,
        allow_env_change=args.allow_env_change,
        junit=args.junit,
        md=args.md,
        json_out=args.json_out,
        update_baseline=args.update_baseline,
        console=table_console(),
        fmt=args.format,
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        console=console,
        transient=False,
    )


class EtaColumn(ProgressColumn):
    """Time left at the mean time per case so far. rich's own column estimates speed from advances in
    the last 30 s and needs two of them; cases take longer than that, so it always showed -:--:--."""

    def render(self, task: Task) -> Text:
        done = task.completed - task.fields.get("resumed", 0)
        if not task.elapsed or done <= 0 or task.total is None:
            return Text("ETA -:--:--", style="progress.remaining")
        left = int((task.total - task.completed) * task.elapsed / done)
        return Text(f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="progress.remaining")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness", description="Benchmark memory-saving techniques for transformer LMs."
    )
    p.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check suite files; exit 2 with one line per problem")
    v.add_argument("suites", nargs="+", type=Path)
    v.set_defaults(func=cmd_validate)
    ls = sub.add_parser("list", help="the expanded cases of a suite, with their ids")
    ls.add_argument("suite", type=Path)
    ls.set_defaults(func=cmd_list)
    r = sub.add_parser("run", help="run every case of a suite in its own process")
    r.add_argument("suite", type=Path)
    r.add_argument(
        "--results", type=Path, default=Path("results"), help="where run directories go (default results/)"
    )
    r.add_argument("--resume", type=Path, help="an earlier run directory: run only its missing cases")
    r.add_argument(
        "--report", type=Path, help="also write the HTML report of this run to this file or folder"
    )
    r.add_argument(
        "--profile",
        choices=["memray"],
        default=None,
        help="after each ok case, one more (unmeasured) process that writes memray's flame graph of its "
        "host allocations (on CUDA also torch's allocator history) next to the results",
    )
    _add_executor_flags(r)
    r.set_defaults(func=cmd_run)
    _add_report(sub)
    _add_compare(sub)
    from harness.estimate.cli import add_parser as add_estimate
    from harness.fit.cli import add_parser as add_fit

    add_estimate(sub)
    add_fit(sub)
    add_catalog_commands(sub)
    return p


def _add_executor_flags(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        default="local",
        help="where cases run: this machine (default), a Ray cluster, or Slurm jobs (docs/executors.md)",
    )
    r.add_argument(
        "--address", help="ray: an existing cluster (auto, ray://host:10001); default: start one for the run"
    )
    r.add_argument(
        "--ray-nodes", type=int, default=1, help="ray without --address: logical nodes of the local cluster"
    )
    r.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="slurm: submitit parameters, e.g. partition=gpu,gpus_per_node=1,time=60 (cluster=local: "
        "submitit's local executor, no Slurm)",
    )


def _add_report(sub: Any) -> None:
    r = sub.add_parser("report", help="one HTML report (or md/csv/parquet) of runs")
    r.add_argument(
        "paths", nargs="+", type=Path, help="run dirs, results.jsonl files, or a results root (history)"
    )
    r.add_argument(
        "-o", "--out", type=Path, default=Path("reports"), help="output file, or a folder for report.<ext>"
    )
    r.add_argument("--format", choices=["html", "md", "csv", "parquet"], default="html")
    r.add_argument(
        "--policy",
        type=Path,
        help="compare policy whose gated figure to mark (default: results/baselines/policy.yaml)",
    )
    r.set_defaults(func=cmd_report)


def _add_compare(sub: Any) -> None:
    c = sub.add_parser(
        "compare",
        help="regression gate: exit 0 no regression, 1 regression, 2 usage error, 3 insufficient data",
    )
    c.add_argument("baseline", type=Path, help="baseline .json, run dir, or results.jsonl")
    c.add_argument("current", type=Path, help="run dir or results.jsonl (or a baseline .json)")
    c.add_argument("--policy", type=Path, dest="policy_file", help="YAML/JSON policy (strict keys)")
    c.add_argument(
        "--allow-env-change",
        action="store_true",
        help="judge memory/time although torch/python/CPU/GPU differ",
    )
    c.add_argument("--junit", type=Path, help="write JUnit XML: one testcase per case x metric")
    c.add_argument("--md", type=Path, help="write a markdown summary (for CI job summaries)")
    c.add_argument(
        "--format",
        choices=["terminal", "github"],
        default="terminal",
        help="github: print a pull-request comment (markdown, failing gated verdicts first) to stdout",
    )
    c.add_argument("--json", type=Path, dest="json_out", help="write the verdicts as JSON")
    c.add_argument(
        "--update-baseline", action="store_true", help="(re)write BASELINE (.json) from CURRENT; exit 0"
    )
    c.set_defaults(func=cmd_compare)


def _import_uninterrupted(module: str) -> None:
    """Import `module` with Ctrl-C held until it is done: an interrupt inside torch's (or numpy's) own
    import leaves them half-initialised and ends in an unrelated traceback. The Ctrl-C then counts."""
    import importlib
    import signal

    pending: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    except ValueError:  # not the main thread: nothing to hold
        importlib.import_module(module)
        return
    try:
        importlib.import_module(module)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


# Options whose value may start with "-" (a negative size or count): argparse would read `--budget -5GiB`
# as two options and answer "expected one argument"; joined, the value reaches the command's own check.
_SIGNED_VALUE_OPTIONS = ("--budget", "--max")


def _join_signed_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _SIGNED_VALUE_OPTIONS and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def entry() -> None:
    """The `harness` command: main(), then exit without tearing the interpreter down. With torch and
    pandas loaded that teardown takes ~0.6 s and does nothing for the user: atexit handlers (the fork
    servers, logging) still run, and every file harness writes is closed when it is written."""
    import atexit

    code = main()  # argparse's usage errors and --version leave through SystemExit, the usual way
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (| head) must not turn into a traceback
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_third_party_logs()
    args = build_parser().parse_args(_join_signed_values(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "list":  # it imports torch anyway; do it first, uninterrupted
            _import_uninterrupted("torch")
        code: int = args.func(args)
        return code
    except HarnessError as e:
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:  # before a run started (imports, loading the suite): nothing to save
        print("harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `harness list ... | head`: the reader has what it wanted; exit as git does
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as e:  # a path the user gave that the system refuses (permissions, a full disk)
        where = f"{e.filename}: " if e.filename else ""
        print(f"harness: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
