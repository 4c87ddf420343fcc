"""The arm bridge node over real DDS: expected targets, every safety rule, bad inputs, async continuity."""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pytest
from bridge_harness import BridgeHarness, S, make_chunk, positions, stamps_s, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_process import ros_context
from std_msgs.msg import Bool, Header

from videovla_ros.action_chunk import ns_to_time, time_to_ns
from videovla_ros.arm_bridge_node import ArmBridgeNode
from videovla_ros.backends import (
    BackendConfigError,
    BackendParams,
    BackendUnavailableError,
    MoveItPyParams,
    ServoParams,
    make_backend,
)
from videovla_ros.backends.realman import gripper_position
from videovla_ros.backends.servo import twist_between
from videovla_ros.safety import ArmState
from videovla_ros.trajectory import Pose

_names = (f"t{k}" for k in itertools.count())

# Rows 3..5 are never executed in sync mode (execute_rows = 3); they are large so that executing them shows.
KNOWN_CHUNK = np.array(
    [
        [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 0.01, 0.0, 0.0, 0.0, 0.05, 1.0],
        [0.0, 0.0, -0.01, 0.0, 0.0, 0.0, 0.0],
        [0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


@pytest.fixture
def context():
    with ros_context() as ros:
        yield ros


@pytest.fixture
def make_harness(context):
    made = []

    def make(**kwargs) -> BridgeHarness:
        harness = BridgeHarness(context, f"/{next(_names)}", **kwargs)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def test_starts_disabled_ignores_chunks_and_refuses_enable_without_state(make_harness):
    h = make_harness(dry_run=True, publish_state=False)
    assert h.bridge.state is ArmState.DISABLED
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, h.now_ns()))
    h.wait_counter("chunks_ignored_disabled", 1)
    refused = h.enable()
    assert not refused.success
    assert refused.message == f"cannot enable: no robot state received yet on '{h.bridge.get_namespace()}/ee_pose'"
    assert h.snapshot(h.targets) == [] and h.snapshot(h.requests) == []


def test_dry_run_streams_the_expected_targets_of_a_known_chunk(make_harness):
    # Speed limits out of the way (tested on their own): a tick delayed by a loaded CPU must sample the path,
    # not cut a corner.
    h = make_harness(
        dry_run=True, execution_mode="sync", blend_duration=0.0, max_linear_speed=5.0, max_angular_speed=50.0
    )
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    response = h.enable()
    assert response.success, response.message
    wait_for(lambda: len(h.snapshot(h.requests)) == 1, 5.0, "the first chunk_request")
    capture_ns = time_to_ns(h.snapshot(h.requests)[0].stamp)
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, capture_ns))
    h.wait_counter("chunks_accepted", 1)
    # The next request goes out at once, stamped when the 3 executed rows (0.1 s apart) end.
    wait_for(lambda: len(h.snapshot(h.requests)) == 2, 5.0, "the chunk_request for the end of execute_rows")
    rows_end_ns = time_to_ns(h.snapshot(h.requests)[1].stamp)
    assert rows_end_ns - capture_ns >= 300_000_000
    wait_for(lambda: h.now_ns() > rows_end_ns + 100_000_000, 5.0, "the executed rows' end")

    targets = h.snapshot(h.targets)
    final = targets[-1].pose
    # T_2 = start + rows 0..2 (per-step, base frame): (0.3, 0, 0.4) + (0.01, 0.01, -0.01), yaw 0.05.
    np.testing.assert_allclose([final.position.x, final.position.y, final.position.z], [0.31, 0.01, 0.39], atol=1e-6)
    np.testing.assert_allclose(
        [final.orientation.w, final.orientation.x, final.orientation.y, final.orientation.z],
        [math.cos(0.025), 0.0, 0.0, math.sin(0.025)],
        atol=1e-9,
    )
    xyz = positions(targets)
    assert xyz[:, 0].max() <= 0.31 + 1e-9, "rows beyond execute_rows were executed"
    # Every streamed target lies on the piecewise-linear path start -> T_0 -> T_1 -> T_2.
    knots = np.array([[0.3, 0, 0.4], [0.31, 0, 0.4], [0.31, 0.01, 0.4], [0.31, 0.01, 0.39]])
    distances = [min(_distance_to_segment(p, a, b) for a, b in itertools.pairwise(knots)) for p in xyz]
    assert max(distances) < 1e-9
    # Dry run: nothing reached the arm's command topics.
    assert h.snapshot(h.commands) == [] and h.snapshot(h.grippers) == []


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def test_commands_reach_the_pose_stream_backend_and_the_simulated_arm_follows(make_harness):
    h = make_harness(execution_mode="async", follow=True, latency_compensation=0.05)
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, h.now_ns()))
    h.wait_counter("chunks_accepted", 1)
    # async executes all six rows: x = 0.3 + 0.01 + 3 * 0.02.
    wait_for(lambda: abs(h.arm.pose.position.x - 0.37) < 1e-6, 5.0, "the arm at the chunk's last target")
    assert h.snapshot(h.grippers) == [1.0, 0.0]
    assert h.snapshot(h.requests) == []  # async mode never requests


@pytest.mark.parametrize(
    ("counter", "msg_factory", "reason"),
    [
        ("chunks_rejected_malformed", lambda now: make_chunk(KNOWN_CHUNK, now, actions=[math.nan] * 42), "NaN"),
        ("chunks_rejected_malformed", lambda now: make_chunk(KNOWN_CHUNK, now, actions=[0.0] * 41), "41 values"),
        (
            "chunks_rejected_malformed",
            lambda now: make_chunk(KNOWN_CHUNK, now, dim_names=["dx", "dy", "dz", "rx", "ry", "rz", "gripper"]),
            "lacks required dimensions",
        ),
        ("chunks_rejected_frame", lambda now: make_chunk(KNOWN_CHUNK, now, header=_header(now, "camera")), "frame"),
        ("chunks_rejected_timing", lambda now: make_chunk(KNOWN_CHUNK, now - 3 * S), "stale"),
        ("chunks_rejected_timing", lambda now: make_chunk(KNOWN_CHUNK, now + 2 * S), "in the future"),
        ("chunks_rejected_late", lambda now: make_chunk(KNOWN_CHUNK, now - 700_000_000), "already due"),
    ],
)
def test_bad_chunks_are_rejected_and_the_bridge_keeps_serving(make_harness, counter, msg_factory, reason):
    h = make_harness(dry_run=True, execution_mode="async", max_chunk_age=2.0)
    h.wait_history(0.8)  # the late chunk's capture stamp must still be in the pose history
    assert h.enable().success
    h.chunk_pub.publish(msg_factory(h.now_ns()))
    h.wait_counter(counter, 1)
    assert reason in h.bridge.diagnostics.gauge("last_rejection")
    assert h.counter("chunks_accepted") == 0
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, h.now_ns(), sequence=1))
    h.wait_counter("chunks_accepted", 1)
    assert h.bridge.state is ArmState.ENABLED


def _last_x(messages: list) -> float:
    return positions(messages[-1:])[0, 0] if messages else float("nan")


def _header(now_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_time(now_ns), frame_id=frame_id)


def test_steps_are_clamped_and_targets_kept_in_the_workspace(make_harness):
    h = make_harness(
        dry_run=True,
        execution_mode="async",
        workspace_max=[0.32, 0.8, 1.0],
        max_step_translation=0.02,
        max_linear_speed=1.0,
    )
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    big = np.zeros((6, 7))
    big[:, 0] = 0.05  # 5 cm per row: clamped to 2 cm, and x leaves the box at 0.32 after one row
    h.chunk_pub.publish(make_chunk(big, h.now_ns()))
    h.wait_counter("chunks_accepted", 1)
    assert h.counter("rows_step_clamped") == 6
    assert h.counter("rows_workspace_clamped") == 5
    wait_for(lambda: abs(_last_x(h.snapshot(h.targets)) - 0.32) < 1e-9, 5.0, "the target at the wall")
    assert positions(h.snapshot(h.targets))[:, 0].max() <= 0.32 + 1e-12


def test_chunk_silence_trips_the_watchdog_and_sync_mode_asks_again(make_harness):
    h = make_harness(dry_run=True, execution_mode="sync", chunk_watchdog=0.3)
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    h.wait_counter("watchdog_chunk_trips", 2, timeout=5.0)
    # The first request and one per trip (they reach the peer a moment after the counter moves).
    wait_for(lambda: len(h.snapshot(h.requests)) >= 3, 5.0, "a chunk_request per watchdog trip")
    assert h.bridge.state is ArmState.ENABLED  # a silent policy holds the arm; it does not disable it


def test_state_silence_stops_and_disables(make_harness):
    h = make_harness(execution_mode="async", state_watchdog=0.2)
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    h.publish_state = False
    h.wait_counter("watchdog_state_trips", 1)
    assert h.bridge.state is ArmState.DISABLED
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, h.now_ns()))
    h.wait_counter("chunks_ignored_disabled", 1)


def test_estop_stops_latches_and_needs_release_and_enable(make_harness):
    h = make_harness(execution_mode="async", latency_compensation=0.05)
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    h.chunk_pub.publish(make_chunk(KNOWN_CHUNK, h.now_ns()))
    h.wait_counter("chunks_accepted", 1)
    # Moving (commands beyond x = 0.305), so the stop command (the measured, unmoved x = 0.3) stands out.
    wait_for(lambda: _last_x(h.snapshot(h.commands)) > 0.305, 5.0, "streamed commands")
    h.estop_pub.publish(Bool(data=True))
    h.wait_counter("estop_events", 1)
    assert h.bridge.state is ArmState.ESTOPPED
    # The pose_stream stop: the measured pose (the arm never moved: no follow) is commanded.
    wait_for(lambda: positions(h.snapshot(h.commands)[-1:])[0, 0] == pytest.approx(0.3, abs=1e-9), 2.0, "the stop")
    count = len(h.snapshot(h.commands))
    refused = h.enable()
    assert not refused.success and "e-stop is asserted" in refused.message
    assert len(h.snapshot(h.commands)) == count  # nothing streamed while e-stopped
    h.estop_pub.publish(Bool(data=False))
    wait_for(lambda: not h.bridge._machine.estop_asserted, 5.0, "the e-stop release")
    assert h.bridge.state is ArmState.ESTOPPED
    assert h.enable().success and h.bridge.state is ArmState.ENABLED


def test_async_chunk_switch_is_continuous_within_the_speed_limit(make_harness):
    speed = 0.15
    h = make_harness(
        dry_run=True, execution_mode="async", blend_duration=0.15, max_linear_speed=speed, latency_compensation=0.0
    )
    wait_for(lambda: h.bridge._history.latest() is not None, 5.0, "robot state")
    assert h.enable().success
    along_x = np.zeros((6, 7))
    along_x[:, 0] = 0.01  # 0.1 m/s in +x
    h.chunk_pub.publish(make_chunk(along_x, h.now_ns(), sequence=0))
    h.wait_counter("chunks_accepted", 1)
    wait_for(lambda: _last_x(h.snapshot(h.targets)) > 0.33, 5.0, "motion along x")
    # The next chunk is anchored at the (unmoved, dry-run) arm pose and turns to +y: its targets lie off the
    # current path, the worst case for a switch.
    along_y = np.zeros((6, 7))
    along_y[:, 1] = 0.01
    h.chunk_pub.publish(make_chunk(along_y, h.now_ns(), sequence=1))
    h.wait_counter("chunks_accepted", 2)
    wait_for(lambda: h.bridge._motion is not None and h.now_ns() > h.bridge._motion.end_ns() + S // 5, 5.0, "the end")
    targets = h.snapshot(h.targets)
    xyz, t = positions(targets), stamps_s(targets)
    steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    # The limiter measures its own tick intervals; allow 2 ms of difference to the ROS stamps per step.
    assert np.all(steps <= speed * (np.diff(t) + 0.002) + 1e-9), f"jump of {steps.max():.4f} m"
    np.testing.assert_allclose(xyz[-1], [0.3, 0.06, 0.4], atol=1e-6)  # the second chunk's last target


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"execution_mode": "fast"}, "parameter execution_mode must be one of ['sync', 'async', 'rtc'], got 'fast'"),
        ({"backend": "ur5"}, "backend must be one of ['pose_stream', 'realman', 'servo', 'moveit_py'], got 'ur5'"),
        ({"workspace_min": [0.0, 0.0]}, "parameter workspace_min must be a list of 3 numbers"),
        ({"stream_rate_hz": "fast"}, "parameter stream_rate_hz must be a number > 0, got 'fast'"),
        ({"realman.stop_message_type": "int"}, "realman.stop_message_type must be one of ['bool', 'empty'], got 'int'"),
        ({"servo.command": "jog"}, "parameter servo.command must be one of ['twist', 'pose'], got 'jog'"),
        ({"max_linear_speed": 0}, "parameter max_linear_speed must be a number > 0, got 0"),
        ({"max_chunk_age": 10.0}, "history_duration (5.0 s) must exceed max_chunk_age (10.0 s)"),
    ],
)
def test_bad_parameters_fail_at_start_with_the_parameter_named(context, parameters, message):
    overrides = [Parameter(name, value=value) for name, value in parameters.items()]
    with pytest.raises(ValueError) as error:
        ArmBridgeNode(context=context, namespace=f"/{next(_names)}", parameter_overrides=overrides)
    assert message in str(error.value)


def test_backends_missing_packages_name_them(context, monkeypatch):
    node = Node("backend_probe", context=context, namespace=f"/{next(_names)}")
    try:
        with pytest.raises(BackendUnavailableError, match=r"needs the package moveit_py .*apt install"):
            make_backend("moveit_py", node, BackendParams(moveit_py=MoveItPyParams(pose_link="tool0")))
        monkeypatch.setitem(sys.modules, "rm_ros_interfaces", None)
        monkeypatch.setitem(sys.modules, "rm_ros_interfaces.msg", None)
        with pytest.raises(BackendUnavailableError, match=r"needs the package rm_ros_interfaces .*ros2_rm_robot"):
            make_backend("realman", node, BackendParams())
        with pytest.raises(BackendConfigError, match=r"servo\.command must be one of"):
            ServoParams(command="jog")
    finally:
        node.destroy_node()


def test_servo_twist_moves_the_previous_target_to_the_next():
    previous = Pose.make((0.3, 0.0, 0.4))
    target = Pose.make((0.301, -0.002, 0.4), (math.cos(0.005), 0.0, 0.0, math.sin(0.005)))  # yaw 0.01 rad
    linear, angular = twist_between(previous, target, 0.01)
    np.testing.assert_allclose(linear, [0.1, -0.2, 0.0], atol=1e-9)
    np.testing.assert_allclose(angular, [0.0, 0.0, 1.0], atol=1e-9)


def test_realman_gripper_scale():
    assert gripper_position(0.0) == 1 and gripper_position(1.0) == 1000 and gripper_position(0.5) == 500
    assert gripper_position(7.0) == 1000
