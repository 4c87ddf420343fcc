"""From timestamped streams (camera, arm pose, gripper) to an episode's (frame, action) steps (pure numpy).

One rule, used by the recorder node and by the bag importer, so that a live recording and an imported one
of the same motion give the same episode:

- ticks at `rate_hz` from the first camera frame at which a pose is known;
- at each tick the newest camera frame whose capture stamp is <= the tick (arrival order never matters);
- the arm pose linearly interpolated (slerp for the rotation) at that frame's capture stamp;
- consecutive ticks' poses give the action rows through `videovla_model.action_convention`, the gripper
  column is the gripper value at the next frame's capture stamp (newest at or before it);
- T + 1 sampled frames give T (frame, action) steps: the last frame has no action.

Bad streams are refused with `ResampleError`, naming the stream and the time; oddities that still give a
valid episode (a repeated frame, a pose jump, no gripper stream) are returned as bounded `flags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import tyro

from videovla_model.action_convention import float32_pose_deltas, quaternion_to_matrix, slerp_quaternions

NANOSECONDS_PER_SECOND = 1_000_000_000
MAX_FLAGS = 12
"""Flags kept per episode; the rest are counted in one last flag, so reports stay bounded."""
GRIPPER_OPEN = 1.0


@dataclass(frozen=True)
class PoseSeries:
    """Stamped end-effector poses in the base frame."""

    stamps_ns: np.ndarray
    """(N,) int64, strictly increasing."""
    positions: np.ndarray
    """(N, 3) float64 [m]."""
    quaternions: np.ndarray
    """(N, 4) float64 unit, w, x, y, z."""


@dataclass(frozen=True)
class ResampleLimits:
    max_gap_s: Annotated[float, tyro.conf.arg(aliases=("--max-gap",))] = 0.5
    """A gap between consecutive camera or pose samples longer than this is refused [s]."""
    max_pose_jump_m: float = 0.05
    """A per-step translation larger than this is flagged (reported, not refused) [m]."""
    max_gripper_gap_s: float | None = None
    """Gap limit of the gripper stream [s]; None: a gripper topic may publish only on change (held value)."""

    def __post_init__(self) -> None:
        for name in ("max_gap_s", "max_pose_jump_m", "max_gripper_gap_s"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"ResampleLimits.{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class StreamNames:
    """How errors and reports name the streams (topics, for a bag or a live recording)."""

    frames: str = "camera"
    poses: str = "pose"
    gripper: str = "gripper"


@dataclass(frozen=True)
class StreamReport:
    """One input stream, for the user: sample count, mean rate, longest gap, samples missing by its own period."""

    name: str
    count: int
    rate_hz: float
    max_gap_s: float
    dropped: int


@dataclass(frozen=True)
class Resampled:
    frame_indices: np.ndarray
    """(T,) int64 index into the input frames used at each tick."""
    tick_stamps_ns: np.ndarray
    """(T,) int64."""
    actions: np.ndarray
    """(T, 7) float32: dx, dy, dz, droll, dpitch, dyaw from frame t's pose to frame t+1's, gripper at t+1."""
    reports: tuple[StreamReport, ...]
    flags: tuple[str, ...]
    poses: PoseSeries = field(repr=False)
    """The T + 1 sampled poses, at the sampled frames' capture stamps (the last one has no step)."""


class ResampleError(ValueError):
    """A stream cannot give an episode; the message names the stream and the time."""


def _when(stamp_ns: int, origin_ns: int) -> str:
    return f"t={(stamp_ns - origin_ns) / NANOSECONDS_PER_SECOND:.3f} s (stamp {stamp_ns / NANOSECONDS_PER_SECOND:.3f})"


def _check_stamps(name: str, stamps_ns: np.ndarray | None, origin_ns: int, max_gap_s: float | None) -> np.ndarray:
    """(N,) int64 stamps, non-empty, strictly increasing, without a gap above max_gap_s."""
    if stamps_ns is None or np.asarray(stamps_ns).size == 0:
        raise ResampleError(f"stream {name!r} has no samples")
    stamps = np.asarray(stamps_ns)
    if stamps.ndim != 1 or not np.issubdtype(stamps.dtype, np.integer):
        raise ResampleError(
            f"stream {name!r}: stamps must be a 1-D integer array [ns], got {stamps.dtype} {stamps.shape}"
        )
    stamps = stamps.astype(np.int64)
    steps = np.diff(stamps)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise ResampleError(
            f"stream {name!r}: stamps are not strictly increasing at sample {i}, {_when(int(stamps[i]), origin_ns)} "
            f"follows {_when(int(stamps[i - 1]), origin_ns)}"
        )
    if max_gap_s is not None and steps.size:
        widest = int(np.argmax(steps))
        if steps[widest] > max_gap_s * NANOSECONDS_PER_SECOND:
            raise ResampleError(
                f"stream {name!r}: gap of {steps[widest] / NANOSECONDS_PER_SECOND:.3f} s after "
                f"{_when(int(stamps[widest]), origin_ns)} (at most {max_gap_s} s allowed)"
            )
    return stamps


def _check_poses(name: str, poses: PoseSeries, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positions = np.asarray(poses.positions, dtype=np.float64)
    quaternions = np.asarray(poses.quaternions, dtype=np.float64)
    count = stamps.shape[0]
    if positions.shape != (count, 3) or quaternions.shape != (count, 4):
        raise ResampleError(
            f"stream {name!r}: positions must be ({count}, 3) and quaternions ({count}, 4) for {count} stamps, "
            f"got {positions.shape} and {quaternions.shape}"
        )
    norms = np.linalg.norm(quaternions, axis=1)
    bad = np.flatnonzero(~(np.all(np.isfinite(positions), axis=1) & np.isfinite(norms) & (norms > 1e-9)))
    if bad.size:
        raise ResampleError(f"stream {name!r}: sample {int(bad[0])} is not a finite pose with a non-zero quaternion")
    return positions, quaternions / norms[:, None]


def _check_gripper(name: str, values: np.ndarray, count: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (count,):
        raise ResampleError(f"stream {name!r}: values must be ({count},) for {count} stamps, got {values.shape}")
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0)))
    if bad.size:
        raise ResampleError(
            f"stream {name!r}: sample {int(bad[0])} is {float(values[bad[0]])!r}, expected 0 (closed) .. 1 (open)"
        )
    return values


def interpolate_poses(poses: PoseSeries, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses at `stamps_ns` (each within the series' span): positions (M, 3) linear, quaternions (M, 4) slerp."""
    known = np.asarray(poses.stamps_ns, dtype=np.int64)
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    low = np.clip(np.searchsorted(known, stamps, side="right") - 1, 0, len(known) - 1)
    high = np.minimum(low + 1, len(known) - 1)
    span = (known[high] - known[low]).astype(np.float64)
    fraction = np.where(span > 0, (stamps - known[low]) / np.where(span > 0, span, 1.0), 0.0)
    positions = np.asarray(poses.positions, dtype=np.float64)
    quaternions = np.asarray(poses.quaternions, dtype=np.float64)
    interpolated = positions[low] + fraction[:, None] * (positions[high] - positions[low])
    return interpolated, slerp_quaternions(quaternions[low], quaternions[high], fraction)


def _report(name: str, stamps: np.ndarray) -> StreamReport:
    steps = np.diff(stamps) / NANOSECONDS_PER_SECOND
    if not steps.size:
        return StreamReport(name=name, count=int(stamps.size), rate_hz=0.0, max_gap_s=0.0, dropped=0)
    period = float(np.median(steps))
    dropped = int(np.sum(np.maximum(np.round(steps / period) - 1, 0))) if period > 0 else 0
    return StreamReport(
        name=name,
        count=int(stamps.size),
        rate_hz=float(steps.size / steps.sum()),
        max_gap_s=float(steps.max()),
        dropped=dropped,
    )


def _bounded(flags: list[str]) -> tuple[str, ...]:
    if len(flags) <= MAX_FLAGS:
        return tuple(flags)
    return (*flags[: MAX_FLAGS - 1], f"... and {len(flags) - MAX_FLAGS + 1} more")


def _ticks(frame_stamps: np.ndarray, first: int, last: int, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Tick stamps from frame `first` to frame `last`, and the newest frame at or before each tick."""
    period_ns = NANOSECONDS_PER_SECOND / rate_hz
    count = int((frame_stamps[last] - frame_stamps[first]) // period_ns) + 1
    ticks = frame_stamps[first] + np.round(np.arange(count) * period_ns).astype(np.int64)
    return ticks, np.searchsorted(frame_stamps, ticks, side="right") - 1


def _gripper_at(
    stamps: np.ndarray, values: np.ndarray, at_ns: np.ndarray, name: str, origin_ns: int, flags: list[str]
) -> np.ndarray:
    """The newest gripper value at or before each stamp; before the first sample, the first value (flagged)."""
    newest = np.searchsorted(stamps, at_ns, side="right") - 1
    if newest[0] < 0:  # a command topic that first publishes mid-episode
        flags.append(
            f"stream {name!r} starts at {_when(int(stamps[0]), origin_ns)}: its first value {float(values[0])} "
            "is used before"
        )
    return values[np.maximum(newest, 0)]


def _stall_and_jump_flags(
    ticks: np.ndarray,
    indices: np.ndarray,
    captured: np.ndarray,
    positions: np.ndarray,
    limits: ResampleLimits,
    names: StreamNames,
    origin_ns: int,
) -> list[str]:
    """Repeated frames (the camera missed a tick) and per-step pose changes above max_pose_jump_m."""
    flags = [
        f"stream {names.frames!r} stalled: the tick at {_when(int(ticks[k]), origin_ns)} repeats the frame "
        f"captured at {_when(int(captured[k]), origin_ns)}"
        for k in np.flatnonzero(indices[1:] == indices[:-1]) + 1
    ]
    jumps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    flags += [
        f"stream {names.poses!r} jumped {jumps[k]:.3f} m (more than {limits.max_pose_jump_m} m) between "
        f"{_when(int(captured[k]), origin_ns)} and {_when(int(captured[k + 1]), origin_ns)}"
        for k in np.flatnonzero(jumps > limits.max_pose_jump_m)
    ]
    return flags


def resample(
    frame_stamps_ns: np.ndarray,
    poses: PoseSeries,
    gripper_stamps_ns: np.ndarray | None,
    gripper_values: np.ndarray | None,
    rate_hz: float,
    limits: ResampleLimits = ResampleLimits(),
    *,
    names: StreamNames = StreamNames(),
) -> Resampled:
    """Applies the module's rule; see the module docstring. Raises ResampleError for streams it cannot use."""
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise ResampleError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
    if (gripper_stamps_ns is None) != (gripper_values is None):
        raise ResampleError(f"stream {names.gripper!r}: give both stamps and values, or neither")
    starts = [
        np.asarray(s).reshape(-1)[:1] for s in (frame_stamps_ns, poses.stamps_ns, gripper_stamps_ns) if s is not None
    ]
    origin_ns = int(min((int(s[0]) for s in starts if s.size), default=0))
    # 1. Every stream on its own: present, ordered, without long gaps.
    frames = _check_stamps(names.frames, frame_stamps_ns, origin_ns, limits.max_gap_s)
    pose_stamps = _check_stamps(names.poses, poses.stamps_ns, origin_ns, limits.max_gap_s)
    positions, quaternions = _check_poses(names.poses, poses, pose_stamps)
    checked = PoseSeries(pose_stamps, positions, quaternions)
    flags: list[str] = []
    reports = [_report(names.frames, frames), _report(names.poses, pose_stamps)]
    known_from = int(pose_stamps[0])
    if gripper_stamps_ns is not None:
        gripper_stamps = _check_stamps(names.gripper, gripper_stamps_ns, origin_ns, limits.max_gripper_gap_s)
        gripper = _check_gripper(names.gripper, gripper_values, gripper_stamps.shape[0])  # type: ignore[arg-type]
        reports.append(_report(names.gripper, gripper_stamps))
    else:
        flags.append(f"no {names.gripper!r} stream: the gripper column is {GRIPPER_OPEN} (open) throughout")
    # 2. The frames whose capture stamp lies where the pose is known.
    usable = np.flatnonzero((frames >= known_from) & (frames <= pose_stamps[-1]))
    if usable.size < 2:
        raise ResampleError(
            f"stream {names.frames!r} has {usable.size} frame(s) between {_when(known_from, origin_ns)} and "
            f"{_when(int(pose_stamps[-1]), origin_ns)} where {names.poses!r} is known; an episode needs at least 2"
        )
    ticks, indices = _ticks(frames, int(usable[0]), int(usable[-1]), rate_hz)
    if ticks.size < 2:
        raise ResampleError(
            f"stream {names.frames!r} spans less than one tick ({1 / rate_hz:.3f} s) from "
            f"{_when(int(ticks[0]), origin_ns)} while {names.poses!r} is known"
        )
    # 3. Poses at the sampled frames' capture stamps, then actions between consecutive ones.
    captured = frames[indices]
    sampled_positions, sampled_quaternions = interpolate_poses(checked, captured)
    rotations = np.array([quaternion_to_matrix(q) for q in sampled_quaternions])
    deltas = float32_pose_deltas(sampled_positions, rotations)
    if gripper_stamps_ns is None:
        grip = np.full(len(deltas), GRIPPER_OPEN)
    else:
        grip = _gripper_at(gripper_stamps, gripper, captured[1:], names.gripper, origin_ns, flags)
    actions = np.concatenate((deltas, grip[:, None].astype(np.float32)), axis=1)
    # 4. Flags: what the user should look at, although the episode is valid.
    flags += _stall_and_jump_flags(ticks, indices, captured, sampled_positions, limits, names, origin_ns)
    return Resampled(
        frame_indices=indices[:-1].astype(np.int64),
        tick_stamps_ns=ticks[:-1],
        actions=actions,
        reports=tuple(reports),
        flags=_bounded(flags),
        poses=PoseSeries(captured, sampled_positions, sampled_quaternions),
    )


class TickSelector:
    """The frame rule applied live: offer frames in arrival order, keep only those some tick will use.

    A tick's frame is final once a frame captured after the tick arrives (or at `flush`). Resampling the kept
    frames with `resample` selects the same frames at the same ticks as resampling every frame would, so a
    recorder stores one frame per tick instead of the camera's full rate. Ticks start at the first frame.
    """

    def __init__(self, rate_hz: float) -> None:
        if not (np.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
        self._period_ns = NANOSECONDS_PER_SECOND / rate_hz
        self._start_ns: int | None = None
        self._tick = 0
        self._candidate: tuple[int, object] | None = None
        self._emitted = False
        """Whether the candidate was already handed out by flush (a stop that did not end the recording)."""
        self.repeated_ticks = 0
        """Ticks that had no new frame and reuse the previous tick's (a slow or stalled camera)."""
        self.out_of_order = 0
        """Frames captured before an already chosen one (never the newest at any later tick)."""

    @property
    def origin_ns(self) -> int | None:
        """Stamp of tick 0 (the first frame offered), None before any frame."""
        return self._start_ns

    def _tick_ns(self, tick: int) -> int:
        assert self._start_ns is not None
        return self._start_ns + round(tick * self._period_ns)

    def offer(self, stamp_ns: int, frame: object) -> list[tuple[int, object]]:
        """Returns the (stamp, frame) pairs that became final, in capture order (at most one)."""
        if self._candidate is None:
            self._start_ns, self._candidate, self._emitted = stamp_ns, (stamp_ns, frame), False
            return []
        if stamp_ns <= self._candidate[0]:
            self.out_of_order += 1
            return []
        if stamp_ns <= self._tick_ns(self._tick):
            self._candidate, self._emitted = (stamp_ns, frame), False
            return []
        final = [] if self._emitted else [self._candidate]
        covered = 0
        while self._tick_ns(self._tick) < stamp_ns:
            self._tick += 1
            covered += 1
        self.repeated_ticks += covered - 1
        self._candidate, self._emitted = (stamp_ns, frame), False
        return final

    def flush(self) -> list[tuple[int, object]]:
        """The frame chosen so far for the pending tick (at the end of a recording; offering may go on after)."""
        if self._candidate is None or self._emitted:
            return []
        self._emitted = True
        return [self._candidate]
