"""Whether the arm bridge executes an ActionChunk, and how (pure; the bridge keeps the lock, logs and publishes).

`plan_chunk(chunk, state, now_ns, mode, limits)` applies every rule, in order, and returns either a ChunkPlan
(the new motion and what was clamped on the way) or a ChunkRejection (a counter name and a specific reason):

1. frame: the chunk's frame_id must be the bridge's.
2. unrequested (sync only): a chunk is executed only as the answer to the outstanding chunk request, that is,
   when one is outstanding and the chunk's image was captured at or after the request's stamp (the policy
   answers a request with a frame taken after it). Anything else (a stray or duplicate chunk, a policy in
   async mode) is refused without asking again: the answer to the request is still on its way.
3. timing: not stale (max_chunk_age), not from the future (max_clock_skew), newer than the last accepted chunk.
4. no_pose: the end-effector pose at the capture stamp must be in the robot state history (T_{-1}).
5. per row: translation/rotation steps clamped, targets clamped into the workspace, gripper thresholded
   (reported, never refused).
6. late: rows already due are dropped; a chunk with every row due is refused.
In sync mode a refused chunk that answered the outstanding request sets `request_again`: the policy will not
send another one unless asked. Execution mode rtc is admitted exactly like async: it differs only in how the
bridge asks for chunks (rtc_chunk_request, with the committed motion). Timing: see the arm bridge's module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videovla_ros.action_chunk import TimedChunk
from videovla_ros.safety import SafetyLimits, check_chunk_stamp, clamp_steps, clamp_to_workspace, gripper_command
from videovla_ros.trajectory import (
    DELTA_DIMS,
    GRIPPER_DIM,
    NANOSECONDS_PER_SECOND,
    Hold,
    Motion,
    Pose,
    PoseHistory,
    PoseLookupError,
    Trajectory,
    Waypoint,
    apply_deltas,
    drop_late,
    row_due_times_ns,
    switch_to,
)


@dataclass(frozen=True)
class AdmissionLimits:
    """The bridge settings admission uses: safety limits, the base frame, blending and async latency offset [s]."""

    safety: SafetyLimits
    frame_id: str
    blend_duration: float
    latency_compensation: float


@dataclass(frozen=True)
class BridgeState:
    """What the bridge knows when a chunk arrives (ROS time, ns).

    motion: what the arm is streaming now (None: nothing yet).
    last_capture_ns: capture stamp of the last accepted chunk.
    request_ns: stamp of the first outstanding chunk request (sync mode); None while none is outstanding.
    """

    history: PoseHistory
    motion: Motion | None
    last_capture_ns: int | None
    request_ns: int | None


@dataclass(frozen=True)
class ChunkPlan:
    """An admitted chunk: the motion to stream from now on and what admission changed.

    clamps: (diagnostics counter, reasons) per kind of clamp that happened, e.g. ("rows_step_clamped", [...]).
    next_request_ns: sync mode: when the executed rows are done and the next chunk is to be requested.
    """

    motion: Motion
    waypoints: tuple[Waypoint, ...]
    late_rows: int
    clamps: tuple[tuple[str, tuple[str, ...]], ...]
    next_request_ns: int | None


@dataclass(frozen=True)
class ChunkRejection:
    """A refused chunk: `kind` names the counter (chunks_rejected_<kind>), `reason` says why."""

    kind: str
    reason: str
    request_again: bool = False


def plan_chunk(
    chunk: TimedChunk, state: BridgeState, now_ns: int, mode: str, limits: AdmissionLimits
) -> ChunkPlan | ChunkRejection:
    """Applies the rules of the module docstring to `chunk` at ROS time `now_ns` in execution mode `mode`."""
    prefix = f"chunk {chunk.sequence}"
    if chunk.frame_id != limits.frame_id:
        return ChunkRejection(
            "frame", f"{prefix}: frame_id {chunk.frame_id!r} differs from the bridge's frame_id {limits.frame_id!r}"
        )
    sync = mode == "sync"
    if sync and (state.request_ns is None or chunk.capture_time_ns < state.request_ns):
        return ChunkRejection("unrequested", f"{prefix}: {_unrequested_reason(chunk, state.request_ns)}")
    answered = sync  # past rule 2, a sync chunk is the answer to the outstanding request
    timing = check_chunk_stamp(chunk.capture_time_ns, now_ns, state.last_capture_ns, limits.safety)
    if not timing.allowed:
        return ChunkRejection("timing", f"{prefix}: {timing.reason}", answered)
    try:
        anchor = state.history.lookup(chunk.capture_time_ns)
    except PoseLookupError as error:
        return ChunkRejection("no_pose", f"{prefix}: no end-effector pose at the capture stamp: {error}", answered)

    rows = chunk.execute_rows if sync else chunk.rows
    waypoints, clamps = _waypoints(chunk, rows, anchor, now_ns, sync, limits)
    kept, late = drop_late(waypoints, now_ns)
    if not kept:
        return ChunkRejection(
            "late",
            f"{prefix}: all {len(late)} rows are already due (the last was due "
            f"{(now_ns - late[-1].due_ns) / NANOSECONDS_PER_SECOND:.3f} s ago); a policy this slow needs "
            "execution_mode sync or latency_compensation",
            answered,
        )
    start = state.motion.sample(now_ns) if state.motion is not None else anchor
    trajectory = Trajectory(start_ns=now_ns, start=start, waypoints=tuple(kept))
    blend_ns = round(limits.blend_duration * NANOSECONDS_PER_SECOND)
    motion = switch_to(state.motion or Hold(start, now_ns), trajectory, now_ns, blend_ns)
    return ChunkPlan(
        motion=motion,
        waypoints=tuple(kept),
        late_rows=len(late),
        clamps=clamps,
        next_request_ns=kept[-1].due_ns if sync else None,
    )


def outstanding_request_ns(outstanding_ns: int | None, request_ns: int) -> int:
    """Sync: the stamp an answer must be captured at or after (BridgeState.request_ns) once a chunk request is
    sent at `request_ns`, given the outstanding one's (None: none outstanding).

    A repeated request (the chunk watchdog's, or one after a refused answer) keeps the first outstanding
    request's stamp: a policy slower than the watchdog is still answering that one, and its answer must not be
    rejected as a stray."""
    return request_ns if outstanding_ns is None else outstanding_ns


def _unrequested_reason(chunk: TimedChunk, request_ns: int | None) -> str:
    if request_ns is None:
        return (
            "no chunk was requested (execution_mode sync executes one requested chunk at a time and asks for the "
            "next when its rows are done); a policy publishing unasked runs with another execution_mode"
        )
    before = (request_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND
    return f"captured {before:.3f} s before the outstanding chunk request: not its answer (a stray or older chunk)"


def _waypoints(
    chunk: TimedChunk, rows: int, anchor: Pose, now_ns: int, sync: bool, limits: AdmissionLimits
) -> tuple[list[Waypoint], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The first `rows` rows as clamped, timed waypoints, and the clamps that happened."""
    deltas = np.stack([chunk.column(name) for name in DELTA_DIMS], axis=1)[:rows]
    deltas, step_reasons = clamp_steps(deltas, limits.safety)
    targets, workspace_reasons = [], []
    for row, target in enumerate(apply_deltas(anchor, deltas)):
        clamped, reason = clamp_to_workspace(target, limits.safety)
        targets.append(clamped)
        if reason is not None:
            workspace_reasons.append(f"row {row}: {reason}")
    grippers, gripper_reasons = [], []
    for row, value in enumerate(chunk.column(GRIPPER_DIM)[:rows]):
        command, reason = gripper_command(float(value), limits.safety)
        grippers.append(command)
        if reason is not None:
            gripper_reasons.append(f"row {row}: {reason}")
    # Sync: the arm stood still while the policy inferred, so the schedule starts at the chunk's arrival.
    offset = (now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND if sync else limits.latency_compensation
    due = row_due_times_ns(chunk.capture_time_ns, chunk.time_step, rows, offset)
    waypoints = [
        Waypoint(due_ns=int(t), pose=pose, gripper=g, row=i)
        for i, (t, pose, g) in enumerate(zip(due, targets, grippers, strict=True))
    ]
    clamps = tuple(
        (counter, tuple(reasons))
        for counter, reasons in (
            ("rows_step_clamped", step_reasons),
            ("rows_workspace_clamped", workspace_reasons),
            ("rows_gripper_clipped", gripper_reasons),
        )
        if reasons
    )
    return waypoints, clamps
