"""Chunk deltas -> timed absolute targets -> interpolated, blended motion; pose history; stream statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transforms3d.euler import euler2mat

from videovla_ros.trajectory import (
    Blend,
    Hold,
    Pose,
    PoseHistory,
    PoseLookupError,
    StreamStats,
    Trajectory,
    Waypoint,
    apply_deltas,
    drop_late,
    interpolate_pose,
    quintic_weight,
    rotation_angle,
    row_due_times_ns,
    settle,
    slerp,
    switch_to,
)

S = 1_000_000_000
IDENTITY = (1.0, 0.0, 0.0, 0.0)


def rz(angle: float) -> np.ndarray:
    return euler2mat(0.0, 0.0, angle, "sxyz")


def test_deltas_accumulate_per_step_in_the_base_frame():
    start = Pose.from_matrix((0.3, 0.0, 0.4), rz(math.pi / 2))
    deltas = np.array(
        [
            [0.01, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.02, -0.005, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, math.pi / 2, 0.0, 0.0],  # roll about the BASE x axis
        ]
    )
    targets = apply_deltas(start, deltas)
    np.testing.assert_allclose(
        [t.position for t in targets], [[0.31, 0, 0.4], [0.31, 0.02, 0.395], [0.31, 0.02, 0.395]]
    )
    np.testing.assert_allclose(targets[1].rotation, rz(math.pi / 2), atol=1e-12)
    # Base-frame delta: R = Rx(90) @ Rz(90) sends the tool x axis to base z (a tool-frame delta would give base y).
    np.testing.assert_allclose(targets[2].rotation @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize(
    ("position", "quaternion"),
    [
        ((0.3, 0.0, 0.4), (1.0, 0.0, 0.0, 0.0)),
        ((-0.1, 0.2, 0.05), (0.2, -0.4, 0.1, 0.9)),  # not unit length: normalised
        ((0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5)),  # w < 0: flipped to w >= 0
        ((1.0, 2.0, 3.0), (0.0, 0.0, -2.0, 0.0)),  # w == 0
    ],
)
def test_pose_from_floats_is_make_for_plain_numbers(position, quaternion):
    fast, reference = Pose.from_floats(*position, *quaternion), Pose.make(position, quaternion)
    np.testing.assert_allclose(fast.position, reference.position, rtol=0, atol=0)
    np.testing.assert_allclose(fast.quaternion, reference.quaternion, rtol=1e-15, atol=1e-16)
    assert fast.position.dtype == fast.quaternion.dtype == np.float64


@pytest.mark.parametrize(
    "values",
    [(math.nan, 0, 0, 1, 0, 0, 0), (0, 0, math.inf, 1, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0), (0, 0, 0, math.nan, 0, 0, 0)],
)
def test_pose_from_floats_refuses_what_make_refuses(values):
    with pytest.raises(ValueError, match="pose must be finite with a non-zero quaternion"):
        Pose.from_floats(*values)


def test_row_i_is_due_one_step_after_its_state():
    np.testing.assert_array_equal(row_due_times_ns(5 * S, 0.1, 3), [5_100_000_000, 5_200_000_000, 5_300_000_000])
    np.testing.assert_array_equal(row_due_times_ns(5 * S, 0.1, 2, offset=1.2), [6_300_000_000, 6_400_000_000])


def test_rows_whose_time_has_passed_are_dropped():
    pose = Pose.make((0, 0, 0))
    waypoints = [Waypoint(due_ns=t, pose=pose, gripper=1.0, row=i) for i, t in enumerate((10, 20, 30))]
    kept, late = drop_late(waypoints, now_ns=20)
    assert [w.row for w in kept] == [2] and [w.row for w in late] == [0, 1]


def test_slerp_takes_the_short_way_and_hits_the_midpoint():
    q0, q1 = Pose.make((0, 0, 0)).quaternion, Pose.from_matrix((0, 0, 0), rz(math.pi / 2)).quaternion
    middle = slerp(q0, -q1, 0.5)  # the same rotation with the other sign must not go the long way round
    np.testing.assert_allclose(Pose.make((0, 0, 0), middle).rotation, rz(math.pi / 4), atol=1e-12)
    assert rotation_angle(q0, q1) == pytest.approx(math.pi / 2)


def make_trajectory() -> Trajectory:
    start = Pose.make((0.0, 0.0, 0.0))
    return Trajectory(
        start_ns=0,
        start=start,
        waypoints=(
            Waypoint(due_ns=S // 10, pose=Pose.from_matrix((0.01, 0, 0), rz(0.2)), gripper=1.0, row=0),
            Waypoint(due_ns=2 * S // 10, pose=Pose.from_matrix((0.01, 0.02, 0), rz(0.2)), gripper=0.0, row=1),
        ),
    )


def test_trajectory_interpolates_then_holds_the_last_target():
    trajectory = make_trajectory()
    half = trajectory.sample(S // 20)
    np.testing.assert_allclose(half.position, [0.005, 0, 0])
    np.testing.assert_allclose(half.rotation, rz(0.1), atol=1e-12)
    np.testing.assert_allclose(trajectory.sample(150_000_000).position, [0.01, 0.01, 0])
    np.testing.assert_allclose(trajectory.sample(10 * S).position, [0.01, 0.02, 0])
    np.testing.assert_allclose(trajectory.sample(-5).position, [0, 0, 0])
    assert trajectory.gripper(50_000_000) == 1.0 and trajectory.gripper(150_000_000) == 0.0
    assert trajectory.gripper(10 * S) == 0.0 and trajectory.end_ns() == 2 * S // 10


def test_trajectory_rejects_knots_out_of_order():
    pose = Pose.make((0, 0, 0))
    with pytest.raises(ValueError, match="increase strictly"):
        Trajectory(start_ns=10, start=pose, waypoints=(Waypoint(due_ns=10, pose=pose, gripper=1.0, row=0),))


def line(start_ns: int, origin: tuple[float, float, float], velocity: tuple[float, float, float]) -> Trajectory:
    """A straight line at constant velocity [m/s] for 1 s."""
    origin_pose = Pose.make(origin)
    end = Pose.make(np.asarray(origin) + np.asarray(velocity))
    return Trajectory(start_ns=start_ns, start=origin_pose, waypoints=(Waypoint(start_ns + S, end, 1.0, 0),))


def velocity(motion: object, t_ns: int, h_ns: int = 100_000) -> np.ndarray:
    return (motion.sample(t_ns + h_ns).position - motion.sample(t_ns - h_ns).position) / (2 * h_ns / S)


def test_blended_switch_keeps_position_and_velocity_continuous():
    old = line(0, (0.0, 0.0, 0.0), (0.1, 0.0, 0.0))
    switch_ns = S // 2
    new = line(switch_ns, tuple(old.sample(switch_ns).position), (0.0, 0.1, 0.0))
    blended = switch_to(old, new, switch_ns, blend_duration_ns=200_000_000)
    np.testing.assert_allclose(blended.sample(switch_ns).position, old.sample(switch_ns).position)
    np.testing.assert_allclose(velocity(blended, switch_ns + 200_000), [0.1, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(velocity(blended, switch_ns + 200_000_000 - 200_000), [0.0, 0.1, 0.0], atol=1e-4)
    # No jump anywhere: the fastest 1 ms step stays near the motions' 0.1 m/s (the blend adds a bounded
    # catch-up term w'(new - old) because the old motion keeps going while it fades out).
    times = np.arange(switch_ns - 10_000_000, switch_ns + 300_000_000, 1_000_000)
    positions = np.array([blended.sample(int(t)).position for t in times])
    speeds = np.linalg.norm(np.diff(positions, axis=0), axis=1) / 1e-3
    assert speeds.max() < 0.2
    # Without blending the same switch turns the velocity by 90 degrees at once.
    hard = switch_to(old, new, switch_ns, blend_duration_ns=0)
    np.testing.assert_allclose(velocity(hard, switch_ns + 200_000), [0.0, 0.1, 0.0], atol=1e-4)


def test_quintic_weight_is_flat_at_both_ends():
    assert quintic_weight(0.0) == 0.0 and quintic_weight(1.0) == 1.0 and quintic_weight(0.5) == pytest.approx(0.5)
    assert quintic_weight(1e-3) < 1e-8 and 1.0 - quintic_weight(1 - 1e-3) < 1e-8
    assert quintic_weight(-1.0) == 0.0 and quintic_weight(2.0) == 1.0


def test_finished_blends_are_settled_away():
    hold = Hold(Pose.make((0, 0, 0)))
    newer = Hold(Pose.make((1, 0, 0)))
    blend = Blend(previous=hold, current=newer, start_ns=0, duration_ns=10)
    assert settle(blend, 5) is blend and settle(blend, 10) is newer
    nested = switch_to(blend, Hold(Pose.make((2, 0, 0))), now_ns=20, blend_duration_ns=10)
    assert nested.previous is newer


def test_pose_history_interpolates_at_the_capture_stamp():
    history = PoseHistory(duration_s=1.0, max_extrapolation_s=0.05)
    with pytest.raises(PoseLookupError, match="no robot state received yet"):
        history.lookup(S)
    history.add(S, Pose.make((0.0, 0, 0)))
    history.add(S + 10_000_000, Pose.from_matrix((0.01, 0, 0), rz(0.1)))
    assert not history.add(S + 5_000_000, Pose.make((9, 9, 9)))  # out of order: ignored
    middle = history.lookup(S + 2_500_000)
    np.testing.assert_allclose(middle.position, [0.0025, 0, 0])
    np.testing.assert_allclose(middle.rotation, rz(0.025), atol=1e-12)
    np.testing.assert_allclose(history.lookup(S + 40_000_000).position, [0.01, 0, 0])
    with pytest.raises(PoseLookupError, match=r"newest robot state is 0\.090 s older than the stamp"):
        history.lookup(S + 100_000_000)
    with pytest.raises(PoseLookupError, match=r"0\.500 s older than the oldest robot state"):
        history.lookup(S - 500_000_000)


def test_pose_history_forgets_old_samples():
    history = PoseHistory(duration_s=1.0, max_extrapolation_s=0.05)
    for k in range(30):
        history.add(k * 100_000_000, Pose.make((k, 0, 0)))
    with pytest.raises(PoseLookupError, match="older than the oldest"):
        history.lookup(1_500_000_000)
    np.testing.assert_allclose(history.lookup(2_500_000_000).position, [25, 0, 0])


def test_stream_stats_rate_jitter_and_idle_fraction():
    stats = StreamStats(window=5)
    for k, (t, idle) in enumerate([(0, False), (10, True), (21, True), (30, False), (41, False), (50, False)]):
        stats.record(t * 1_000_000, idle)
        assert stats.ticks == k + 1
    np.testing.assert_allclose(stats.periods_s(), [0.011, 0.009, 0.011, 0.009])
    assert stats.rate_hz() == pytest.approx(100.0)
    assert stats.jitter_s() == pytest.approx(0.001)
    assert stats.max_period_s() == pytest.approx(0.011)
    assert stats.idle_fraction() == pytest.approx(2 / 6)


def test_pose_rejects_non_finite_values():
    with pytest.raises(ValueError, match="finite"):
        Pose.make((math.nan, 0, 0))
    with pytest.raises(ValueError, match="non-zero quaternion"):
        Pose.make((0, 0, 0), (0, 0, 0, 0))
    assert interpolate_pose(Pose.make((0, 0, 0)), Pose.make((1, 0, 0)), 0.25).position[0] == 0.25
