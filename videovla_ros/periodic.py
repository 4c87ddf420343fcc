"""A fixed-rate loop on a thread of its own: the arm bridge's command stream.

Why not an rclpy timer: every timer tick goes through the executor (the timer manager wakes the executor, which
returns from spin_once to the Python loop of node_runner and dispatches the callback): at 100 Hz an empty timer
cost a bare node 2.0 % of a core on an EventsExecutor, an empty tick of this loop 0.5 % (loaded 2-core machine).
A thread that sleeps until each deadline wakes once per tick and does only the tick.

The schedule is a fixed grid (`next_deadline`): a tick that runs late does not shift the ticks after it, and
ticks missed during a stall are skipped instead of run in a burst (the caller limits how far one late tick may
move the arm). The loop follows the monotonic clock, so a change of the wall clock neither stalls nor races it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

NANOSECONDS_PER_SECOND = 1_000_000_000


def next_deadline(deadline_ns: int, now_ns: int, period_ns: int) -> int:
    """The first tick of the grid `deadline_ns + k * period_ns` (k >= 1) that is still in the future at `now_ns`."""
    if period_ns <= 0:
        raise ValueError(f"period_ns must be > 0, got {period_ns}")
    if now_ns < deadline_ns + period_ns:
        return deadline_ns + period_ns
    missed = (now_ns - deadline_ns) // period_ns
    return deadline_ns + (missed + 1) * period_ns


class PeriodicThread:
    """Calls `tick()` every `period_s` seconds on a daemon thread while resumed.

    Starts paused. `resume()` starts a new grid whose first tick is one period later (as an rclpy timer's
    reset); `pause()` stops ticking (a tick already running finishes: the callback must check its own state);
    `close()` ends the thread (within one period). A tick that raises is passed to `on_error` and the loop
    pauses, so a bug in the tick cannot leave the thread dead while its owner believes it streams; `on_error`
    itself must not raise.
    """

    def __init__(
        self, name: str, period_s: float, tick: Callable[[], None], on_error: Callable[[BaseException], None]
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self._period_ns = round(period_s * NANOSECONDS_PER_SECOND)
        self._tick = tick
        self._on_error = on_error
        self._wake = threading.Condition()
        self._generation = 0  # bumped by resume(): a new grid starts
        self._active = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        with self._wake:
            return self._active

    def resume(self) -> None:
        with self._wake:
            self._active = True
            self._generation += 1
            self._wake.notify()

    def pause(self) -> None:
        with self._wake:
            self._active = False
            self._wake.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Ends the thread; waits up to `timeout_s` for it (a running tick, a sleep of up to one period)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        generation, deadline_ns = -1, 0
        while True:
            with self._wake:
                while not (self._active or self._closed):
                    self._wake.wait()
                if self._closed:
                    return
                if generation != self._generation:
                    generation, deadline_ns = self._generation, time.monotonic_ns() + self._period_ns
            # A plain sleep: a condition wait with a timeout cost twice the CPU per tick. pause() and close()
            # take effect within one period.
            delay_ns = deadline_ns - time.monotonic_ns()
            if delay_ns > 0:
                time.sleep(delay_ns / NANOSECONDS_PER_SECOND)
            with self._wake:
                if self._closed or not self._active or generation != self._generation:
                    continue  # paused, closed or resumed on a new grid while asleep
            try:
                self._tick()
            except Exception as error:  # handed to the owner, who stops the arm
                self.pause()
                self._on_error(error)
            deadline_ns = next_deadline(deadline_ns, time.monotonic_ns(), self._period_ns)
