"""The sampler reports the interval it achieved, not only the one it was asked for, and the kernel
taking the case's file-backed pages (memory pressure), which moves RSS with nothing freed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.runner import procmem
from harness.runner.case_runner import file_reclaim_fields
from harness.runner.sampler import Sampler, Samples, achieved_interval


def test_median_and_largest_gap_of_the_samples() -> None:
    s = Samples(t_s=[0.0, 0.002, 0.004, 0.017, 0.019])  # one late wake-up of 13 ms
    out = achieved_interval(s, 0.002)
    assert out == {
        "sample_interval_requested_s": 0.002,
        "sample_count": 5,
        "sample_interval_median_s": pytest.approx(0.002),
        "sample_interval_max_gap_s": pytest.approx(0.013),
    }


def test_a_single_sample_has_no_interval() -> None:
    out = achieved_interval(Samples(t_s=[0.5]), 0.002)
    assert out["sample_interval_median_s"] is None and out["sample_interval_max_gap_s"] is None


def test_real_sampler_gaps_are_never_shorter_than_asked() -> None:
    """Event.wait sleeps at least the interval: the achieved median can only be longer."""
    sampler = Sampler(os.getpid(), 0.01, 0.0, None, None)
    sampler.start()
    while len(sampler.samples.t_s) < 6:
        sampler._halt.wait(0.01)
    sampler.stop()
    out = achieved_interval(sampler.samples, 0.01)
    median, max_gap = out["sample_interval_median_s"], out["sample_interval_max_gap_s"]
    assert isinstance(median, float) and isinstance(max_gap, float)
    assert out["sample_count"] == len(sampler.samples.t_s) >= 6
    assert max_gap >= median >= 0.01


_PAGED_OUT = """
import mmap, sys, tempfile
with tempfile.TemporaryFile() as f:
    f.write(b"x" * (16 << 20)); f.flush()
    m = mmap.mmap(f.fileno(), 16 << 20, prot=mmap.PROT_READ)
    sum(m[i] for i in range(0, 16 << 20, 4096))  # fault every page in: file-backed RSS +16 MiB
    print("in", flush=True); sys.stdin.readline()
    try:
        m.madvise(getattr(mmap, "MADV_PAGEOUT", 21))  # what the kernel does to them under memory pressure
    except OSError:  # a kernel before 5.4: the pages stay, and the test says so
        pass
    print("out", flush=True); sys.stdin.readline()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's madvise(MADV_PAGEOUT)")
def test_the_sampler_sees_the_kernel_take_a_case_s_file_pages() -> None:
    """Reclaimed file-backed pages make RSS fall with nothing freed: the sampler reports the fall, and the
    record calls the host figures disturbed above 1 MiB (naming the phase)."""
    proc = subprocess.Popen([sys.executable, "-c", _PAGED_OUT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"in\n"
        sampler = Sampler(proc.pid, 0.002, 0.0, None, None)
        sampler.base_bytes = procmem.rss_bytes(proc.pid)
        sampler.sample_now()
        file_before = procmem.rss_and_file_bytes(proc.pid)
        assert sampler.take_phase_max()[2] == 0  # nothing fell while the pages stayed
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"out\n"
        file_after = procmem.rss_and_file_bytes(proc.pid)
        drop = sampler.take_phase_max()[2]
        assert file_before is not None and file_after is not None
        if file_before[1] - file_after[1] < 8 << 20:
            pytest.skip("this kernel kept the pages (MADV_PAGEOUT is advice, and needs Linux 5.4+)")
        assert drop is not None and drop >= file_before[1] - file_after[1] - (1 << 20)
        phases = {"build": {"host_file_rss_drop_bytes": 0}, "warmup": {"host_file_rss_drop_bytes": drop}}
        fields = file_reclaim_fields(phases)
        assert fields["host_memory_disturbed"] is True and fields["host_file_rss_drop_bytes"] == drop
        assert f"reclaimed {drop / 2**20:.1f} MiB" in fields["host_memory_disturbed_reason"]
        assert " in warmup " in fields["host_memory_disturbed_reason"]
    finally:
        proc.stdin.write(b"\n")
        proc.stdin.close()
        proc.wait(10)


def test_a_fall_up_to_one_mib_is_noise_and_no_proc_is_unknown() -> None:
    one = {"measured": {"host_file_rss_drop_bytes": 1 << 20}}
    assert file_reclaim_fields(one) == {
        "host_file_rss_drop_bytes": 1 << 20,
        "host_memory_disturbed": False,
        "host_memory_disturbed_reason": None,
    }
    assert file_reclaim_fields({"build": {"host_file_rss_drop_bytes": None}})["host_memory_disturbed"] is None
