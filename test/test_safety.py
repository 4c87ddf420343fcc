"""Every safety rule of the arm bridge blocks what it should, with a reason that names the limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transforms3d.euler import euler2axangle

from videovla_ros.safety import (
    ArmState,
    Decision,
    EnableStateMachine,
    SafetyLimits,
    Watchdog,
    check_chunk_stamp,
    clamp_steps,
    clamp_to_workspace,
    enable_preconditions,
    exceeding,
    gripper_command,
    in_workspace,
    limit_speed,
    stream_command,
)
from videovla_ros.trajectory import Pose, rotation_angle

S = 1_000_000_000
LIMITS = SafetyLimits(
    workspace_min=(-0.5, -0.5, 0.0),
    workspace_max=(0.5, 0.5, 0.6),
    max_step_translation=0.02,
    max_step_rotation=0.1,
    max_linear_speed=0.2,
    max_angular_speed=1.0,
    max_chunk_age=1.5,
    max_clock_skew=0.1,
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"workspace_min": (0.0, 0.0, 0.0), "workspace_max": (1.0, 0.0, 1.0)}, "must be below workspace_max"),
        ({"workspace_min": (0.0, 0.0)}, "workspace_min must be 3 finite numbers"),
        ({"max_linear_speed": -1.0}, "max_linear_speed must be a positive finite number, got -1.0"),
        ({"state_watchdog": math.inf}, "state_watchdog must be a positive finite number"),
        ({"gripper_threshold": 1.0}, "gripper_threshold must be in (0, 1), got 1.0"),
        ({"max_clock_skew": -0.1}, "max_clock_skew must be >= 0 s"),
    ],
)
def test_bad_limits_are_refused_with_the_field_named(overrides, message):
    with pytest.raises(ValueError) as error:
        SafetyLimits(**overrides)
    assert message in str(error.value)


def test_stale_future_and_reordered_chunks_are_refused():
    now = 100 * S
    assert check_chunk_stamp(now - S, now, None, LIMITS).allowed
    stale = check_chunk_stamp(now - 2 * S, now, None, LIMITS)
    assert not stale.allowed and "stale: captured 2 s ago (max_chunk_age 1.5 s)" in stale.reason
    future = check_chunk_stamp(now + S // 2, now, None, LIMITS)
    assert not future.allowed and "0.5 s in the future (max_clock_skew 0.1 s)" in future.reason
    assert check_chunk_stamp(now + S // 20, now, None, LIMITS).allowed  # within the clock skew
    reordered = check_chunk_stamp(now - S, now, now - S, LIMITS)
    assert not reordered.allowed and "out of order" in reordered.reason


def test_step_clamp_bounds_translation_and_rotation_keeping_direction():
    deltas = np.array(
        [
            [0.03, 0.04, 0.0, 0.0, 0.0, 0.0],  # 5 cm -> 2 cm
            [0.001, 0.0, 0.0, 0.0, 0.0, 0.05],  # within limits: unchanged
            [0.0, 0.0, 0.0, 0.3, 0.0, -0.4],  # ~0.5 rad (Euler angles compose) -> 0.1 rad, same axis
        ]
    )
    clamped, reasons = clamp_steps(deltas, LIMITS)
    np.testing.assert_allclose(clamped[0, :3], [0.012, 0.016, 0.0])
    np.testing.assert_array_equal(clamped[1], deltas[1])
    axis_before, _ = euler2axangle(*deltas[2, 3:], "sxyz")
    axis_after, angle_after = euler2axangle(*clamped[2, 3:], "sxyz")
    assert angle_after == pytest.approx(0.1)
    np.testing.assert_allclose(axis_after, axis_before, atol=1e-9)
    assert reasons == [
        "row 0: translation step 0.05 m clamped to max_step_translation 0.02 m",
        "row 2: rotation step 0.499 rad clamped to max_step_rotation 0.1 rad",
    ]


def test_workspace_box_blocks_and_projects():
    assert in_workspace((0.1, 0.2, 0.3), LIMITS).allowed
    outside = in_workspace((0.7, 0.0, -0.1), LIMITS)
    assert not outside.allowed and "outside the workspace box" in outside.reason
    pose = Pose.make((0.7, 0.0, -0.1), (0.0, 1.0, 0.0, 0.0))
    clamped, reason = clamp_to_workspace(pose, LIMITS)
    np.testing.assert_allclose(clamped.position, [0.5, 0.0, 0.0])
    np.testing.assert_allclose(clamped.quaternion, pose.quaternion)
    assert "clamped to [0.5, 0.0, 0.0]" in reason
    inside = Pose.make((0.1, 0.1, 0.1))
    assert clamp_to_workspace(inside, LIMITS) == (inside, None)


def test_speed_limit_bounds_linear_and_angular_motion():
    start = Pose.make((0.0, 0.0, 0.3))
    far = Pose.make((0.1, 0.0, 0.3), (math.cos(0.25), 0.0, 0.0, math.sin(0.25)))  # 10 cm and 0.5 rad away
    limited, reason = limit_speed(start, far, dt=0.01, limits=LIMITS)
    np.testing.assert_allclose(limited.position, [0.002, 0.0, 0.3])
    assert rotation_angle(start.quaternion, limited.quaternion) == pytest.approx(0.01)
    assert "linear speed 10 m/s > max_linear_speed 0.2 m/s" in reason
    assert "angular speed 50 rad/s > max_angular_speed 1 rad/s" in reason
    near = Pose.make((0.001, 0.0, 0.3))
    assert limit_speed(start, near, dt=0.01, limits=LIMITS) == (near, None)
    held, reason = limit_speed(start, far, dt=0.0, limits=LIMITS)
    assert held is start and "non-positive time step" in reason


def test_stream_command_limits_reports_and_flags_a_standing_arm():
    start = Pose.make((0.0, 0.0, 0.3))
    assert stream_command(None, start, dt=0.0, limits=LIMITS) == (start, None, False)  # the first command
    assert stream_command(start, start, dt=0.01, limits=LIMITS) == (start, None, True)  # a held pose
    same_place = Pose.make((0.0, 0.0, 0.3))  # another object, the same pose: still idle
    assert stream_command(start, same_place, dt=0.01, limits=LIMITS) == (same_place, None, True)
    near = Pose.make((0.001, 0.0, 0.3))
    assert stream_command(start, near, dt=0.01, limits=LIMITS) == (near, None, False)
    limited, reason, idle = stream_command(start, Pose.make((0.1, 0.0, 0.3)), dt=0.01, limits=LIMITS)
    np.testing.assert_allclose(limited.position, [0.002, 0.0, 0.3])
    assert "linear speed 10 m/s > max_linear_speed 0.2 m/s" in reason and not idle


def test_gripper_is_thresholded_and_out_of_range_values_reported():
    assert gripper_command(0.7, LIMITS) == (1.0, None)
    assert gripper_command(0.2, LIMITS) == (0.0, None)
    assert gripper_command(0.5, LIMITS) == (1.0, None)
    value, reason = gripper_command(-3.0, LIMITS)
    assert value == 0.0 and reason == "gripper value -3.0000 outside [0, 1]; clipped"


def test_watchdog_trips_once_per_silence_and_rearms():
    dog = Watchdog("chunk watchdog", timeout_s=1.0)
    assert dog.check(100 * S).allowed  # never fed: disarmed
    dog.feed(0)
    assert dog.check(S).allowed
    first = dog.check(S + 1)
    assert not first.allowed and first.reason == "chunk watchdog: silent for 1.000000001 s (limit 1 s)"
    assert dog.tripped and dog.check(5 * S).allowed  # reported once
    dog.feed(5 * S)
    assert not dog.tripped and not dog.check(7 * S).allowed
    dog.disarm()
    assert dog.check(100 * S).allowed


def test_enable_state_machine_starts_disabled_and_latches_the_estop():
    machine = EnableStateMachine()
    assert machine.state is ArmState.DISABLED and not machine.enabled
    refused = machine.request_enable([Decision.allow(), Decision.deny("no robot state received yet")])
    assert not refused.allowed and refused.reason == "cannot enable: no robot state received yet"
    assert machine.request_enable([Decision.allow()]).reason == "enabled (was disabled)"
    assert machine.request_enable([]).reason == "already enabled"

    stopped = machine.estop(True)
    assert not stopped.allowed and machine.state is ArmState.ESTOPPED
    held = machine.request_enable([])
    assert not held.allowed and "e-stop is asserted" in held.reason
    released = machine.estop(False)
    assert released.allowed and "call ~/enable" in released.reason and machine.state is ArmState.ESTOPPED
    assert machine.disable("operator").reason.startswith("already e-stopped")
    assert machine.request_enable([]).reason == "enabled (was estopped)"
    assert machine.disable("operator").reason == "disabled: operator" and not machine.enabled


def test_a_limit_message_never_contradicts_itself():
    assert exceeding(0.2500001, 0.25) == ("0.2500001", "0.25")
    assert exceeding(0.31, 0.25) == ("0.31", "0.25")
    just_over = Pose.make((0.0025001, 0.0, 0.3))  # 0.25001 m/s over 10 ms
    _, reason = limit_speed(Pose.make((0.0, 0.0, 0.3)), just_over, dt=0.01, limits=SafetyLimits())
    assert reason == "linear speed 0.25001 m/s > max_linear_speed 0.25 m/s"


def test_a_silence_is_logged_once_however_often_the_watchdog_is_restarted():
    dog = Watchdog("chunk watchdog", timeout_s=1.0)
    dog.feed(0)
    assert not dog.check(2 * S).allowed and dog.silences == 1
    dog.restart(2 * S)  # asked the policy again: still silent
    assert not dog.check(4 * S).allowed and dog.silences == 2
    dog.feed(4 * S)  # a chunk: the silence is over
    assert dog.silences == 0 and not dog.check(6 * S).allowed and dog.silences == 1


def test_enable_names_the_state_topic_it_waits_on():
    (missing,) = enable_preconditions(None, 10 * S, LIMITS, "/rm_driver/udp_arm_position")
    assert missing.reason == "no robot state received yet on '/rm_driver/udp_arm_position'"
    (old,) = enable_preconditions((9 * S, Pose.make((0.0, 0.0, 0.3))), 10 * S, LIMITS, "/ee_pose")
    assert old.reason == "robot state on '/ee_pose' is 1 s old (state_watchdog 0.5 s)"
    (outside,) = enable_preconditions((10 * S, Pose.make((0.0, 0.0, 0.9))), 10 * S, LIMITS, "/ee_pose")
    assert not outside.allowed and outside.reason.startswith("end-effector position [0.0, 0.0, 0.9] m is outside")
    assert enable_preconditions((10 * S, Pose.make((0.0, 0.0, 0.3))), 10 * S, LIMITS, "/ee_pose")[0].allowed
