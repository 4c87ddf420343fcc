"""The policy node's statistics and log throttling."""

from __future__ import annotations

import math

import pytest

from videovla_ros.metrics import RateMeter, RepeatFilter, RunningStats

S = 1_000_000_000  # ns per second


def test_statistics():
    stats = RunningStats()
    assert math.isnan(stats.mean)
    for value in (1.0, 2.0, 6.0):
        stats.add(value)
    assert (stats.last, stats.mean, stats.count) == (6.0, 3.0, 3)
    meter = RateMeter(window=2.0)
    for i in range(9):
        meter.tick(i * S // 4)  # 4 Hz for 2 s
    assert meter.rate(2 * S) == pytest.approx(4.0, abs=0.5)
    assert meter.rate(10 * S) == 0.0  # stopped streams report no rate
    with pytest.raises(ValueError, match="window must be a positive number of seconds, got 0"):
        RateMeter(window=0)


def test_repeat_filter_logs_new_kinds_at_once_and_repeats_once_per_period():
    gate = RepeatFilter(period=2.0)
    assert gate.check("image data is truncated: need 9216 bytes, got 100", 0) == 0
    assert gate.check("image data is truncated: need 9216 bytes, got 200", 1 * S) is None  # same kind
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(1.1 * S)) == 1  # new kind
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(1.2 * S)) is None
    assert gate.check("image encoding must be one of [...], got 'yuv422'", round(3.2 * S)) == 1  # period over


def test_repeat_filter_gives_the_line_to_log_with_the_count_of_suppressed_ones():
    gate = RepeatFilter(period=2.0)
    assert gate.filter("stale frame 1", 0) == "stale frame 1"
    assert gate.filter("stale frame 2", S) is None
    assert gate.filter("stale frame 3", 3 * S) == "stale frame 3 (1 similar messages suppressed)"
