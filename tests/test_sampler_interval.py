"""The sampler reports the interval it achieved, not only the one it was asked for."""

from __future__ import annotations

import os

import pytest

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
