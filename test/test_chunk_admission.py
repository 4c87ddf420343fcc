"""Chunk admission of the arm bridge (pure): every rule of videovla_ros.chunk_admission, in order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from videovla_ros.action_chunk import TimedChunk
from videovla_ros.chunk_admission import (
    AdmissionLimits,
    BridgeState,
    ChunkPlan,
    ChunkRejection,
    outstanding_request_ns,
    plan_chunk,
)
from videovla_ros.safety import SafetyLimits
from videovla_ros.trajectory import Pose, PoseHistory

S = 1_000_000_000
NOW = 100 * S
DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
LIMITS = AdmissionLimits(
    safety=SafetyLimits(workspace_min=(-0.5, -0.5, 0.0), workspace_max=(0.5, 0.5, 0.6), max_chunk_age=1.0),
    frame_id="base_link",
    blend_duration=0.0,
    latency_compensation=0.0,
)
START = Pose.make((0.3, 0.0, 0.4))


def _history() -> PoseHistory:
    history = PoseHistory(duration_s=5.0, max_extrapolation_s=0.5)
    for t in range(96, 101):
        history.add(t * S, START)
    return history


def _chunk(capture_ns: int = NOW - S // 10, rows: np.ndarray | None = None, **changes: object) -> TimedChunk:
    actions = np.zeros((6, 7)) if rows is None else rows
    if rows is None:
        actions[:, 0], actions[:, 6] = 0.01, 1.0
    chunk = TimedChunk(
        capture_time_ns=capture_ns,
        frame_id="base_link",
        instruction="pick",
        sequence=7,
        actions=actions,
        dim_names=DIMS,
        time_step=0.1,
        execute_rows=3,
    )
    return dataclasses.replace(chunk, **changes)


def _state(request_ns: int | None = NOW - S // 5, last_capture_ns: int | None = None) -> BridgeState:
    return BridgeState(history=_history(), motion=None, last_capture_ns=last_capture_ns, request_ns=request_ns)


def test_sync_executes_the_answer_to_the_request_up_to_execute_rows():
    plan = plan_chunk(_chunk(), _state(), NOW, "sync", LIMITS)
    assert isinstance(plan, ChunkPlan)
    assert [w.row for w in plan.waypoints] == [0, 1, 2] and plan.late_rows == 0 and plan.clamps == ()
    # The arm stood still while the policy inferred: row i is due (i + 1) time steps after the arrival.
    assert [w.due_ns for w in plan.waypoints] == [NOW + S // 10, NOW + 2 * S // 10, NOW + 3 * S // 10]
    assert plan.next_request_ns == plan.waypoints[-1].due_ns
    np.testing.assert_allclose(plan.waypoints[-1].pose.position, [0.33, 0.0, 0.4])
    assert plan.motion.sample(NOW + 3 * S // 10).position[0] == pytest.approx(0.33)


@pytest.mark.parametrize("mode", ["async", "rtc"])  # rtc executes like async; only the requests differ
def test_async_executes_every_row_on_the_capture_schedule_and_drops_late_ones(mode):
    plan = plan_chunk(_chunk(capture_ns=NOW - S // 4), _state(request_ns=None), NOW, mode, LIMITS)
    assert isinstance(plan, ChunkPlan) and plan.next_request_ns is None
    assert plan.late_rows == 2 and [w.row for w in plan.waypoints] == [2, 3, 4, 5]
    compensated = dataclasses.replace(LIMITS, latency_compensation=0.3)
    plan = plan_chunk(_chunk(capture_ns=NOW - S // 4), _state(request_ns=None), NOW, mode, compensated)
    assert isinstance(plan, ChunkPlan) and plan.late_rows == 0


@pytest.mark.parametrize(
    ("chunk", "state", "mode", "kind", "reason", "request_again"),
    [
        (_chunk(frame_id="tool0"), _state(), "sync", "frame", "frame_id 'tool0' differs", False),
        (_chunk(), _state(request_ns=None), "sync", "unrequested", "no chunk was requested", False),
        (_chunk(capture_ns=NOW - S // 2), _state(), "sync", "unrequested", "captured 0.300 s before", False),
        (_chunk(capture_ns=NOW - S // 10), _state(request_ns=NOW - 3 * S), "sync", "timing", "", True),
        (_chunk(capture_ns=NOW - 2 * S), _state(request_ns=NOW - 3 * S), "async", "timing", "stale: captured 2", False),
        (_chunk(capture_ns=NOW + S), _state(), "sync", "timing", "in the future", True),
        (_chunk(), _state(last_capture_ns=NOW), "sync", "timing", "out of order", True),
        (_chunk(capture_ns=NOW - S // 10), _state(request_ns=None), "async", "no_pose", "", False),
        (_chunk(capture_ns=NOW - 9 * S // 10, time_step=0.01), _state(request_ns=None), "async", "late", "", False),
    ],
    ids=["frame", "not-requested", "before-request", "stale-answer", "stale", "future", "order", "no-pose", "late"],
)
def test_every_rule_rejects_with_its_kind_and_reason(chunk, state, mode, kind, reason, request_again):
    if kind == "timing" and reason == "":  # an answer to a request made 3 s ago, captured 2.9 s late
        chunk = dataclasses.replace(chunk, capture_time_ns=NOW - 2 * S)
        reason = "stale: captured 2 s ago (max_chunk_age 1 s)"
    if kind == "no_pose":
        state = dataclasses.replace(state, history=PoseHistory(duration_s=5.0, max_extrapolation_s=0.5))
        reason = "no end-effector pose at the capture stamp"
    if kind == "late":
        reason = "all 6 rows are already due"
    result = plan_chunk(chunk, state, NOW, mode, LIMITS)
    assert isinstance(result, ChunkRejection), result
    assert result.kind == kind and result.reason.startswith("chunk 7: ") and reason in result.reason
    assert result.request_again is request_again


def test_a_stray_chunk_does_not_break_the_sync_cycle():
    # The bridge asked at NOW - 0.2 s; a chunk captured before that is not the answer: it is refused without
    # asking again, and the answer that follows is accepted (no "busy" rejection of the real chunk).
    state = _state()
    stray = plan_chunk(_chunk(capture_ns=NOW - S // 2), state, NOW, "sync", LIMITS)
    assert isinstance(stray, ChunkRejection) and not stray.request_again
    assert isinstance(plan_chunk(_chunk(), state, NOW, "sync", LIMITS), ChunkPlan)


def test_a_repeated_request_keeps_the_first_outstanding_requests_stamp():
    # Sync: asked at NOW - 0.5 s; the policy is slower than the chunk watchdog, which asks again at NOW - 0.1 s.
    # Its answer, captured at NOW - 0.3 s (after the first request, before the repeat), is the awaited chunk.
    first = outstanding_request_ns(None, NOW - S // 2)
    repeated = outstanding_request_ns(first, NOW - S // 10)
    assert first == repeated == NOW - S // 2
    answer = plan_chunk(_chunk(capture_ns=NOW - 3 * S // 10), _state(request_ns=repeated), NOW, "sync", LIMITS)
    assert isinstance(answer, ChunkPlan), answer
    # Once the answer is admitted nothing is outstanding (the node sets None); the next request starts afresh.
    assert outstanding_request_ns(None, NOW) == NOW


def test_rows_are_clamped_and_the_clamps_reported():
    rows = np.zeros((6, 7))
    rows[:, 0] = 0.1  # 10 cm per row: clamped to 2 cm, and the box ends at x = 0.5
    rows[0, 6] = 3.0  # gripper out of range
    plan = plan_chunk(_chunk(rows=rows), _state(request_ns=None), NOW, "async", LIMITS)
    assert isinstance(plan, ChunkPlan)
    clamps = dict(plan.clamps)
    assert len(clamps["rows_step_clamped"]) == 6
    assert clamps["rows_step_clamped"][0] == "row 0: translation step 0.1 m clamped to max_step_translation 0.02 m"
    assert clamps["rows_gripper_clipped"] == ("row 0: gripper value 3.0000 outside [0, 1]; clipped",)
    assert max(w.pose.position[0] for w in plan.waypoints) == pytest.approx(0.42)
    tight = dataclasses.replace(LIMITS, safety=dataclasses.replace(LIMITS.safety, workspace_max=(0.35, 0.5, 0.6)))
    plan = plan_chunk(_chunk(rows=rows), _state(request_ns=None), NOW, "async", tight)
    assert isinstance(plan, ChunkPlan) and len(dict(plan.clamps)["rows_workspace_clamped"]) == 4
    assert max(w.pose.position[0] for w in plan.waypoints) == pytest.approx(0.35)
