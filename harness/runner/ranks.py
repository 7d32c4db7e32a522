"""Multi-rank cases (ZeRO-1, FSDP2): the case process runs ranks under torchrun; each rank measures itself.

Launcher side (in the case process, called from `child.run` when a technique's `launch_ranks` > 1):

    python -m torch.distributed.run --standalone --nproc-per-node N -m harness.runner.ranks SETTINGS.json

SETTINGS.json holds the case and the folder where each rank writes `rank-R.json`; nothing case-specific is
on torchrun's command line. `--standalone` runs the rendezvous on a free localhost port (no network).
The backend is gloo on CPU, nccl on CUDA (rank -> cuda:LOCAL_RANK).

Phases: rank 0 prints one line `HARNESS-RANK-MARK {"mark": ...}` on its stdout (a pipe the launcher reads,
blocking) after a barrier, i.e. once every rank has finished `imported`, `built`, `warmed` and `measured`;
the launcher relays each line as the case process's own phase mark. So the case's phase durations and its
timeline show the ranks' phases, while the parent's host figures (VmHWM of the case process) are the
launcher's memory only: the result says so (`host_memory_scope`). The training memory is measured by each
rank on itself, exactly as the parent does for a single process: at every phase boundary it reads its own
VmHWM (the phase's peak), resets it by writing "5" to /proc/self/clear_refs, and reads torch's CUDA peaks
(then resets them). MALLOC_MMAP_THRESHOLD_ reaches the ranks through the environment, as it does the case.

Data parallel: every rank builds the same seeded global batches and keeps its slice (batch_size / N samples),
so the global batch equals the single-process one; gradients are averaged by DDP / FSDP2, and the step loss
reported is the mean over ranks (all-reduced once, after the measured steps, outside the timed region).

No process is left behind: the ranks run in sessions of their own (torchrun's choice), so a kill of the case
process group does not reach them. Instead each link dies with its parent (PR_SET_PDEATHSIG): the case
process with the runner, torchrun with the case process, each rank with torchrun. A rank that fails writes
its result and exits 1; torchrun then stops the others, and the launcher reports the first failure.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.runner import procmem

if TYPE_CHECKING:
    from harness.case import CaseSpec

MARK_PREFIX = b"HARNESS-RANK-MARK "
RANK_MARKS = ("imported", "built", "warmed", "measured")
# Phases whose peaks make a rank's step peak (the same definition as the case record's).
PEAK_PHASES = ("build", "warmup", "measured")
PHASE_AFTER = {"imported": "build", "built": "warmup", "warmed": "measured", "measured": "extras"}


def ranks_needed(case: CaseSpec) -> int:
    """How many ranks the case's techniques ask for; 1 means the case runs in the case process."""
    from harness.runner.session import context_for, techniques_for

    ctx = context_for(case)
    return max((t.launch_ranks(ctx) for t in techniques_for(case)), default=1)


# ---------------------------------------------------------------- launcher (the case process) ----


def launch(case: CaseSpec, work_dir: Path, mark: Callable[[str], Any]) -> dict[str, Any]:
    """Run the case's ranks under torchrun, relay their phase marks to `mark`, return the merged result."""
    world = ranks_needed(case)
    run_dir = Path(tempfile.mkdtemp(prefix="ranks-", dir=work_dir))
    settings = run_dir / "settings.json"
    settings.write_text(json.dumps({"case": case.model_dump(mode="json"), "out_dir": str(run_dir)}))
    rc = _run_torchrun(world, settings, mark)
    results = [_read_json(run_dir / f"rank-{r}.json") for r in range(world)]
    merged = merge(results, rc, world)
    merged["threads"] = case.threads
    if merged["status"] == "ok":
        shutil.rmtree(run_dir, ignore_errors=True)
    else:  # the ranks' own result files stay for a look
        merged["ranks_dir"] = str(run_dir)
    return merged


def torchrun_command(world: int, settings: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={world}",
        "--max-restarts=0",
        "--monitor-interval=0.1",  # a failed rank is noticed (and the others stopped) within 0.1 s
        "-m",
        "harness.runner.ranks",
        str(settings),
    ]


def _run_torchrun(world: int, settings: Path, mark: Callable[[str], Any]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the pre-exec hook only calls it

    def die_with_us() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG survives exec: torchrun dies with this process

    proc = subprocess.Popen(
        torchrun_command(world, settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,  # rank 0's marks; anything else printed there is passed on to stderr
        preexec_fn=die_with_us,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks; EOF once torchrun and every rank have exited
        if line.startswith(MARK_PREFIX):
            mark(json.loads(line[len(MARK_PREFIX) :])["mark"])
        else:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
    return proc.wait()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def merge(results: list[dict[str, Any] | None], rc: int, world: int) -> dict[str, Any]:
    """One case result from the ranks' results: rank 0's losses and model figures, per-step time as the
    slowest rank's, CPU time summed over ranks, per-rank memory and its maximum over ranks."""
    out: dict[str, Any] = {"world_size": world, "host_memory_scope": "launcher; see ranks", "loss": []}
    failed = _first_failure(results, rc)
    if failed is not None:
        out.update(failed)
        out["ranks"] = [_rank_summary(r) for r in results if r is not None]
        return out
    done = [r for r in results if r is not None]
    first = done[0]
    # Not "device": the record's device is the case's ("cpu"/"cuda"); each rank's own is in `ranks`.
    for key in ("loss", "samples_per_step", "tokens_per_step"):
        out[key] = first[key]
    out.update(first["model"])
    out.update(first["metrics"])
    out["step_time_s"] = [max(s) for s in zip(*(r["step_time_s"] for r in done), strict=True)]
    out["step_cpu_time_s"] = [sum(s) for s in zip(*(r["step_cpu_time_s"] for r in done), strict=True)]
    out["ranks"] = [_rank_summary(r) for r in done]
    out.update(_maxima(out["ranks"]))
    out["status"] = "ok"
    return out


def _first_failure(results: list[dict[str, Any] | None], rc: int) -> dict[str, Any] | None:
    bad = [r for r in results if r is not None and r.get("status") != "ok"]
    if bad:
        # The first to fail is the cause: a peer that dies breaks the others' collectives a moment later.
        worst = min(bad, key=lambda r: r.get("failed_at", float("inf")))
        out: dict[str, Any] = {
            k: worst[k] for k in ("status", "oom_requested_bytes", "traceback_tail") if k in worst
        }
        out["error"] = f"rank {worst['rank']}: {worst.get('error')}"
        return out
    missing = [str(i) for i, r in enumerate(results) if r is None]
    if missing or rc != 0:
        why = f"rank(s) {', '.join(missing)} wrote no result" if missing else "ranks reported ok"
        return {"status": "error", "error": f"torchrun exited with code {rc}; {why} (see stderr_tail)"}
    return None


RANK_KEYS = (
    "rank",
    "status",
    "error",
    "device",
    "threads",
    "host_peak_method",
    "host_rss_base_bytes",
    "host_rss_peak_bytes",
    "host_rss_peak_above_base_bytes",
    "gpu_peak_allocated_bytes",
    "gpu_peak_reserved_bytes",
    "param_bytes_local",
    "optimizer_state_bytes",
    "phases",
    "step_time_s",
)


def _rank_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in RANK_KEYS if k in r}


# The per-rank figures whose maximum over ranks the record carries as rank_<key>_max.
MAX_KEYS = tuple(k for k in RANK_KEYS if "_bytes" in k)


def _maxima(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """`rank_<figure>_max` over ranks: the memory one machine of the job must provide."""
    out: dict[str, Any] = {}
    for key in MAX_KEYS:
        vals = [r[key] for r in ranks if r.get(key) is not None]
        out[f"rank_{key}_max"] = max(vals) if vals else None
    return out


# ------------------------------------------------------------------------- one rank (under torchrun) ----


class PhaseMeter:
    """This rank's memory per phase, measured on itself: VmHWM read and reset at each boundary (exact on
    Linux), torch's CUDA peaks read and reset likewise. Phase names match the case record's."""

    def __init__(self, torch: Any, on_cuda: bool, t_start: float) -> None:
        self.torch, self.on_cuda = torch, on_cuda
        self.phases: dict[str, dict[str, Any]] = {}
        self._name, self._t = "startup", t_start
        self._start_rss: int | None = None
        self._pid = os.getpid()

    def boundary(self, mark: str) -> None:
        from harness.runner.caseproc import gpu_phase

        now = time.monotonic()
        self.phases[self._name] = {
            "host_rss_start_bytes": self._start_rss,
            "host_rss_peak_bytes": procmem.hwm_bytes(self._pid),
            "host_rss_end_bytes": procmem.rss_bytes(self._pid),  # at rest, after the phase
            "duration_s": round(now - self._t, 6),
            **gpu_phase(self.torch, self.on_cuda),
        }
        procmem.reset_hwm(self._pid)  # the high-water mark is now this instant's RSS
        self._name, self._start_rss, self._t = PHASE_AFTER[mark], procmem.rss_bytes(self._pid), now

    def figures(self) -> dict[str, Any]:
        peaks = [self.phases[n]["host_rss_peak_bytes"] for n in PEAK_PHASES if n in self.phases]
        base = self.phases.get("build", {}).get("host_rss_start_bytes")
        peak = max(peaks) if peaks and None not in peaks else None
        out: dict[str, Any] = {
            "phases": self.phases,
            "host_peak_method": "vmhwm" if procmem.HAVE_PROC else "none",
            "host_rss_base_bytes": base,
            "host_rss_peak_bytes": peak,
            "host_rss_peak_above_base_bytes": peak - base if peak is not None and base is not None else None,
        }
        for key in ("gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes"):
            vals = [self.phases[n][key] for n in PEAK_PHASES if key in self.phases.get(n, {})]
            out[key] = max(vals) if vals else None
        return out


def _die_with_torchrun() -> None:
    """SIGKILL this rank when torchrun dies; exit now if it already has (we were reparented)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return
    if os.getppid() == 1 or not (b"torch.distributed.run" in parent or b"torchrun" in parent):
        os._exit(3)


def _mark(dist: Any, meter: PhaseMeter, rank: int, name: str) -> None:
    """End a phase on this rank, wait for every rank to end it, then (rank 0) tell the launcher."""
    meter.boundary(name)
    dist.barrier()
    if rank == 0:
        line = MARK_PREFIX + json.dumps({"mark": name, "t": time.monotonic()}).encode() + b"\n"
        sys.stdout.buffer.write(line)  # one short write: atomic on a pipe
        sys.stdout.flush()


def _init_distributed(torch: Any, case: CaseSpec, local_rank: int) -> Any:
    import torch.distributed as dist

    timeout = timedelta(seconds=case.timeout_s)  # a collective never waits longer than the case may run
    if case.device == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return dist


def take_rank_slice(session: Any, rank: int, world: int) -> None:
    """Keep this rank's slice of every global batch (a DistributedSampler over identical seeded data)."""
    local = session.samples_per_step // world
    micro = getattr(getattr(session, "plan", None), "micro_batches", 1)
    if local % micro:
        raise ValueError(f"the per-rank batch {local} does not split into {micro} micro-batches")
    session.batches = [
        (x[rank * local : (rank + 1) * local].clone(), y[rank * local : (rank + 1) * local].clone())
        for x, y in session.batches
    ]


def local_bytes(t: Any) -> int:
    """Bytes this rank holds for a tensor: the local shard of a DTensor, the whole of a plain tensor."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return int(local.numel() * local.element_size())


def optimizer_state_bytes(opt: Any) -> int:
    """Bytes of the optimizer state this rank holds (ZeroRedundancyOptimizer: its local shard's)."""
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps this rank's optimizer in .optim
    return sum(
        local_bytes(v) for state in inner.state.values() for v in state.values() if hasattr(v, "numel")
    )


def _local_figures(session: Any) -> dict[str, int]:
    params = list({id(p): p for p in session.model.parameters()}.values())
    out = {"param_bytes_local": sum(local_bytes(p) for p in params)}
    opt = getattr(session, "optimizer", None)
    if opt is not None:
        out["optimizer_state_bytes"] = optimizer_state_bytes(opt)
    return out


def run_rank(
    settings: dict[str, Any], rank: int, local_rank: int, world: int, t_start: float
) -> dict[str, Any]:
    import torch
    import torch._dynamo  # optimizers import it lazily: +70 MiB that is no technique's

    from harness.case import CaseSpec
    from harness.runner.caseproc import classify

    case = CaseSpec.model_validate(settings["case"])
    torch.set_num_threads(case.threads)
    meter = PhaseMeter(torch, case.device == "cuda", t_start)
    out: dict[str, Any] = {"rank": rank, "threads": torch.get_num_threads(), "loss": []}
    try:
        _train(torch, case, meter, out, rank, local_rank, world)
        out["status"] = "ok"
    except Exception as e:  # a failure is a result: the launcher reports it
        out["failed_at"] = time.time()  # wall clock, comparable across the ranks of this host
        out.update(classify(e, torch))
    out.update(meter.figures())
    return out


def _train(
    torch: Any, case: CaseSpec, meter: PhaseMeter, out: dict[str, Any], rank: int, local_rank: int, world: int
) -> None:
    from harness.runner.caseproc import model_figures, run_steps
    from harness.runner.session import context_for, open_session, techniques_for

    for t in techniques_for(case):
        t.preload()
    dist = _init_distributed(torch, case, local_rank)
    on_cuda = case.device == "cuda"
    out["device"] = f"cuda:{local_rank}" if on_cuda else "cpu"
    _mark(dist, meter, rank, "imported")
    session = open_session(case, context_for(case, rank=rank, world_size=world))
    take_rank_slice(session, rank, world)
    out["model"] = model_figures(session.model)  # DTensor numel is global: the whole model's figures
    out["samples_per_step"], out["tokens_per_step"] = session.samples_per_step, session.tokens_per_step
    _mark(dist, meter, rank, "built")
    run_steps(torch, session, range(case.warmup_steps), out, on_cuda, timed=False)
    _mark(dist, meter, rank, "warmed")
    n = case.warmup_steps + case.measured_steps
    run_steps(torch, session, range(case.warmup_steps, n), out, on_cuda)
    out.update(_local_figures(session))  # after the steps: the optimizer state exists
    _mark(dist, meter, rank, "measured")
    out["metrics"] = {}
    for t in techniques_for(case):
        out["metrics"].update(t.metrics(session.model))
    out["metrics"].update(session.extra_metrics())
    out["loss"] = _mean_over_ranks(torch, dist, out["loss"], out["device"])


def _mean_over_ranks(torch: Any, dist: Any, losses: list[float], device: str) -> list[float]:
    """Each rank's loss is its slice's mean; the global batch's mean loss is their mean (equal slices)."""
    t = torch.tensor(losses, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in (t / dist.get_world_size()).tolist()]


def main(argv: list[str]) -> int:
    t_start = time.monotonic()  # the rank's startup phase begins here, before torch is imported
    _die_with_torchrun()
    settings = json.loads(Path(argv[0]).read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    result = run_rank(settings, rank, int(os.environ["LOCAL_RANK"]), world, t_start)
    path = Path(settings["out_dir"]) / f"rank-{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    sys.stdout.flush()
    sys.stderr.flush()
    if result["status"] != "ok":
        os._exit(1)  # non-zero: torchrun stops the other ranks, which may wait in a collective
    import torch.distributed as dist

    dist.destroy_process_group()
    os._exit(0)  # skips interpreter teardown: nothing is left to measure


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
