"""Running a simulation against an outside clock: time mapping, lag handling and periodic events (pure).

The ROS node steps the physics from a wall-clock timer. `SimClock` says how far the simulation should have
got at a given outside time (at a real-time factor) and maps each simulated instant back to outside time,
so a camera frame captured at simulated time s is stamped with the outside time it corresponds to.
`PeriodicEvent` fires at fixed simulated-time periods (camera frames, state messages).
"""

from __future__ import annotations

import math

NANOSECONDS_PER_SECOND = 1_000_000_000


class SimClock:
    """Maps simulated seconds (0 at the episode start) to outside time in nanoseconds and back.

    outside_ns = start_ns + sim_seconds / real_time_factor. When the simulation falls more than `max_lag`
    simulated seconds behind (a slow machine, a long reset), the mapping is shifted instead of racing to
    catch up, and the dropped time is reported so the caller can count it.
    """

    def __init__(self, start_ns: int, real_time_factor: float = 1.0, max_lag: float = 0.25) -> None:
        if not (math.isfinite(real_time_factor) and real_time_factor > 0):
            raise ValueError(f"real_time_factor must be a positive number, got {real_time_factor}")
        if not max_lag > 0:
            raise ValueError(f"max_lag must be > 0 s, got {max_lag}")
        self.real_time_factor = real_time_factor
        self.max_lag = max_lag
        self._start_ns = start_ns

    def restart(self, start_ns: int) -> None:
        """Simulated time 0 is now `start_ns` (call when the episode restarts)."""
        self._start_ns = start_ns

    def to_outside_ns(self, sim_seconds: float) -> int:
        return self._start_ns + round(sim_seconds / self.real_time_factor * NANOSECONDS_PER_SECOND)

    def due(self, now_ns: int, sim_seconds: float) -> tuple[float, float]:
        """The simulated time to step to at `now_ns`, and the simulated seconds dropped to bound the lag."""
        wanted = (now_ns - self._start_ns) / NANOSECONDS_PER_SECOND * self.real_time_factor
        lag = wanted - sim_seconds
        if lag <= self.max_lag:
            return max(wanted, sim_seconds), 0.0
        dropped = lag - self.max_lag
        self._start_ns += round(dropped / self.real_time_factor * NANOSECONDS_PER_SECOND)
        return sim_seconds + self.max_lag, dropped


class PeriodicEvent:
    """Fires every `period` simulated seconds, first at simulated time 0."""

    def __init__(self, period: float) -> None:
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"period must be a positive number of seconds, got {period}")
        self.period = period
        self._count = 0

    @property
    def next_time(self) -> float:
        return self._count * self.period

    def restart(self) -> None:
        self._count = 0

    def fire(self, sim_seconds: float, tolerance: float = 1e-9) -> bool:
        """True (once) when `sim_seconds` has reached the next firing time; skipped firings are not repeated."""
        if sim_seconds + tolerance < self.next_time:
            return False
        self._count = math.floor((sim_seconds + tolerance) / self.period) + 1
        return True
