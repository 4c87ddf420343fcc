"""Real-time chunking between the arm bridge and the policy node: which rows will execute during inference (pure).

Bridge side (`committed_motion`): when it asks for the next chunk (async mode, `rtc: true`), the bridge samples
the motion it has committed to, from now until the executing chunk's last row (and the hold after it, until
the answer is expected), every time_step, and sends
those steps as per-step deltas with its running estimate of the inference delay (`DelayEstimate`, an EMA of
capture-to-admission times) in a videovla_msgs/ChunkRequest.

Policy side (`prefix_for_capture`): the policy answers from an image captured at t_c, a little after the request
(the policy node only takes frames captured at or after it), and its answer is anchored at the end-effector
pose at t_c, row i ending at t_c + offset + (i + 1) * time_step (videovla_ros.trajectory). So the prefix is the
committed motion re-expressed in exactly that frame: the motion is integrated from the request's origin,
sampled at t_c (T_{-1}) and at each answer row's due time (positions linear, orientations slerped between the
samples), and differenced with the suite's convention (videovla_model.action_convention). Rows due after
the committed motion ends are not part of the prefix; rows due before t_c + inference_delay will surely have
been executed from the old motion when the answer arrives (`inference_delay_rows`, kept exactly by the
sampler; the rest of the prefix is followed with decaying weight, videovla_model.rtc).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from videovla_model.action_convention import (
    integrate_deltas,
    matrix_to_quaternion,
    pose_deltas,
    quaternion_to_matrix,
    slerp_quaternions,
)
from videovla_msgs.msg import ChunkRequest
from videovla_ros.action_chunk import ns_to_time, time_to_ns
from videovla_ros.trajectory import DELTA_DIMS, GRIPPER_DIM, NANOSECONDS_PER_SECOND, Motion

PREFIX_DIMS: tuple[str, ...] = (*DELTA_DIMS, GRIPPER_DIM)
"""The column order of a request's rows."""


@dataclass(frozen=True)
class CommittedMotion:
    """A bridge's committed motion from `origin_ns` (ROS time): rows (K, 7) in PREFIX_DIMS order, row k the step
    from origin + k * time_step to origin + (k + 1) * time_step; inference_delay and execute_offset in s."""

    origin_ns: int
    frame_id: str
    rows: np.ndarray
    time_step: float
    inference_delay: float
    execute_offset: float

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or self.rows.shape[1] != len(PREFIX_DIMS):
            raise ValueError(f"committed motion rows must be (K, {len(PREFIX_DIMS)}), got {self.rows.shape}")
        if not np.all(np.isfinite(self.rows)):
            raise ValueError("committed motion rows must be finite")
        if len(self.rows) and not (math.isfinite(self.time_step) and self.time_step > 0):
            raise ValueError(f"committed motion time_step must be > 0 s, got {self.time_step}")
        for name in ("inference_delay", "execute_offset"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"committed motion {name} must be >= 0 s, got {value}")


class DelayEstimate:
    """Exponential moving average of measured capture-to-admission delays [s]; 0 before the first one."""

    def __init__(self, smoothing: float = 0.3) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"delay smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._value: float | None = None

    def update(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            return  # a clock step; one bad sample must not poison the estimate
        self._value = seconds if self._value is None else self._value + self.smoothing * (seconds - self._value)

    @property
    def seconds(self) -> float:
        return 0.0 if self._value is None else self._value


def committed_motion(
    motion: Motion | None, now_ns: int, time_step: float, inference_delay: float, execute_offset: float, frame_id: str
) -> CommittedMotion:
    """Samples `motion` every time_step from now until it ends or, if later, until the answer is expected
    (now + inference_delay): an arm that has run out of rows holds until then, and that hold is as certain as
    the rows (bridge side). No motion, no time step yet, or a motion without a gripper command: no rows."""
    rows = np.zeros((0, len(PREFIX_DIMS)))
    steps = 0
    if motion is not None and time_step > 0:
        committed_ns = max(motion.end_ns(), now_ns + round(inference_delay * NANOSECONDS_PER_SECOND))
        steps = max(0, math.ceil((committed_ns - now_ns) / (time_step * NANOSECONDS_PER_SECOND) - 1e-9))
    if steps:
        times = now_ns + np.round(np.arange(steps + 1) * time_step * NANOSECONDS_PER_SECOND).astype(np.int64)
        poses = [motion.sample(int(t)) for t in times]
        grippers = [motion.gripper(int(t)) for t in (times[:-1] + times[1:]) // 2]
        known = next((i for i, g in enumerate(grippers) if g is None), steps)  # rows need a gripper command
        if known:
            positions = np.array([p.position for p in poses[: known + 1]])
            rotations = np.array([p.rotation for p in poses[: known + 1]])
            rows = np.column_stack((pose_deltas(positions, rotations), np.asarray(grippers[:known], dtype=float)))
    return CommittedMotion(now_ns, frame_id, rows, time_step, inference_delay, execute_offset)


def to_msg(motion: CommittedMotion) -> ChunkRequest:
    msg = ChunkRequest()
    msg.header.stamp = ns_to_time(motion.origin_ns)
    msg.header.frame_id = motion.frame_id
    msg.rows, msg.dims = (int(n) for n in motion.rows.shape)
    msg.dim_names = list(PREFIX_DIMS)
    msg.actions = np.ascontiguousarray(motion.rows, dtype=np.float32).ravel().tolist()
    msg.time_step = float(motion.time_step)
    msg.inference_delay = float(motion.inference_delay)
    msg.execute_offset = float(motion.execute_offset)
    return msg


def from_msg(msg: ChunkRequest) -> CommittedMotion:
    """Validates a ChunkRequest; raises ValueError naming the field (rows are reordered to PREFIX_DIMS)."""
    names = list(msg.dim_names)
    if sorted(names) != sorted(PREFIX_DIMS):
        shown = [name[:32] for name in names[:10]]
        raise ValueError(f"ChunkRequest.dim_names must be a permutation of {list(PREFIX_DIMS)}, got {shown}")
    if msg.dims != len(names) or len(msg.actions) != msg.rows * msg.dims:
        raise ValueError(
            f"ChunkRequest.actions must hold rows x dims = {msg.rows} x {msg.dims} values with dims = "
            f"len(dim_names) = {len(names)}, got {len(msg.actions)} values"
        )
    rows = np.asarray(msg.actions, dtype=np.float64).reshape(msg.rows, msg.dims)
    rows = rows[:, [names.index(name) for name in PREFIX_DIMS]]
    try:
        return CommittedMotion(
            time_to_ns(msg.header.stamp),
            msg.header.frame_id,
            rows,
            msg.time_step,
            msg.inference_delay,
            msg.execute_offset,
        )
    except ValueError as error:
        raise ValueError(f"ChunkRequest: {error}") from error


@dataclass(frozen=True)
class Prefix:
    """The rows an answer must start with: actions (P, D) in the policy's dim order, robot units."""

    actions: np.ndarray
    inference_delay_rows: int


def prefix_for_capture(
    request: CommittedMotion, capture_ns: int, chunk_rows: int, time_step: float, dim_names: Sequence[str]
) -> Prefix | None:
    """The committed motion in the frame of an answer from an image captured at `capture_ns` (policy side).

    Returns None when nothing of the motion lies after the answer's first row, or when the image was captured
    before the request (the motion before its origin is not known). Raises ValueError when `dim_names` holds
    a dimension the suite's rows do not have.
    """
    unknown = [name for name in dim_names if name not in PREFIX_DIMS]
    if unknown:
        raise ValueError(f"real-time chunking knows the dimensions {list(PREFIX_DIMS)}, the policy has {unknown}")
    steps = len(request.rows)
    if steps == 0 or capture_ns < request.origin_ns:
        return None
    step_ns = request.time_step * NANOSECONDS_PER_SECOND
    end_ns = request.origin_ns + steps * step_ns
    offset_ns = request.execute_offset * NANOSECONDS_PER_SECOND
    due = capture_ns + offset_ns + (np.arange(chunk_rows) + 1.0) * time_step * NANOSECONDS_PER_SECOND
    due = due[due <= end_ns + 1.0]
    if len(due) == 0 or capture_ns > end_ns:
        return None
    positions, rotations = integrate_deltas(np.zeros(3), np.eye(3), request.rows[:, :6])
    grid_positions = np.vstack((np.zeros(3), positions))
    grid_quaternions = np.array([matrix_to_quaternion(r) for r in (np.eye(3), *rotations)])
    fractions = (np.concatenate(([capture_ns], due)) - request.origin_ns) / step_ns
    index = np.clip(np.floor(fractions).astype(int), 0, steps - 1)
    within = np.clip(fractions - index, 0.0, 1.0)
    sampled_positions = grid_positions[index] + within[:, None] * (grid_positions[index + 1] - grid_positions[index])
    quaternions = slerp_quaternions(grid_quaternions[index], grid_quaternions[index + 1], within)
    deltas = pose_deltas(sampled_positions, np.array([quaternion_to_matrix(q) for q in quaternions]))
    # A row's gripper is the command while moving towards its due time: that of the grid step it ends in.
    grippers = request.rows[np.clip(np.ceil(fractions[1:] - 1e-9).astype(int) - 1, 0, steps - 1), 6]
    rows = np.column_stack((deltas, grippers))
    actions = rows[:, [PREFIX_DIMS.index(name) for name in dim_names]]
    delay_rows = int(np.sum(due <= capture_ns + request.inference_delay * NANOSECONDS_PER_SECOND))
    return Prefix(actions=actions, inference_delay_rows=delay_rows)


class MotionSlot:
    """The newest request's committed motion, taken once by the inference it triggered (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._motion: CommittedMotion | None = None

    def put(self, motion: CommittedMotion) -> None:
        with self._lock:
            self._motion = motion

    def take(self) -> CommittedMotion | None:
        with self._lock:
            motion, self._motion = self._motion, None
            return motion
