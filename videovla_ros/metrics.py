"""Running statistics, rates and log throttling of the policy node (pure, thread-safe)."""

from __future__ import annotations

import math
import re
import threading
from collections import deque

from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND


class RunningStats:
    """Last value and mean of a series (e.g. inference time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = math.nan
        self._total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self.last = value
            self._total += value
            self.count += 1

    @property
    def mean(self) -> float:
        with self._lock:
            return self._total / self.count if self.count else math.nan


class RateMeter:
    """Event rate [Hz] over a sliding time window; it falls to 0 when events stop."""

    def __init__(self, window: float = 5.0) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window}")
        self._window_ns = round(window * NANOSECONDS_PER_SECOND)
        self._lock = threading.Lock()
        self._times: deque[int] = deque()

    def tick(self, now_monotonic_ns: int) -> None:
        with self._lock:
            self._times.append(now_monotonic_ns)
            self._forget(now_monotonic_ns)

    def rate(self, now_monotonic_ns: int) -> float:
        """Events per second within the last window."""
        with self._lock:
            self._forget(now_monotonic_ns)
            return len(self._times) * NANOSECONDS_PER_SECOND / self._window_ns

    def _forget(self, now_monotonic_ns: int) -> None:
        while self._times and now_monotonic_ns - self._times[0] > self._window_ns:
            self._times.popleft()


class RepeatFilter:
    """Decides which rejections to log: a new kind at once, the same kind again at most once per `period`.

    A camera that sends the same bad frame 30 times a second must not flood the log, but a different problem
    should show up immediately. The kind of a message is its text with the numbers taken out.
    """

    def __init__(self, period: float) -> None:
        self._period_ns = round(period * NANOSECONDS_PER_SECOND)
        self._lock = threading.Lock()
        self._last_kind: str | None = None
        self._last_time_ns = 0
        self._suppressed = 0

    def check(self, message: str, now_monotonic_ns: int) -> int | None:
        """None: do not log `message`; otherwise log it, with this many similar ones suppressed before it."""
        kind = re.sub(r"\d+", "#", message)
        with self._lock:
            if kind == self._last_kind and now_monotonic_ns - self._last_time_ns < self._period_ns:
                self._suppressed += 1
                return None
            suppressed, self._suppressed = self._suppressed, 0
            self._last_kind, self._last_time_ns = kind, now_monotonic_ns
            return suppressed

    def filter(self, message: str, now_monotonic_ns: int) -> str | None:
        """`message` as it is to be logged now (naming how many similar ones were suppressed), or None."""
        suppressed = self.check(message, now_monotonic_ns)
        if suppressed is None:
            return None
        return f"{message} ({suppressed} similar messages suppressed)" if suppressed else message
