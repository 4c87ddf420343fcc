"""The bridge's fixed-rate stream loop: its schedule (pure) and its thread's pause / resume / error / close."""

from __future__ import annotations

import threading

import pytest
import ros_process

from videovla_ros.periodic import PeriodicThread, next_deadline

MS = 1_000_000


@pytest.mark.parametrize(
    ("deadline", "now", "expected"),
    [
        (100 * MS, 101 * MS, 110 * MS),  # on time: the next tick of the grid
        (100 * MS, 109 * MS, 110 * MS),  # late within the period: the grid does not shift
        (100 * MS, 110 * MS, 120 * MS),  # exactly at the next tick: that one is already due, the one after next
        (100 * MS, 135 * MS, 140 * MS),  # a stall: the missed ticks 110..130 are skipped, not run in a burst
        (100 * MS, 50 * MS, 110 * MS),  # the tick ran early (clock granularity): still the next one
    ],
)
def test_next_deadline_keeps_the_grid_and_skips_missed_ticks(deadline: int, now: int, expected: int) -> None:
    assert next_deadline(deadline, now, 10 * MS) == expected


def test_next_deadline_refuses_a_non_positive_period() -> None:
    with pytest.raises(ValueError, match="period_ns must be > 0, got 0"):
        next_deadline(0, 0, 0)


def test_periodic_thread_refuses_a_non_positive_period() -> None:
    with pytest.raises(ValueError, match="period_s must be > 0, got -1"):
        PeriodicThread("bad", -1.0, lambda: None, lambda error: None)


class Ticks:
    def __init__(self, fail_at: int | None = None) -> None:
        self.count = 0
        self.errors: list[BaseException] = []
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.count += 1
            if self.count == self.fail_at:
                raise RuntimeError("tick failed")

    def on_error(self, error: BaseException) -> None:
        with self.lock:
            self.errors.append(error)

    def value(self) -> int:
        with self.lock:
            return self.count


def test_ticks_only_while_resumed_and_ends_on_close() -> None:
    ticks = Ticks()
    loop = PeriodicThread("test_stream", 0.005, ticks.tick, ticks.on_error)
    try:
        assert not loop.active
        assert not ros_process.wait_for(lambda: ticks.value() > 0, 0.1, period=0.01), "ticked while paused"
        loop.resume()
        assert loop.active
        assert ros_process.wait_for(lambda: ticks.value() >= 5, 5.0, period=0.01), "no ticks after resume"
        loop.pause()
        paused_at = ticks.value()
        assert not ros_process.wait_for(lambda: ticks.value() > paused_at + 1, 0.1, period=0.01), "ticked after pause"
        loop.resume()
        assert ros_process.wait_for(lambda: ticks.value() >= paused_at + 5, 5.0, period=0.01), "no ticks again"
    finally:
        loop.close()
    assert not loop._thread.is_alive()
    assert ticks.errors == []


def test_a_failing_tick_is_reported_and_pauses_the_loop() -> None:
    ticks = Ticks(fail_at=3)
    loop = PeriodicThread("test_stream", 0.005, ticks.tick, ticks.on_error)
    try:
        loop.resume()
        assert ros_process.wait_for(lambda: bool(ticks.errors), 5.0, period=0.01), "the error was not reported"
        assert not loop.active
        assert [str(error) for error in ticks.errors] == ["tick failed"]
        assert not ros_process.wait_for(lambda: ticks.value() > 3, 0.1, period=0.01), "ticked after the error"
        loop.resume()  # the owner decides when to stream again
        assert ros_process.wait_for(lambda: ticks.value() > 3, 5.0, period=0.01), "did not resume after an error"
    finally:
        loop.close()
