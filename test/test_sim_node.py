"""The simulated arm node over real DDS: camera and state out, pose targets in, refusals, reset; its pure parts."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_process import python_process, ros_context, spin_until
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.sim_arm_node import SimArmNode, config_from_parameters
from videovla_sim.realtime import NANOSECONDS_PER_SECOND, PeriodicEvent, PolicyPause, SimClock, SimulatedClock

NAMESPACE = "/sim_test"
CAMERA_FPS = 15.0
NODE_SOURCE = "from videovla_ros.sim_arm_node import main; main()"
PARAMS_YAML = f"""
/**/sim_arm:
  ros__parameters:
    task: "pick"
    seed: 3
    image_height: 40
    image_width: 48
    camera_fps: {CAMERA_FPS}
    state_rate_hz: 50.0
    success_rate_hz: 5.0
"""


# ---- pure parts ---------------------------------------------------------------------------------------


def test_sim_clock_maps_simulated_time_to_outside_time():
    clock = SimClock(start_ns=10 * NANOSECONDS_PER_SECOND, real_time_factor=2.0, max_lag=0.25)
    assert clock.to_outside_ns(1.0) == 10_500_000_000  # twice as fast: 1 simulated s in 0.5 s
    due, dropped = clock.due(now_ns=10_100_000_000, sim_seconds=0.0)
    assert due == pytest.approx(0.2) and dropped == 0.0
    # Far behind (5 simulated seconds): the clock skips ahead instead of racing, and says by how much.
    due, dropped = clock.due(now_ns=12_600_000_000, sim_seconds=0.2)
    assert due == pytest.approx(0.45) and dropped == pytest.approx(4.75)
    assert clock.to_outside_ns(0.45) == 12_600_000_000
    with pytest.raises(ValueError, match="real_time_factor must be a positive number"):
        SimClock(0, real_time_factor=0.0)


def test_periodic_event_fires_once_per_period_and_skips_missed_ones():
    event = PeriodicEvent(0.1)
    assert event.fire(0.0) and not event.fire(0.05)
    assert event.fire(0.1) and not event.fire(0.1)
    assert event.fire(0.35) and event.next_time == pytest.approx(0.4)
    event.restart()
    assert event.fire(0.0)
    with pytest.raises(ValueError, match="period must be a positive number"):
        PeriodicEvent(0.0)


def test_simulated_clock_steps_a_fixed_amount_whatever_the_wall_clock_says():
    clock = SimulatedClock(start_ns=NANOSECONDS_PER_SECOND, step=0.01)
    # Far behind the wall clock or not, one tick is one step: a loaded machine slows the simulation, never skips.
    assert clock.due(now_ns=0, sim_seconds=0.5) == (pytest.approx(0.51), 0.0)
    assert clock.due(now_ns=10**15, sim_seconds=0.5) == (pytest.approx(0.51), 0.0)
    assert clock.to_outside_ns(0.25) == 1_250_000_000  # 1 simulated second is 1 s of /clock
    clock.restart(5 * NANOSECONDS_PER_SECOND)
    assert clock.to_outside_ns(0.0) == 5 * NANOSECONDS_PER_SECOND
    with pytest.raises(ValueError, match="step must be a positive number"):
        SimulatedClock(0, step=0.0)


def test_policy_pause_holds_the_world_at_the_requests_frame_until_the_next_request():
    pause = PolicyPause(timeout=5.0)
    pause.on_frame(100, wall=0.0)
    assert not pause.paused(wall=0.0)  # no request: the world runs
    pause.on_request(150)
    pause.on_frame(140, wall=0.1)
    assert not pause.paused(wall=0.1)  # the policy needs a frame captured at or after the request
    pause.on_frame(160, wall=0.2)
    assert pause.paused(wall=0.2) and pause.paused(wall=4.0)  # however long the policy and the bridge take
    pause.on_request(150)  # an old request again changes nothing
    assert pause.paused(wall=4.1)
    pause.on_request(460)  # the bridge took the answer in and asks for the chunk of simulated time 460
    assert not pause.paused(wall=4.2)
    pause.on_frame(426, wall=4.3)
    assert not pause.paused(wall=4.3)
    pause.on_frame(493, wall=4.4)
    assert pause.paused(wall=4.4) and pause.timeouts == 0


def test_policy_pause_handles_late_requests_dead_policies_and_new_episodes():
    pause = PolicyPause(timeout=2.0)
    pause.on_frame(200, wall=0.0)
    pause.on_request(150)  # reached the sim after a frame it could use: the world stops at the next one
    assert not pause.paused(wall=0.0)
    pause.on_frame(266, wall=0.1)
    assert pause.paused(wall=0.1)
    assert pause.paused(wall=2.1)
    assert not pause.paused(wall=2.2) and pause.timeouts == 1  # nobody asks again: the world runs on
    pause.on_frame(333, wall=2.3)
    assert not pause.paused(wall=2.3)
    pause.on_request(400)
    pause.clear()  # a new episode forgets the request
    pause.on_frame(410, wall=3.0)
    assert not pause.paused(wall=3.0)
    never = PolicyPause(timeout=0.0)
    never.on_request(1)
    never.on_frame(2, wall=0.0)
    assert not never.paused(wall=0.0)
    with pytest.raises(ValueError, match="timeout must be >= 0 wall seconds"):
        PolicyPause(timeout=-1.0)


def test_parameters_are_checked_with_clear_messages():
    assert config_from_parameters({}).camera_fps == 15.0
    assert config_from_parameters({"sim_time": True, "real_time_factor": 2}).physics_step == pytest.approx(0.02)
    for name, bad, message in (
        ("camera_fps", 0.0, "parameter camera_fps must be a number > 0, got 0.0"),
        ("image_height", 9.5, "parameter image_height must be an integer > 0, got 9.5"),
        ("frame_id", " ", "parameter frame_id must be a non-empty string"),
        ("sim_time", "yes", "parameter sim_time must be true or false"),
        ("policy_wait_timeout", -1.0, "parameter policy_wait_timeout must be a number >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            config_from_parameters({name: bad})
    with pytest.raises(ValueError, match="use_sim_time is true but sim_time is false: nothing would publish /clock"):
        config_from_parameters({}, use_sim_time=True)


def test_an_unknown_task_is_refused_when_the_node_starts():
    with ros_context() as context, pytest.raises(ValueError, match="parameter task: unknown colour 'pink'"):
        SimArmNode(context=context, parameter_overrides=[Parameter("task", value="pick up the pink cube")])


# ---- over DDS -------------------------------------------------------------------------------------------


class Probe:
    """The test's side of the wire: subscribes to everything the sim publishes, publishes commands."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.images: list[Image] = []
        self.poses: list[PoseStamped] = []
        self.joints: list[JointState] = []
        self.successes: list[Bool] = []
        self.grasped: list[String] = []
        self.diagnostics: dict[str, str] = {}
        node.create_subscription(Image, f"{NAMESPACE}/image_raw", self.images.append, qos.CAMERA)
        node.create_subscription(PoseStamped, f"{NAMESPACE}/ee_pose", self.poses.append, qos.ROBOT_STATE)
        node.create_subscription(JointState, f"{NAMESPACE}/joint_states", self.joints.append, qos.ROBOT_STATE)
        node.create_subscription(Bool, f"{NAMESPACE}/sim_arm/task_success", self.successes.append, qos.ROBOT_STATE)
        node.create_subscription(String, f"{NAMESPACE}/sim_arm/grasped_objects", self.grasped.append, qos.ROBOT_STATE)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.target = node.create_publisher(PoseStamped, f"{NAMESPACE}/target_pose", qos.COMMAND)
        self.gripper = node.create_publisher(Float64, f"{NAMESPACE}/gripper_command", qos.COMMAND)
        self.reset = node.create_client(Trigger, f"{NAMESPACE}/sim_arm/reset")

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("sim_arm"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def position(self) -> np.ndarray:
        p = self.poses[-1].pose.position
        return np.array([p.x, p.y, p.z])

    def send_target(self, position: np.ndarray, like: PoseStamped) -> None:
        msg = PoseStamped()
        msg.header.frame_id = "base_link"
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
        msg.pose.orientation = like.pose.orientation
        self.target.publish(msg)

    def spin_streaming(self, position: np.ndarray, like: PoseStamped, condition: object, timeout: float) -> bool:
        """Streams the target (as the bridge does) while waiting for `condition()`."""
        last = [0.0]

        def send_and_check() -> bool:
            now = self.node.get_clock().now().nanoseconds / 1e9
            if now - last[0] > 0.1:
                self.send_target(position, like)
                last[0] = now
            return condition()

        return spin_until(self.node, send_and_check, timeout)


def test_sim_node_over_dds(tmp_path):
    params = tmp_path / "sim.yaml"
    params.write_text(PARAMS_YAML)
    with ros_context() as context:
        probe = Probe(Node("sim_probe", context=context))
        with python_process(NODE_SOURCE, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", str(params)) as sim:
            # Past the first frames: a node just started can stall long enough (a loaded machine) for its clock to
            # skip ahead once (max_lag), which is not what the stamps below check.
            started = spin_until(probe.node, lambda: len(probe.images) >= 10 and probe.poses and probe.joints, 60)
            assert started, f"no camera or state from the sim node (exit code {sim.poll()})"

            # Camera: rgb8 at the configured size, stamped with capture times one camera period apart.
            image = probe.images[-1]
            assert (image.height, image.width, image.encoding) == (40, 48, "rgb8")
            pixels = np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(40, 48, 3)
            assert pixels.std() > 10
            stamps = np.array([time_to_ns(m.header.stamp) for m in probe.images[-4:]]) / 1e9
            np.testing.assert_allclose(np.diff(stamps), 1.0 / CAMERA_FPS, atol=0.004)
            assert probe.joints[-1].name[:6] == ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"]
            assert probe.poses[-1].header.frame_id == "base_link"
            home, home_msg = probe.position(), probe.poses[-1]

            # A reachable target: the arm gets there.
            assert spin_until(probe.node, lambda: probe.target.get_subscription_count() > 0, 10)
            goal = home + np.array([0.05, 0.05, -0.06])
            reached = probe.spin_streaming(goal, home_msg, lambda: np.linalg.norm(probe.position() - goal) < 0.005, 15)
            assert reached, f"ee_pose {probe.position()} never reached {goal}"

            # Outside the workspace: refused, counted, and the arm holds where it was.
            outside = np.array([0.9, 0.0, 0.1])
            probe.spin_streaming(outside, home_msg, lambda: int(probe.diagnostics.get("targets_rejected", 0)) > 0, 5)
            assert int(probe.diagnostics.get("targets_rejected", 0)) > 0, probe.diagnostics
            assert "workspace x range" in probe.diagnostics["last_rejection"]
            assert np.linalg.norm(probe.position() - goal) < 0.005

            # Gripper closes on command.
            probe.gripper.publish(Float64(data=0.0))
            assert spin_until(probe.node, lambda: max(probe.joints[-1].position[6:8]) < 0.004, 10)
            assert probe.successes and probe.successes[-1].data is False
            assert probe.grasped and probe.grasped[-1].data == ""  # fingers closed on nothing

            # Reset: next seed, arm back home.
            assert probe.reset.wait_for_service(timeout_sec=10)
            future = probe.reset.call_async(Trigger.Request())
            assert spin_until(probe.node, future.done, 15)
            reply = future.result()
            assert reply.success and reply.message.startswith("seed 4: pick up the ")
            assert spin_until(probe.node, lambda: np.linalg.norm(probe.position() - home) < 0.002, 5)
            assert sim.poll() is None, "the node must keep running after refusing bad input"
        probe.node.destroy_node()
