"""Where a suite's cases run: on this machine (`local`, the default), on a Ray cluster, or as Slurm jobs.

Every executor has one unit of work: "run these cases of one group (a baseline and its techniques) on
one node, one case at a time, and return their finished records with their files". The measurement
itself (the case process, the parent-side VmHWM per phase, RSS sampling, NVML) always runs on the node
that runs the case, next to the case process, exactly as locally: see harness/executors/node.py. The
driver only schedules, collects, checks exactness and appends.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.executors.base import CaseResult, Executor, ExecutorOptions, Group, parse_options
from harness.executors.local import LocalExecutor

NAMES = ("local", "ray", "slurm")

__all__ = ["NAMES", "CaseResult", "Executor", "ExecutorOptions", "Group", "make_executor", "parse_options"]


def make_executor(name: str, options: ExecutorOptions | None = None) -> Executor:
    """The executor named on the command line; ray and slurm import their package only here."""
    options = options or ExecutorOptions()
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from harness.executors.ray_exec import RayExecutor

        return RayExecutor(options)
    if name == "slurm":
        from harness.executors.slurm import SlurmExecutor

        return SlurmExecutor(options)
    raise HarnessError(f"--executor {name!r}: unknown executor; choose one of {', '.join(NAMES)}")
