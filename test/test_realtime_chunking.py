"""The bridge's committed motion, its re-expression in the frame of an answer (videovla_ros.realtime_chunking), and
the ChunkRequest message round trip; no DDS."""

from __future__ import annotations

import numpy as np
import pytest

from videovla_ros.realtime_chunking import (
    PREFIX_DIMS,
    CommittedMotion,
    DelayEstimate,
    committed_motion,
    from_msg,
    prefix_for_capture,
    to_msg,
)
from videovla_ros.trajectory import Hold, Pose, Trajectory, Waypoint, apply_deltas, rotation_angle

NOW = 1_000_000_000_000
STEP = 0.1
STEP_NS = 100_000_000


def curved_trajectory(rows: int = 6) -> Trajectory:
    """A chunk being executed since NOW: turning and speeding up, gripper closing at row 3."""
    deltas = np.array([[0.002 * (i + 1), 0.001 * i, -0.0005, 0.01, -0.02 * i, 0.015] for i in range(rows)])
    start = Pose.make([0.4, 0.0, 0.3], [0.9, 0.1, 0.3, 0.2])
    poses = apply_deltas(start, deltas)
    waypoints = tuple(Waypoint(NOW + (i + 1) * STEP_NS, pose, 1.0 if i < 3 else 0.0, i) for i, pose in enumerate(poses))
    return Trajectory(start_ns=NOW, start=start, waypoints=waypoints)


def test_committed_motion_samples_the_executing_chunk_until_it_ends():
    motion = committed_motion(curved_trajectory(), NOW, STEP, 0.25, 0.0, "base_link")
    assert motion.origin_ns == NOW and motion.rows.shape == (6, 7)
    np.testing.assert_allclose(motion.rows[:, 0], 0.002 * np.arange(1, 7), atol=1e-12)
    np.testing.assert_array_equal(motion.rows[:, 6], [1, 1, 1, 0, 0, 0])
    later = committed_motion(curved_trajectory(), NOW + 250_000_000, STEP, 0.25, 0.0, "base_link")
    assert later.rows.shape == (4, 7)  # 0.35 s left: three whole steps, then half a step and the hold
    assert later.rows[3, 0] == pytest.approx(0.5 * 0.012)


def test_committed_motion_includes_the_hold_until_the_answer_is_expected():
    longer = committed_motion(curved_trajectory(), NOW, STEP, 0.85, 0.0, "base_link")
    assert longer.rows.shape == (9, 7)
    np.testing.assert_allclose(longer.rows[6:, :6], 0.0, atol=1e-12)
    np.testing.assert_array_equal(longer.rows[6:, 6], 0.0)  # the last command, closed
    holding = committed_motion(Hold(Pose.make([0.4, 0, 0.3]), NOW, 1.0), NOW, STEP, 0.2, 0.0, "b")
    np.testing.assert_allclose(holding.rows, [[0, 0, 0, 0, 0, 0, 1.0]] * 2, atol=1e-12)
    # Nothing known yet: no gripper command, no chunk time step, no motion.
    assert committed_motion(Hold(Pose.make([0.4, 0, 0.3]), NOW), NOW, STEP, 0.2, 0.0, "b").rows.shape == (0, 7)
    no_step_yet = committed_motion(Hold(Pose.make([0.4, 0, 0.3]), NOW, 1.0), NOW, 0.0, 0.2, 0.0, "b")
    assert no_step_yet.rows.shape == (0, 7)
    assert committed_motion(None, NOW, STEP, 0.2, 0.0, "b").rows.shape == (0, 7)


@pytest.mark.parametrize("capture_delay_ms", [0, 30, 70])
def test_prefix_integrated_from_the_capture_pose_lands_on_the_committed_motion(capture_delay_ms):
    trajectory = curved_trajectory()
    request = committed_motion(trajectory, NOW, STEP, 0.25, 0.0, "base_link")
    capture = NOW + capture_delay_ms * 1_000_000
    prefix = prefix_for_capture(request, capture, chunk_rows=6, time_step=STEP, dim_names=PREFIX_DIMS)
    assert prefix is not None
    due = capture + (np.arange(6) + 1) * STEP_NS
    expected_rows = int(np.sum(due <= NOW + 6 * STEP_NS))
    assert prefix.actions.shape == (expected_rows, 7)
    assert prefix.inference_delay_rows == 2  # rows due at capture + 0.1 and + 0.2 <= capture + 0.25
    # Executed as an answer's rows are (anchored at the pose at capture), the prefix follows the old motion.
    targets = apply_deltas(trajectory.sample(capture), prefix.actions[:, :6])
    for row, target in enumerate(targets):
        reference = trajectory.sample(int(due[row]))
        np.testing.assert_allclose(target.position, reference.position, atol=1e-9)
        assert rotation_angle(target.quaternion, reference.quaternion) < 1e-6
        assert prefix.actions[row, 6] == trajectory.gripper(int(due[row]) - 1)


def test_prefix_follows_the_policys_dimension_order_and_offset():
    request = committed_motion(curved_trajectory(), NOW, STEP, 0.0, 0.2, "base_link")
    names = ("gripper", *PREFIX_DIMS[:6])
    prefix = prefix_for_capture(request, NOW, chunk_rows=6, time_step=STEP, dim_names=names)
    assert prefix is not None and prefix.actions.shape == (4, 7)  # rows due at 0.3 .. 0.6 s
    assert prefix.inference_delay_rows == 0
    np.testing.assert_array_equal(prefix.actions[:, 0], [1, 0, 0, 0])
    # Row 0 spans capture -> its due time 0.3 s later: the first three steps of the old motion.
    assert prefix.actions[0, 1] == pytest.approx(0.002 + 0.004 + 0.006)


def test_prefix_is_none_when_nothing_can_be_continued():
    request = committed_motion(curved_trajectory(), NOW, STEP, 0.25, 0.0, "base_link")
    before_the_request = prefix_for_capture(request, NOW - 1, 6, STEP, PREFIX_DIMS)
    after_the_motion = prefix_for_capture(request, NOW + 550_000_000, 6, STEP, PREFIX_DIMS)
    holding = committed_motion(None, NOW, STEP, 0.25, 0.0, "base_link")
    assert before_the_request is None and after_the_motion is None
    assert prefix_for_capture(holding, NOW, 6, STEP, PREFIX_DIMS) is None
    with pytest.raises(ValueError, match=r"the policy has \['elbow'\]"):
        prefix_for_capture(request, NOW, 6, STEP, (*PREFIX_DIMS, "elbow"))


def test_chunk_request_round_trip_and_specific_refusals():
    motion = committed_motion(curved_trajectory(), NOW, STEP, 0.31, 0.05, "base_link")
    back = from_msg(to_msg(motion))
    assert (back.origin_ns, back.frame_id, back.time_step) == (NOW, "base_link", STEP)
    assert (back.inference_delay, back.execute_offset) == (0.31, 0.05)
    np.testing.assert_allclose(back.rows, motion.rows, atol=1e-7)
    msg = to_msg(motion)
    msg.dim_names = [*PREFIX_DIMS[1:], PREFIX_DIMS[0]]
    msg.actions = np.roll(np.asarray(msg.actions, dtype=np.float32).reshape(6, 7), -1, axis=1).ravel().tolist()
    np.testing.assert_allclose(from_msg(msg).rows, motion.rows, atol=1e-7)  # reordered by name
    msg.dim_names = ["x" * 500, *PREFIX_DIMS[1:]]
    with pytest.raises(ValueError, match=r"dim_names must be a permutation") as error:
        from_msg(msg)
    assert len(str(error.value)) < 300  # bounded, whatever the sender put in
    msg = to_msg(motion)
    msg.actions = msg.actions[:-1]
    with pytest.raises(ValueError, match=r"rows x dims = 6 x 7"):
        from_msg(msg)
    msg = to_msg(motion)
    msg.inference_delay = -1.0
    with pytest.raises(ValueError, match=r"ChunkRequest: committed motion inference_delay must be >= 0"):
        from_msg(msg)
    empty = from_msg(to_msg(CommittedMotion(NOW, "base_link", np.zeros((0, 7)), 0.0, 0.0, 0.0)))
    assert empty.rows.shape == (0, 7)


def test_delay_estimate_is_an_ema_that_ignores_impossible_samples():
    estimate = DelayEstimate(smoothing=0.5)
    assert estimate.seconds == 0.0
    estimate.update(0.4)
    estimate.update(0.6)
    estimate.update(float("nan"))
    estimate.update(-1.0)
    assert estimate.seconds == pytest.approx(0.5)
    with pytest.raises(ValueError, match="smoothing"):
        DelayEstimate(smoothing=0.0)
