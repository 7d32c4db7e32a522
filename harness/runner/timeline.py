"""Per-case memory timelines: the parent's samples, thinned without losing peaks, with phase bands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from harness.timeseries import extreme_indices

if TYPE_CHECKING:
    from harness.runner.parent import PassResult

MAX_POINTS = 4000


def decimate(
    t: list[float], ys: list[list[int]], max_points: int = MAX_POINTS
) -> tuple[list[float], list[list[int]]]:
    """At most `max_points` samples, chosen on the first series (host RSS) so its peaks survive."""
    keep = extreme_indices(ys[0], max_points)
    return [t[i] for i in keep], [[y[i] for i in keep] for y in ys]


def write_timeline(path: Path, mem: PassResult, run_dir: Path) -> str:
    s = mem.samples
    series = [s.host_rss_bytes] + ([s.gpu_process_bytes, s.gpu_device_bytes] if s.gpu_process_bytes else [])
    t, ys = decimate([round(x, 4) for x in s.t_s], series)
    data = {
        "t_s": t,
        "host_rss_bytes": ys[0],
        "gpu_process_bytes": ys[1] if len(ys) > 1 else None,
        "gpu_device_bytes": ys[2] if len(ys) > 2 else None,
        "phases": [
            {"name": p.name, "t_start_s": round(p.t_start_s, 4), "t_end_s": round(p.t_end_s, 4)}
            for p in mem.phases
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path.relative_to(run_dir))
