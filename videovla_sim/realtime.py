"""Running a simulation against a clock: time mapping, lag handling, pausing and periodic events (pure).

The ROS node steps the physics on a wall-clock tick, in one of two modes:
- wall-clock time: `SimClock` says how far the simulation should have got at a given outside (ROS) time, at a
  real-time factor, and maps each simulated instant back to outside time, so a camera frame captured at
  simulated time s is stamped with the outside time it corresponds to. A simulation that lags too far behind
  skips ahead.
- simulated time (the way Gazebo runs with `use_sim_time`): `SimulatedClock` makes the physics the clock. Each
  tick advances one fixed step, never more, so a loaded machine runs the simulation slower than real time
  instead of skipping; the node publishes the result on /clock and every other node follows it.
  `PolicyPause` decides when the physics waits for the policy (sync execution).
`PeriodicEvent` fires at fixed simulated-time periods (camera frames, state messages).
"""

from __future__ import annotations

import math
import threading

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


class SimulatedClock:
    """Simulated time as the ROS time: outside_ns = start_ns + sim_seconds (1 simulated s is 1 s of /clock).

    `due` always asks for one `step` more, whatever the wall clock says: the caller paces the ticks at real time
    when it can, and a late tick only makes the simulation slower, never skip.
    """

    def __init__(self, start_ns: int, step: float) -> None:
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a positive number of simulated seconds, got {step}")
        self.step = step
        self._start_ns = start_ns

    def restart(self, start_ns: int) -> None:
        """Simulated time 0 of the episode is ROS time `start_ns` (after the last /clock: time never goes back)."""
        self._start_ns = start_ns

    def to_outside_ns(self, sim_seconds: float) -> int:
        return self._start_ns + round(sim_seconds * NANOSECONDS_PER_SECOND)

    def due(self, now_ns: int, sim_seconds: float) -> tuple[float, float]:
        """One step past `sim_seconds` (`now_ns`, the wall, does not matter), and nothing dropped."""
        del now_ns
        return sim_seconds + self.step, 0.0


class PolicyPause:
    """Sync execution in simulated time: the world waits while the policy thinks and the bridge takes its answer in.

    In sync mode the arm bridge asks for every chunk with a request stamped R (ROS ns): the chunk must come from
    a camera frame captured at or after R. It sends the next request as soon as it has admitted (or refused) the
    answer. So the physics runs until it has published a frame at or after the newest request, then stands still,
    and /clock with it, until a newer request arrives: the policy's latency and the bridge's own delays cost no
    simulated time, and every chunk starts from the same simulated instant whatever the machine's load. After
    `timeout` wall seconds without a newer request (a dead policy, a disabled bridge) it runs on and counts a
    timeout. timeout 0: never pause. Only frames published after a request arrived count, so a late request
    never waits on a frame the policy may already have used. Thread-safe: requests come from ROS callbacks,
    frames and `paused` from the physics thread. Wall times are time.monotonic() seconds.
    """

    def __init__(self, timeout: float) -> None:
        if not (math.isfinite(timeout) and timeout >= 0):
            raise ValueError(f"timeout must be >= 0 wall seconds, got {timeout}")
        self.timeout = timeout
        self.timeouts = 0
        self._lock = threading.Lock()
        self._request_ns: int | None = None
        self._armed = False
        """A request is in whose frame has not been published yet."""
        self._waiting_since: float | None = None

    def on_request(self, stamp_ns: int) -> None:
        """A chunk request stamped `stamp_ns`: the world goes on to its frame (one not newer than the newest
        request changes nothing)."""
        with self._lock:
            if self.timeout == 0 or (self._request_ns is not None and stamp_ns <= self._request_ns):
                return
            self._request_ns, self._armed, self._waiting_since = stamp_ns, True, None

    def on_frame(self, stamp_ns: int, wall: float) -> None:
        """A camera frame stamped `stamp_ns` is being published."""
        with self._lock:
            if self._armed and self._request_ns is not None and stamp_ns >= self._request_ns:
                self._armed, self._waiting_since = False, wall

    def paused(self, wall: float) -> bool:
        """Whether the physics must stand still at wall time `wall`."""
        with self._lock:
            if self._waiting_since is None:
                return False
            if wall - self._waiting_since <= self.timeout:
                return True
            self.timeouts += 1
            self._waiting_since = None
            return False

    def clear(self) -> None:
        """A new episode: nothing is waited for (a request of the previous episode no longer counts)."""
        with self._lock:
            self._armed, self._waiting_since = False, None
