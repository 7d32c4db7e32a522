"""harness inside a team's own pytest suite.

Three uses, all through the same runner as `harness run` (one fresh process per case, the same records
and figures):

- the `harness_case` fixture runs one case and returns its typed record;
- `--harness-suite FILE` collects every case of a suite as a test item (ok passes, unsupported is
  skipped with the reason, any other status fails with the record's error);
- `@pytest.mark.harness_limit(tensor_peak="2GiB", step_time_ratio=1.3)` asserts limits on the record.

With pytest-benchmark active, each case's *measured* step times (harness's own timing, not re-timed)
become that test's benchmark entry, with memory, quality and the case id in `extra_info`, so
`--benchmark-json`, `--benchmark-autosave`, `--benchmark-compare` and `pytest-benchmark compare` work.

This module is loaded by pytest through the `pytest11` entry point in every project that installs
harness, so it imports nothing heavy at import time (torch is imported by the case processes only).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from harness.units import size_bytes

if TYPE_CHECKING:
    from harness.case import CaseSpec
    from harness.suite.load import LoadedSuite

OK, UNSUPPORTED = "ok", "unsupported"
# ---------------------------------------------------------------- the typed record a test reads


@dataclasses.dataclass(frozen=True)
class HarnessRecord:
    """The figures a test asserts on, read from one results.jsonl record (`raw` keeps all of it).

    Memory in bytes, times in seconds; a figure the case could not measure is None.
    """

    case_id: str
    case_name: str
    status: str
    error: str | None
    tensor_peak_bytes: int | None
    host_rss_peak_above_base_bytes: int | None
    gpu_peak_allocated_bytes: int | None
    step_time_s: tuple[float, ...]
    step_time_s_median: float | None
    tokens_per_s: float | None
    heldout_loss_nats: float | None
    raw: Mapping[str, Any]
    baseline: HarnessRecord | None = None

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], baseline: HarnessRecord | None = None) -> HarnessRecord:
        breakdown = rec.get("breakdown") or {}
        quality = rec.get("quality") or {}
        return cls(
            case_id=str(rec.get("case_id")),
            case_name=str(rec.get("case_name")),
            status=str(rec.get("status")),
            error=rec.get("error"),
            tensor_peak_bytes=breakdown.get("tensor_peak_bytes"),
            host_rss_peak_above_base_bytes=rec.get("host_rss_peak_above_base_bytes"),
            gpu_peak_allocated_bytes=rec.get("gpu_peak_allocated_bytes"),
            step_time_s=tuple(rec.get("step_time_s") or ()),
            step_time_s_median=rec.get("step_time_s_median"),
            tokens_per_s=rec.get("tokens_per_s"),
            heldout_loss_nats=rec.get("heldout_loss_nats", quality.get("heldout_loss_nats")),
            raw=rec,
            baseline=baseline,
        )

    @property
    def step_time_ratio(self) -> float | None:
        """Median step time over the baseline's (same model and workload, no technique), or None."""
        base = self.baseline.step_time_s_median if self.baseline else None
        mine = self.step_time_s_median
        return mine / base if mine is not None and base else None


# ---------------------------------------------------------------- limits


def parse_bytes(value: int | float | str) -> int:
    """`2GiB`, `512MiB`, `1.5GB`, `1000000` -> bytes. Raises ValueError naming the accepted forms."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a byte limit must be >= 0, got {value}")
        return int(value)
    parsed = size_bytes(str(value))
    if parsed is None:
        raise ValueError(f"cannot read {value!r} as bytes: write e.g. 2GiB, 512MiB, 1.5GB or a plain integer")
    return parsed


# limit name -> (what it reads from the record, parses the limit)
LIMITS: dict[str, tuple[Callable[[HarnessRecord], float | None], Callable[[Any], float]]] = {
    "tensor_peak": (lambda r: r.tensor_peak_bytes, parse_bytes),
    "host_peak": (lambda r: r.host_rss_peak_above_base_bytes, parse_bytes),
    "gpu_peak": (lambda r: r.gpu_peak_allocated_bytes, parse_bytes),
    "step_time_s": (lambda r: r.step_time_s_median, float),
    "step_time_ratio": (lambda r: r.step_time_ratio, float),
    "heldout_loss_nats": (lambda r: r.heldout_loss_nats, float),
}


def limit_failures(rec: HarnessRecord, limits: Mapping[str, Any]) -> list[str]:
    """One line per limit that the record breaks, or cannot be checked on (fails closed)."""
    out = []
    for name, bound in limits.items():
        if name not in LIMITS:
            raise pytest.UsageError(f"harness_limit: unknown limit {name!r}; allowed: {', '.join(LIMITS)}")
        read, parse = LIMITS[name]
        limit, value = parse(bound), read(rec)
        if value is None:
            out.append(f"{rec.case_name}: {name} could not be measured, so the limit {bound} is not met")
        elif value > limit:
            out.append(f"{rec.case_name}: {name} = {_show(name, value)} exceeds the limit {bound}")
    return out


def _show(name: str, value: float) -> str:
    return f"{value / 2**20:.1f} MiB" if name.endswith("peak") else f"{value:.4g}"


def _limits_of(node: pytest.Item) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("harness_limit"))):  # closest mark wins
        limits.update(mark.kwargs)
    return limits


# ---------------------------------------------------------------- running cases


class CaseRunner:
    """Runs single cases of a loaded suite into one run directory, baselines kept for exactness."""

    def __init__(self, loaded: LoadedSuite, results_root: Path) -> None:
        self.loaded = loaded
        self.results_root = results_root
        self.run_dir: Path | None = None

    def run(self, case: CaseSpec) -> dict[str, Any]:
        from harness.runner.suite_runner import run_suite

        one = dataclasses.replace(self.loaded, cases=[case])
        outcome = run_suite(one, self.results_root, resume=self.run_dir)
        self.run_dir = outcome.store.path
        return next(r for r in outcome.records if r["case_id"] == case.case_id)


def _baselines_first(cases: Sequence[CaseSpec]) -> list[CaseSpec]:
    return sorted(cases, key=lambda c: bool(c.techniques))


def _record_benchmark(request: pytest.FixtureRequest, rec: HarnessRecord) -> None:
    """Hand harness's measured step times to pytest-benchmark as this test's benchmark entry.

    pytest-benchmark has no public call for "these durations were measured elsewhere", so this fills
    its per-test fixture the way its own timing loop does (`_make_stats`, then `update` per round).
    """
    if getattr(request.config, "_benchmarksession", None) is None or not rec.step_time_s:
        return  # pytest-benchmark not active in this session
    bench = request.getfixturevalue("benchmark")
    if bench.disabled or bench._mode:  # disabled, or this test already produced its entry
        return
    bench.group = str(rec.raw.get("model_name", "")) + "/" + str(rec.raw.get("workload_name", ""))
    bench.extra_info.update(_extra_info(rec))
    stats = bench._make_stats(1)
    for seconds in rec.step_time_s:
        stats.update(seconds)
    bench._mode = "harness measured steps"


def _extra_info(rec: HarnessRecord) -> dict[str, Any]:
    raw = rec.raw
    return {
        "harness_case_id": rec.case_id,
        "harness_case_name": rec.case_name,
        "harness_status": rec.status,
        "techniques": raw.get("techniques"),
        "batch_size": raw.get("batch_size"),
        "seq_len": raw.get("seq_len"),
        "timing_source": raw.get("timing_source"),
        "tensor_peak_bytes": rec.tensor_peak_bytes,
        "host_rss_peak_above_base_bytes": rec.host_rss_peak_above_base_bytes,
        "gpu_peak_allocated_bytes": rec.gpu_peak_allocated_bytes,
        "tokens_per_s": rec.tokens_per_s,
        "heldout_loss_nats": rec.heldout_loss_nats,
    }


def _judge(request: pytest.FixtureRequest, rec: HarnessRecord, limits: Mapping[str, Any]) -> None:
    """ok -> limits checked; unsupported -> skipped with the reason; anything else -> failed."""
    if rec.status == UNSUPPORTED:
        pytest.skip(f"{rec.case_name}: unsupported: {rec.error}")
    if rec.status != OK:
        pytest.fail(f"{rec.case_name}: {rec.status}: {rec.error}", pytrace=False)
    _record_benchmark(request, rec)
    failures = limit_failures(rec, limits)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


# ---------------------------------------------------------------- the fixture


def _suite_text(
    model: Mapping[str, Any],
    workload: Mapping[str, Any],
    techniques: Sequence[Any],
    *,
    with_baseline: bool,
    defaults: Mapping[str, Any],
    name: str,
) -> str:
    combos = ["baseline", "case"] if techniques and with_baseline else ["case" if techniques else "baseline"]
    doc = {
        "version": 1,
        "name": name,
        "defaults": dict(defaults),
        "models": {"model": dict(model)},
        "workloads": {"workload": dict(workload)},
        "techniques": {"baseline": [], "case": list(techniques)},
        "matrix": {"model": ["model"], "workload": ["workload"], "techniques": combos},
    }
    return yaml.safe_dump(doc, sort_keys=False)


HarnessCase = Callable[..., HarnessRecord]


@pytest.fixture
def harness_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HarnessCase:
    """Run one case in its own process; returns its HarnessRecord (limits of `harness_limit` checked).

    `harness_case(model={...}, workload={...}, techniques=[...], defaults={...})` takes the same
    mappings a suite file does. The baseline (same model and workload, no technique) runs too when a
    `step_time_ratio` limit asks for it or `baseline=True`; it is then `record.baseline`.
    """
    limits = _limits_of(request.node)
    root = tmp_path_factory.mktemp("harness")

    def run(
        model: Mapping[str, Any],
        workload: Mapping[str, Any],
        techniques: Sequence[Any] = (),
        *,
        defaults: Mapping[str, Any] | None = None,
        baseline: bool = False,
    ) -> HarnessRecord:
        from harness.errors import HarnessError
        from harness.suite.load import load_suite

        with_baseline = baseline or "step_time_ratio" in limits
        suite = root / f"suite-{len(list(root.glob('suite-*.yaml')))}.yaml"
        text = _suite_text(model, workload, techniques, with_baseline=with_baseline,
                           defaults=defaults or {}, name=_safe_name(request.node.name))  # fmt: skip
        suite.write_text(text, encoding="utf-8")
        try:
            loaded = load_suite(suite)
        except HarnessError as e:
            raise pytest.UsageError(f"harness_case: {e}") from None
        runner = CaseRunner(loaded, root / "results")
        records = [runner.run(c) for c in _baselines_first(loaded.cases)]
        base = HarnessRecord.from_record(records[0]) if len(records) == 2 else None
        rec = HarnessRecord.from_record(records[-1], baseline=base)
        _judge(request, rec, limits)
        return rec

    return run


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "pytest"


# ---------------------------------------------------------------- --harness-suite collection


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "harness memory and time benchmarks")
    group.addoption(
        "--harness-suite",
        action="append",
        default=[],
        metavar="FILE",
        help="collect every case of this harness suite as a test item (repeatable)",
    )
    group.addoption(
        "--harness-results",
        default=None,
        metavar="DIR",
        help="where --harness-suite writes its run directory (default: a temporary directory)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "harness_limit(**limits): fail a harness case whose figure exceeds a limit; limits: "
        + ", ".join(LIMITS)
        + " (bytes as 2GiB / 512MiB / integers)",
    )
    suites = [str(Path(s)) for s in config.getoption("harness_suite") or []]
    if not suites:
        return
    for s in suites:
        if not Path(s).is_file():
            raise pytest.UsageError(f"--harness-suite {s}: no such file; give the path of a suite YAML")
    # Without positional arguments pytest would collect its testpaths; the suites are what was asked.
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = suites
    else:
        config.args = [*config.args, *suites]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    wanted = {Path(s).resolve() for s in parent.config.getoption("harness_suite") or []}
    if file_path.resolve() in wanted:
        return HarnessSuiteFile.from_parent(parent, path=file_path)
    return None


class HarnessSuiteFile(pytest.File):
    """A suite file: one test item per case, baselines first (exactness is checked against them)."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness.errors import HarnessError
        from harness.suite.load import load_suite

        try:
            loaded = load_suite(self.path)
        except HarnessError as e:
            raise self.CollectError(str(e)) from None
        root = self.config.getoption("harness_results")
        results = Path(root) if root else Path(tempfile.mkdtemp(prefix="harness-pytest-"))
        runner = CaseRunner(loaded, results)
        for case in _baselines_first(loaded.cases):
            yield HarnessCaseItem.from_parent(self, name=case.name, callobj=_case_test(runner, case))


def _case_test(runner: CaseRunner, case: CaseSpec) -> Callable[[pytest.FixtureRequest], None]:
    def test(request: pytest.FixtureRequest) -> None:
        rec = HarnessRecord.from_record(runner.run(case))
        _judge(request, rec, _limits_of(request.node))

    return test


class HarnessCaseItem(pytest.Function):
    """A pytest Function (so fixtures such as pytest-benchmark's work) that runs one suite case."""

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name
