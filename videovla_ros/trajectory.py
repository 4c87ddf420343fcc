"""From action-chunk deltas to a smooth, timed end-effector motion (pure; no ROS).

Action semantics (the suite's convention): one chunk row is [dx, dy, dz, droll, dpitch, dyaw, gripper], a
PER-STEP delta in the base frame. Row i moves the commanded target from T_{i-1} to T_i with

    p_i = p_{i-1} + (dx, dy, dz)
    R_i = R_delta(droll, dpitch, dyaw) @ R_{i-1}     (extrinsic XYZ Euler, transforms3d 'sxyz')

and T_{-1} is the end-effector pose at the chunk's header.stamp (the image's capture time). Row i is the
target reached one step after the state it was predicted from, so it is due at

    header.stamp + offset + (i + 1) * time_step

where `offset` is the bridge's `latency_compensation` (0 for strictly time-aligned execution).

The bridge turns the deltas into absolute targets once, drops rows whose due time has passed, moves
linearly in position and by slerp in orientation between targets, holds the last target when it runs out of
actions, and switches to a new chunk by blending the old motion into the new one with a quintic weight, so
that position and velocity are continuous at the switch.

Poses are `Pose` objects: position (3,) [m] in the base frame and a unit quaternion (4,) ordered w, x, y, z
(the transforms3d order; geometry_msgs orders x, y, z, w, converted in videovla_ros.backends.base).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from transforms3d.quaternions import mat2quat, quat2mat

from videovla_model.action_convention import integrate_deltas

NANOSECONDS_PER_SECOND = 1_000_000_000
DELTA_DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw")
GRIPPER_DIM = "gripper"


@dataclass(frozen=True, eq=False)
class Pose:
    """An end-effector pose: position (3,) float64 [m], quaternion (4,) float64 unit, w-x-y-z order."""

    position: np.ndarray
    quaternion: np.ndarray

    @classmethod
    def make(cls, position: Sequence[float], quaternion: Sequence[float] = (1.0, 0.0, 0.0, 0.0)) -> Pose:
        """Builds a pose, normalising the quaternion to unit length and w >= 0 (one sign per rotation)."""
        p = np.asarray(position, dtype=np.float64).reshape(3)
        q = np.asarray(quaternion, dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not (math.isfinite(norm) and norm > 1e-9) or not np.all(np.isfinite(p)):
            raise ValueError(f"pose must be finite with a non-zero quaternion, got position={p} quaternion={q}")
        q = q / norm
        return cls(position=p, quaternion=-q if q[0] < 0 else q)

    @classmethod
    def from_floats(cls, x: float, y: float, z: float, qw: float, qx: float, qy: float, qz: float) -> Pose:
        """`make` for seven plain numbers (a pose message's fields), with the same checks and normalisation but
        without array arithmetic: robot state arrives at 100-200 Hz, and numpy's per-call overhead was most of
        the arm bridge's CPU for each state message (`benchmarks/bridge_idle_cpu.py`)."""
        norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        if not (math.isfinite(norm) and norm > 1e-9 and math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            return cls.make((x, y, z), (qw, qx, qy, qz))  # raises the one error message
        sign = 1.0 if qw >= 0 else -1.0
        quaternion = (sign * (qw / norm), sign * (qx / norm), sign * (qy / norm), sign * (qz / norm))
        return cls(position=np.array((x, y, z), dtype=np.float64), quaternion=np.array(quaternion, dtype=np.float64))

    @classmethod
    def from_matrix(cls, position: Sequence[float], rotation: np.ndarray) -> Pose:
        """rotation: (3, 3) rotation matrix."""
        return cls.make(position, mat2quat(rotation))

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) rotation matrix."""
        return quat2mat(self.quaternion)


def rotation_angle(q0: np.ndarray, q1: np.ndarray) -> float:
    """Angle [rad] of the rotation taking quaternion q0 to q1 (both (4,) unit, w-x-y-z), in [0, pi]."""
    dot = abs(float(np.dot(q0, q1)))
    return 2.0 * math.acos(min(1.0, dot))


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical interpolation along the shorter arc; s in [0, 1]. Returns a (4,) unit quaternion."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact to float precision and avoids dividing by sin(~0)
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return (math.sin((1.0 - s) * theta) * q0 + math.sin(s * theta) * q1) / sin_theta


def interpolate_pose(a: Pose, b: Pose, s: float) -> Pose:
    """Position linear, orientation slerp; s = 0 gives a, s = 1 gives b."""
    return Pose.make(a.position + s * (b.position - a.position), slerp(a.quaternion, b.quaternion, s))


def apply_deltas(start: Pose, deltas: np.ndarray) -> list[Pose]:
    """Absolute targets T_0..T_{n-1} from per-step base-frame deltas, starting at T_{-1} = start.

    deltas: (rows, 6) [dx, dy, dz, droll, dpitch, dyaw] in m and rad, integrated by the suite's one
    convention (videovla_model.action_convention.integrate_deltas), so recorded data and execution agree.
    """
    positions, rotations = integrate_deltas(start.position, start.rotation, deltas)
    return [Pose.from_matrix(position, rotation) for position, rotation in zip(positions, rotations, strict=True)]


def row_due_times_ns(capture_time_ns: int, time_step: float, rows: int, offset: float = 0.0) -> np.ndarray:
    """(rows,) int64: row i is due at capture + offset + (i + 1) * time_step (times in ns, durations in s)."""
    steps = (np.arange(rows, dtype=np.float64) + 1.0) * time_step + offset
    return capture_time_ns + np.round(steps * NANOSECONDS_PER_SECOND).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Waypoint:
    """One chunk row as an absolute target: reach `pose` (and command `gripper`, 0..1) at `due_ns`."""

    due_ns: int
    pose: Pose
    gripper: float
    row: int


def drop_late(waypoints: Sequence[Waypoint], now_ns: int) -> tuple[list[Waypoint], list[Waypoint]]:
    """Splits waypoints into (still due, already late): a row whose due time has passed is never chased."""
    kept = [w for w in waypoints if w.due_ns > now_ns]
    late = [w for w in waypoints if w.due_ns <= now_ns]
    return kept, late


class Motion(Protocol):
    """A commanded end-effector motion over ROS time (ns)."""

    def sample(self, t_ns: int) -> Pose: ...

    def gripper(self, t_ns: int) -> float | None: ...

    def end_ns(self) -> int: ...


@dataclass(frozen=True, eq=False)
class Hold:
    """Stay at one pose (after the last action, when enabled without a chunk, or after a watchdog trip)."""

    pose: Pose
    since_ns: int = 0
    gripper_value: float | None = None

    def sample(self, t_ns: int) -> Pose:
        return self.pose

    def gripper(self, t_ns: int) -> float | None:
        return self.gripper_value

    def end_ns(self) -> int:
        return self.since_ns


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Piecewise motion from `start` at `start_ns` through the waypoints, then holding the last one.

    Between consecutive knots position is linear and orientation is slerped in time. The gripper command at
    time t is that of the waypoint being approached (so it is sent when the arm starts moving towards it), and
    the last waypoint's after the end.
    """

    start_ns: int
    start: Pose
    waypoints: tuple[Waypoint, ...]

    def __post_init__(self) -> None:
        if not self.waypoints:
            raise ValueError("a trajectory needs at least one waypoint")
        times = [self.start_ns] + [w.due_ns for w in self.waypoints]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"trajectory knot times must increase strictly, got {times}")

    def _segment(self, t_ns: int) -> int:
        """Index of the first waypoint due after t (len(waypoints) when past the end)."""
        for index, waypoint in enumerate(self.waypoints):
            if t_ns < waypoint.due_ns:
                return index
        return len(self.waypoints)

    def sample(self, t_ns: int) -> Pose:
        if t_ns <= self.start_ns:
            return self.start
        index = self._segment(t_ns)
        if index == len(self.waypoints):
            return self.waypoints[-1].pose
        if index == 0:
            previous_ns, previous = self.start_ns, self.start
        else:
            previous_ns, previous = self.waypoints[index - 1].due_ns, self.waypoints[index - 1].pose
        target = self.waypoints[index]
        s = (t_ns - previous_ns) / (target.due_ns - previous_ns)
        return interpolate_pose(previous, target.pose, s)

    def gripper(self, t_ns: int) -> float | None:
        return self.waypoints[min(self._segment(t_ns), len(self.waypoints) - 1)].gripper

    def end_ns(self) -> int:
        return self.waypoints[-1].due_ns


def quintic_weight(tau: float) -> float:
    """0 -> 1 with zero first and second derivative at both ends: 6 tau^5 - 15 tau^4 + 10 tau^3."""
    tau = min(1.0, max(0.0, tau))
    return tau * tau * tau * (10.0 + tau * (-15.0 + 6.0 * tau))


@dataclass(frozen=True, eq=False)
class Blend:
    """Switches from `previous` to `current` over [start_ns, start_ns + duration_ns].

    pose(t) = interpolate(previous(t), current(t), w(tau)) with the quintic weight w; because w' = 0 at both
    ends, the velocity equals previous's at the start and current's at the end, so the switch has no position
    or velocity jump as long as both motions are continuous.
    """

    previous: Motion
    current: Motion
    start_ns: int
    duration_ns: int

    def weight(self, t_ns: int) -> float:
        if self.duration_ns <= 0:
            return 1.0
        return quintic_weight((t_ns - self.start_ns) / self.duration_ns)

    def sample(self, t_ns: int) -> Pose:
        w = self.weight(t_ns)
        if w >= 1.0:
            return self.current.sample(t_ns)
        return interpolate_pose(self.previous.sample(t_ns), self.current.sample(t_ns), w)

    def gripper(self, t_ns: int) -> float | None:
        return self.current.gripper(t_ns)

    def end_ns(self) -> int:
        return max(self.current.end_ns(), self.start_ns + self.duration_ns)


def settle(motion: Motion, t_ns: int) -> Motion:
    """Drops finished blends so that chains of switches do not grow without bound."""
    while isinstance(motion, Blend) and motion.weight(t_ns) >= 1.0:
        motion = motion.current
    return motion


def switch_to(current: Motion, new: Motion, now_ns: int, blend_duration_ns: int) -> Motion:
    """The motion to follow once `new` arrives at `now_ns` while `current` is being executed."""
    current = settle(current, now_ns)
    if blend_duration_ns <= 0:
        return new
    return Blend(previous=current, current=new, start_ns=now_ns, duration_ns=blend_duration_ns)


class PoseLookupError(LookupError):
    """No end-effector pose is known for the requested time; the message says why."""


class PoseHistory:
    """Thread-safe buffer of stamped end-effector poses, to find T_{-1} at a chunk's capture stamp."""

    def __init__(self, duration_s: float, max_extrapolation_s: float) -> None:
        """duration_s: how much history to keep; max_extrapolation_s: how far past the newest sample a
        lookup may still use it (the robot state's period plus slack)."""
        if duration_s <= 0 or max_extrapolation_s < 0:
            raise ValueError(
                f"history duration must be > 0 and max extrapolation >= 0, got {duration_s}, {max_extrapolation_s}"
            )
        self._duration_ns = round(duration_s * NANOSECONDS_PER_SECOND)
        self._max_extrapolation_ns = round(max_extrapolation_s * NANOSECONDS_PER_SECOND)
        self._samples: deque[tuple[int, Pose]] = deque()
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, pose: Pose) -> bool:
        """Stores a sample; returns False (and ignores it) when it is not newer than the newest one."""
        with self._lock:
            if self._samples and stamp_ns <= self._samples[-1][0]:
                return False
            self._samples.append((stamp_ns, pose))
            while self._samples[0][0] < stamp_ns - self._duration_ns:
                self._samples.popleft()
            return True

    def oldest(self) -> tuple[int, Pose] | None:
        with self._lock:
            return self._samples[0] if self._samples else None

    def latest(self) -> tuple[int, Pose] | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def lookup(self, stamp_ns: int) -> Pose:
        """The pose at `stamp_ns`, interpolated between the two samples around it."""
        with self._lock:
            samples = list(self._samples)
        if not samples:
            raise PoseLookupError("no robot state received yet")
        oldest_ns, newest_ns = samples[0][0], samples[-1][0]
        if stamp_ns < oldest_ns:
            raise PoseLookupError(
                f"stamp is {(oldest_ns - stamp_ns) / 1e9:.3f} s older than the oldest robot state in the "
                f"history (which keeps {self._duration_ns / 1e9:.1f} s)"
            )
        if stamp_ns >= newest_ns:
            if stamp_ns - newest_ns > self._max_extrapolation_ns:
                raise PoseLookupError(
                    f"the newest robot state is {(stamp_ns - newest_ns) / 1e9:.3f} s older than the stamp "
                    f"(at most {self._max_extrapolation_ns / 1e9:.3f} s allowed)"
                )
            return samples[-1][1]
        low, high = 0, len(samples) - 1
        while high - low > 1:
            middle = (low + high) // 2
            if samples[middle][0] <= stamp_ns:
                low = middle
            else:
                high = middle
        (t0, p0), (t1, p1) = samples[low], samples[high]
        return interpolate_pose(p0, p1, (stamp_ns - t0) / (t1 - t0))


@dataclass
class StreamStats:
    """Timing of the streaming loop: rate and jitter over a sliding window, idle fraction since reset.

    Times are monotonic ns of each streamed command; a tick is idle when the commanded pose did not move.
    """

    window: int = 200
    _ticks: deque[int] = field(default_factory=deque)
    ticks: int = 0
    idle_ticks: int = 0

    def record(self, t_ns: int, idle: bool) -> None:
        self._ticks.append(t_ns)
        if len(self._ticks) > self.window:
            self._ticks.popleft()
        self.ticks += 1
        self.idle_ticks += int(idle)

    def reset(self) -> None:
        self._ticks.clear()
        self.ticks = 0
        self.idle_ticks = 0

    def periods_s(self) -> np.ndarray:
        """(n-1,) intervals between the last n ticks [s]."""
        return np.diff(np.asarray(self._ticks, dtype=np.int64)) / NANOSECONDS_PER_SECOND

    def rate_hz(self) -> float:
        periods = self.periods_s()
        return float(1.0 / periods.mean()) if periods.size else 0.0

    def jitter_s(self) -> float:
        """Standard deviation of the tick period [s]."""
        periods = self.periods_s()
        return float(periods.std()) if periods.size else 0.0

    def max_period_s(self) -> float:
        periods = self.periods_s()
        return float(periods.max()) if periods.size else 0.0

    def idle_fraction(self) -> float:
        return self.idle_ticks / self.ticks if self.ticks else 0.0
