"""Counters and gauges a node reports on /diagnostics (pure bookkeeping plus one message builder).

Every rejection, clamp and drop in the suite increments a named counter here and is logged, so an operator
can see in `rqt_runtime_monitor` (or `ros2 topic echo /diagnostics`) what the system refused and why.
"""

from __future__ import annotations

import threading
from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute by convention: aggregators listen there


class DiagnosticsBook:
    """Thread-safe named counters (monotonic) and gauges (last value) for one node."""

    def __init__(self, name: str, hardware_id: str = "") -> None:
        self.name = name
        self.hardware_id = hardware_id
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._gauges: dict[str, float | str] = {}
        self._level = DiagnosticStatus.OK
        self._message = "ok"

    def count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[key] += amount

    def set(self, key: str, value: float | str) -> None:
        with self._lock:
            self._gauges[key] = value

    def set_status(self, level: bytes, message: str) -> None:
        """level: one of DiagnosticStatus.OK / WARN / ERROR / STALE."""
        with self._lock:
            self._level = level
            self._message = message

    def counter(self, key: str) -> int:
        with self._lock:
            return self._counters[key]

    def gauge(self, key: str) -> float | str | None:
        with self._lock:
            return self._gauges.get(key)

    def to_status(self) -> DiagnosticStatus:
        with self._lock:
            values = [KeyValue(key=k, value=str(v)) for k, v in sorted(self._counters.items())]
            values += [KeyValue(key=k, value=_format(v)) for k, v in sorted(self._gauges.items())]
            return DiagnosticStatus(
                level=self._level, name=self.name, message=self._message, hardware_id=self.hardware_id, values=values
            )

    def to_msg(self, stamp: object) -> DiagnosticArray:
        """A DiagnosticArray with this book's status; `stamp` is a builtin_interfaces/Time."""
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [self.to_status()]
        return array


def _format(value: float | str) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
