"""ActionChunk <-> a validated, typed chunk: the one place that knows the message's layout.

The arm bridge and the policy node both go through here, so a malformed chunk is rejected with the same
specific message wherever it shows up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time

from videovla_msgs.msg import ActionChunk
from videovla_ros.trajectory import NANOSECONDS_PER_SECOND


class ChunkRejectedError(ValueError):
    """A chunk that must not be executed; the message says which field is wrong and what was expected."""


@dataclass(frozen=True)
class TimedChunk:
    """An action chunk with the time it refers to.

    actions: (rows, dims) float64, robot units, columns named by `dim_names`.
    capture_time_ns: capture time of the source image (ROS time, ns); row i is due at
        capture_time_ns + (i + 1) * time_step (see videovla_ros.trajectory).
    """

    capture_time_ns: int
    frame_id: str
    instruction: str
    sequence: int
    actions: np.ndarray
    dim_names: tuple[str, ...]
    time_step: float
    execute_rows: int
    embodiment_id: int = 0
    inference_time: float = 0.0
    capture_to_publish_time: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.actions.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The values of one named dimension over all rows."""
        return self.actions[:, self.dim_names.index(name)]


def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * NANOSECONDS_PER_SECOND + int(stamp.nanosec)


def ns_to_time(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // NANOSECONDS_PER_SECOND, nanosec=nanoseconds % NANOSECONDS_PER_SECOND)


def to_msg(chunk: TimedChunk) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp = ns_to_time(chunk.capture_time_ns)
    msg.header.frame_id = chunk.frame_id
    msg.instruction = chunk.instruction
    msg.sequence = chunk.sequence
    msg.rows, msg.dims = (int(n) for n in chunk.actions.shape)
    msg.dim_names = list(chunk.dim_names)
    msg.actions = np.ascontiguousarray(chunk.actions, dtype=np.float32).ravel().tolist()
    msg.time_step = float(chunk.time_step)
    msg.execute_rows = chunk.execute_rows
    msg.embodiment_id = chunk.embodiment_id
    msg.inference_time = float(chunk.inference_time)
    msg.capture_to_publish_time = float(chunk.capture_to_publish_time)
    return msg


def from_msg(msg: ActionChunk, required_dims: Sequence[str] = ()) -> TimedChunk:
    """Validates an ActionChunk and returns it typed; raises ChunkRejectedError naming what is wrong.

    required_dims: dimension names the consumer needs (e.g. the bridge's "dx", ..., "gripper").
    """
    if msg.rows == 0 or msg.dims == 0:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: rows and dims must be > 0, got rows={msg.rows} dims={msg.dims}"
        )
    if len(msg.dim_names) != msg.dims:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: dim_names has {len(msg.dim_names)} names, expected dims={msg.dims}"
        )
    if len(set(msg.dim_names)) != len(msg.dim_names):
        raise ChunkRejectedError(f"chunk {msg.sequence}: dim_names has duplicates: {list(msg.dim_names)}")
    missing = [name for name in required_dims if name not in msg.dim_names]
    if missing:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: dim_names {list(msg.dim_names)} lacks required dimensions {missing}"
        )
    expected_length = msg.rows * msg.dims
    if len(msg.actions) != expected_length:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: actions has {len(msg.actions)} values, expected rows*dims = "
            f"{msg.rows}*{msg.dims} = {expected_length}"
        )
    actions = np.asarray(msg.actions, dtype=np.float64).reshape(msg.rows, msg.dims)
    if not np.all(np.isfinite(actions)):
        bad_rows = sorted({int(r) for r in np.argwhere(~np.isfinite(actions))[:, 0]})
        raise ChunkRejectedError(f"chunk {msg.sequence}: actions contain NaN or infinite values in rows {bad_rows}")
    if not (math.isfinite(msg.time_step) and msg.time_step > 0):
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: time_step must be a positive number of seconds, got {msg.time_step}"
        )
    if not 1 <= msg.execute_rows <= msg.rows:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: execute_rows must be in [1, rows={msg.rows}], got {msg.execute_rows}"
        )
    capture_time_ns = time_to_ns(msg.header.stamp)
    if capture_time_ns == 0:
        raise ChunkRejectedError(
            f"chunk {msg.sequence}: header.stamp is zero; it must be the source image's capture time"
        )
    return TimedChunk(
        capture_time_ns=capture_time_ns,
        frame_id=msg.header.frame_id,
        instruction=msg.instruction,
        sequence=int(msg.sequence),
        actions=actions,
        dim_names=tuple(msg.dim_names),
        time_step=float(msg.time_step),
        execute_rows=int(msg.execute_rows),
        embodiment_id=int(msg.embodiment_id),
        inference_time=float(msg.inference_time),
        capture_to_publish_time=float(msg.capture_to_publish_time),
    )
