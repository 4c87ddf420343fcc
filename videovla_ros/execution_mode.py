"""The execution mode: the one setting the policy node and the arm bridge must agree on (defined once here).

- "sync" (the paper's deployment): the bridge requests a chunk on `chunk_request`, executes its first
  `execute_rows` rows, holds, and requests the next; the policy infers once per request.
- "async": the policy infers back-to-back on the newest frame and the bridge executes chunks as they come.
- "rtc" (real-time chunking): async execution, but the bridge asks for each chunk on `rtc_chunk_request` with the
  motion it has committed to, and the policy answers each request with a chunk that continues that motion
  (videovla_ros.realtime_chunking, videovla_model.rtc).

Both nodes declare the parameter `execution_mode` with DEFAULT_EXECUTION_MODE, so a params file that sets neither
(or a node started without one) still gives a matching pair.
"""

from __future__ import annotations

EXECUTION_MODES: tuple[str, ...] = ("sync", "async", "rtc")
# Modes in which the policy infers once per bridge request (rather than back-to-back).
REQUEST_DRIVEN_MODES: tuple[str, ...] = ("sync", "rtc")
DEFAULT_EXECUTION_MODE = "sync"
EXECUTION_MODE_DESCRIPTION = (
    "sync: the bridge requests a chunk, executes its execute_rows and requests the next; "
    "async: the policy infers back-to-back and the bridge executes chunks as they come; "
    "rtc: async execution, the bridge requests each chunk with its committed motion (same value on both nodes)"
)


def check_execution_mode(value: object) -> str:
    """Returns `value` when it is an execution mode; raises ValueError naming the parameter otherwise."""
    if value not in EXECUTION_MODES:
        raise ValueError(f"parameter execution_mode must be one of {list(EXECUTION_MODES)}, got {value!r}")
    return str(value)
