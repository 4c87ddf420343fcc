"""The simulated arm: the MuJoCo tabletop of videovla_sim as a ROS 2 robot with a camera.

Node `sim_arm` (SimArmNode, a plain rclpy Node). It speaks the generic pose-stream interface the arm bridge's
`pose_stream` backend uses, so the whole suite runs against it unchanged. The physics runs in real time (or
at `real_time_factor`); every message is stamped with the ROS time its simulated instant maps to, so a camera
frame carries its capture time.

Publishes:
  image_raw (sensor_msgs/Image rgb8, CAMERA)          the fixed front-top camera, at camera_fps
  joint_states (sensor_msgs/JointState, ROBOT_STATE)  6 arm joints [rad] + 2 finger joints [m], at state_rate_hz
  ee_pose (geometry_msgs/PoseStamped, ROBOT_STATE)    TCP pose in frame_id (base_link), at state_rate_hz
  ~/task_success (std_msgs/Bool, ROBOT_STATE)         whether the current episode's task is fulfilled, at
                                                      success_rate_hz (for evaluation)
  ~/grasped_objects (std_msgs/String, ROBOT_STATE)    comma-separated names of the objects pinched between the
                                                      fingers and off the table ("" for none), with task_success
                                                      (tells a failed evaluation episode's wrong grasps apart)
  ~/scene_state (std_msgs/String, ROBOT_STATE)        privileged state as JSON (videovla_sim.scene_state), with
                                                      every camera frame and its stamp: for the scripted expert
                                                      policy (`policy: expert`) only, never a learned policy
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz) accepted / rejected commands, frames, lag, achieved
                                                      real-time factor, task and seed
Subscribes:
  target_pose (geometry_msgs/PoseStamped, COMMAND)    absolute TCP target in frame_id; the sim's controller
                                                      does the IK and refuses (logs, counts, holds) targets
                                                      outside its workspace or reach
  gripper_command (std_msgs/Float64, COMMAND)         0.0 = closed .. 1.0 = open
Services:
  ~/reset (std_srvs/Trigger)                          new episode with the next seed; the reply's message says
                                                      the seed and the instruction to send on `instruction`
Parameters: see PARAMETERS below (all read-only; restart the node to change them).

The node publishes no instruction itself: the user (or an evaluation script) sends it, as with a real arm.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time
from videovla_ros.backends.base import pose_from_msg, pose_stamped
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.image_conversion import rgb_to_image_msg
from videovla_ros.node_runner import run_node
from videovla_ros.trajectory import Pose
from videovla_sim.controller import TargetRejectedError
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.realtime import PeriodicEvent, SimClock
from videovla_sim.scene import ARM_JOINTS, FINGER_JOINTS, SceneConfig
from videovla_sim.scene_state import SceneState
from videovla_sim.tasks import EpisodeSetup, InstructionError

NODE_NAME = "sim_arm"
DIAGNOSTICS_PERIOD = 1.0
RESET_TIMEOUT = 10.0

PARAMETERS: dict[str, tuple[Any, str]] = {
    "task": ("pick", "task family (pick, place, stack) or a full instruction, e.g. 'pick up the red cube'"),
    "seed": (0, "seed of the first episode; ~/reset moves on to the next one"),
    "image_height": (96, "camera image height [px]"),
    "image_width": (96, "camera image width [px]"),
    "camera_fps": (15.0, "camera frames per simulated second"),
    "state_rate_hz": (50.0, "joint_states and ee_pose per simulated second"),
    "success_rate_hz": (4.0, "~/task_success and ~/grasped_objects messages per simulated second"),
    "real_time_factor": (1.0, "simulated seconds per wall-clock second"),
    "physics_tick_hz": (100.0, "how often the physics catches up with the clock [Hz of wall time]"),
    "max_lag": (0.25, "simulated seconds the physics may fall behind before the clock skips ahead"),
    "frame_id": ("base_link", "frame of ee_pose and of accepted target_pose messages"),
    "camera_frame_id": ("sim_camera", "frame_id of image_raw"),
}


@dataclass(frozen=True)
class SimArmConfig:
    task: str
    seed: int
    image_height: int
    image_width: int
    camera_fps: float
    state_rate_hz: float
    success_rate_hz: float
    real_time_factor: float
    physics_tick_hz: float
    max_lag: float
    frame_id: str
    camera_frame_id: str


def config_from_parameters(values: dict[str, Any]) -> SimArmConfig:
    """Checks the parameter values; raises ValueError naming the parameter and what it must be."""
    for name in ("seed", "image_height", "image_width"):
        if not isinstance(values[name], int) or isinstance(values[name], bool):
            raise ValueError(f"parameter {name} must be an integer, got {values[name]!r}")
    for name in ("camera_fps", "state_rate_hz", "success_rate_hz", "real_time_factor", "physics_tick_hz", "max_lag"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"parameter {name} must be a positive number, got {value!r}")
    for name in ("task", "frame_id", "camera_frame_id"):
        if not isinstance(values[name], str) or not values[name].strip():
            raise ValueError(f"parameter {name} must be a non-empty string, got {values[name]!r}")
    return SimArmConfig(
        task=values["task"],
        seed=values["seed"],
        image_height=values["image_height"],
        image_width=values["image_width"],
        camera_fps=float(values["camera_fps"]),
        state_rate_hz=float(values["state_rate_hz"]),
        success_rate_hz=float(values["success_rate_hz"]),
        real_time_factor=float(values["real_time_factor"]),
        physics_tick_hz=float(values["physics_tick_hz"]),
        max_lag=float(values["max_lag"]),
        frame_id=values["frame_id"],
        camera_frame_id=values["camera_frame_id"],
    )


class SimArmNode(Node):
    """The simulated arm (see the module docstring for topics, services, parameters)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True, dynamic_typing=True)
            )
        self.config = config_from_parameters({name: self.get_parameter(name).value for name in PARAMETERS})
        config = self.config
        # SceneConfig checks the image size and says which bound was broken.
        scene_config = SceneConfig(image_height=config.image_height, image_width=config.image_width)
        self._env = TabletopEnv(EnvConfig(scene=scene_config))
        self._seed = config.seed
        try:
            setup = self._env.reset(config.task, self._seed)
        except InstructionError as error:
            raise ValueError(f"parameter task: {error}") from error
        self._sim_clock = SimClock(self._now_ns(), config.real_time_factor, config.max_lag)
        self._camera_event = PeriodicEvent(1.0 / config.camera_fps)
        self._state_event = PeriodicEvent(1.0 / config.state_rate_hz)
        self._success_event = PeriodicEvent(1.0 / config.success_rate_hz)
        self._book = DiagnosticsBook(f"{self.get_name()}: simulated arm", hardware_id="mujoco")
        self._pending_lock = threading.Lock()
        self._pending_target: PoseStamped | None = None
        self._pending_gripper: float | None = None
        self._simulated_total = 0.0
        """Simulated seconds stepped since start (written by the physics thread only)."""
        self._rate_reference = (time.monotonic(), 0.0)
        """(wall time, _simulated_total) at the previous diagnostics message."""
        self._rejected_reported = 0
        self._reset_requested = threading.Event()
        self._reset_done = threading.Event()
        self._reset_reply = (False, "")
        self._stopping = threading.Event()

        self._image_pub = self.create_publisher(Image, "image_raw", qos.CAMERA)
        self._joint_pub = self.create_publisher(JointState, "joint_states", qos.ROBOT_STATE)
        self._pose_pub = self.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self._success_pub = self.create_publisher(Bool, "~/task_success", qos.ROBOT_STATE)
        self._grasped_pub = self.create_publisher(String, "~/grasped_objects", qos.ROBOT_STATE)
        self._scene_state_pub = self.create_publisher(String, "~/scene_state", qos.ROBOT_STATE)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(PoseStamped, "target_pose", self._on_target_pose, qos.COMMAND)
        self.create_subscription(Float64, "gripper_command", self._on_gripper_command, qos.COMMAND)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(DIAGNOSTICS_PERIOD, self._publish_diagnostics)
        # The physics has a thread of its own rather than an executor timer: an EGL rendering context is
        # bound to the thread that made it current, and executor callbacks hop between threads. Everything
        # that touches the MuJoCo state (commands, stepping, rendering, resets) happens on this thread.
        self._physics_thread = threading.Thread(target=self._physics_loop, args=(setup,), name="sim_arm physics")
        self._physics_thread.start()

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---- inputs: cache the newest command; the physics tick applies it ---------------------------------

    def _on_target_pose(self, msg: PoseStamped) -> None:
        with self._pending_lock:
            self._pending_target = msg

    def _on_gripper_command(self, msg: Float64) -> None:
        with self._pending_lock:
            self._pending_gripper = float(msg.data)

    def _apply_pending_commands(self) -> None:
        with self._pending_lock:
            target, gripper = self._pending_target, self._pending_gripper
            self._pending_target = self._pending_gripper = None
        controller = self._env.controller
        if target is not None:
            try:
                if target.header.frame_id != self.config.frame_id:
                    raise TargetRejectedError(
                        f"target_pose frame_id must be {self.config.frame_id!r}, got {target.header.frame_id!r}"
                    )
                try:
                    pose = pose_from_msg(target.pose)
                except ValueError as error:
                    raise TargetRejectedError(str(error)) from error
                controller.command_pose(pose.position, pose.quaternion)
                self._book.count("targets_accepted")
            except TargetRejectedError as error:
                self._reject("targets_rejected", f"target_pose refused, holding the previous target: {error}")
        if gripper is not None:
            try:
                controller.command_gripper(gripper)
                self._book.count("gripper_commands_accepted")
            except TargetRejectedError as error:
                self._reject("gripper_commands_rejected", f"gripper_command refused: {error}")

    def _reject(self, counter: str, reason: str) -> None:
        self._book.count(counter)
        self._book.set("last_rejection", reason)
        self.get_logger().warning(reason, throttle_duration_sec=1.0)

    # ---- physics ----------------------------------------------------------------------------------------

    def _physics_loop(self, setup: EpisodeSetup) -> None:
        period = 1.0 / self.config.physics_tick_hz
        try:
            self._start_episode(setup)
            next_tick = time.monotonic()
            while not self._stopping.is_set() and self.context.ok():
                if self._reset_requested.is_set():
                    self._reset_reply = self._next_episode()
                    self._reset_requested.clear()
                    self._reset_done.set()
                self._tick()
                next_tick = max(next_tick + period, time.monotonic())
                self._stopping.wait(next_tick - time.monotonic())
        except Exception as error:  # a dead physics thread must be loud: the arm would freeze silently
            if not self._stopping.is_set() and self.context.ok():
                self.get_logger().fatal(f"physics thread stopped: {error!r}")
                self._book.set_status(DiagnosticStatus.ERROR, f"physics thread stopped: {error!r}")
                raise
        finally:
            self._env.close()

    def _tick(self) -> None:
        self._apply_pending_commands()
        env = self._env
        timestep = env.scene.model.opt.timestep
        due, dropped = self._sim_clock.due(self._now_ns(), env.time)
        if dropped > 0:
            self._book.count("lag_skips")
            self._book.set("last_lag_skip_s", dropped)
        before = env.time
        while env.time < due - timestep / 2:
            stop = min(due, self._camera_event.next_time, self._state_event.next_time, self._success_event.next_time)
            env.controller.step(max(1, round((stop - env.time) / timestep)))
            self._publish_due_events()
        self._simulated_total += env.time - before
        self._book.set("sim_time_s", env.time)

    def _publish_due_events(self) -> None:
        env = self._env
        stamp_ns = self._sim_clock.to_outside_ns(env.time)
        if self._camera_event.fire(env.time):
            self._image_pub.publish(rgb_to_image_msg(env.render(), ns_to_time(stamp_ns), self.config.camera_frame_id))
            self._book.count("frames_published")
            if self._scene_state_pub.get_subscription_count() > 0:
                state = SceneState.capture(env.scene, env.setup, self.config.task, stamp_ns)
                self._scene_state_pub.publish(String(data=state.to_json()))
        if self._state_event.fire(env.time):
            scene = env.scene
            joints = JointState()
            joints.header.stamp = ns_to_time(stamp_ns)
            joints.name = [*ARM_JOINTS, *FINGER_JOINTS]
            joints.position = np.concatenate((scene.arm_qpos(), scene.finger_qpos())).tolist()
            joints.velocity = np.concatenate((scene.arm_qvel(), np.zeros(len(FINGER_JOINTS)))).tolist()
            self._joint_pub.publish(joints)
            position, quaternion = scene.tcp_pose()
            self._pose_pub.publish(pose_stamped(Pose.make(position, quaternion), stamp_ns, self.config.frame_id))
        if self._success_event.fire(env.time):
            self._success_pub.publish(Bool(data=env.success()))
            self._grasped_pub.publish(String(data=",".join(env.grasped_objects())))

    # ---- episodes ---------------------------------------------------------------------------------------

    def _start_episode(self, setup: EpisodeSetup) -> None:
        # A new scene's first render sets up its GL context (~0.5 s): do it before the clock starts, so the
        # episode does not begin by lagging behind.
        self._env.render()
        self._sim_clock.restart(self._now_ns())
        for event in (self._camera_event, self._state_event, self._success_event):
            event.restart()
        with self._pending_lock:
            # Commands meant for the previous episode's state must not move the fresh arm.
            self._pending_target = self._pending_gripper = None
        self._publish_due_events()
        self._book.set("task", setup.task.family)
        self._book.set("instruction", setup.instruction)
        self._book.set("seed", float(setup.seed))
        self.get_logger().info(
            f"episode seed {setup.seed}: send the instruction {setup.instruction!r} on `instruction`"
        )

    def _next_episode(self) -> tuple[bool, str]:
        """(success, message) of a ~/reset: the next seed's episode, or why it could not start."""
        self._seed += 1
        try:
            setup = self._env.reset(self.config.task, self._seed)
        except RuntimeError as error:  # no layout found for this seed; the current episode goes on
            self._book.count("resets_failed")
            return False, f"seed {self._seed}: {error}"
        self._start_episode(setup)
        self._book.count("resets")
        return True, f"seed {setup.seed}: {setup.instruction}"

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        del request  # Trigger has no fields
        self._reset_done.clear()
        self._reset_requested.set()
        if self._reset_done.wait(timeout=RESET_TIMEOUT):
            response.success, response.message = self._reset_reply
        else:
            response.success = False
            response.message = f"the physics thread did not reset within {RESET_TIMEOUT} s"
        return response

    # ---- diagnostics ------------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        start, simulated_before = self._rate_reference
        now, simulated = time.monotonic(), self._simulated_total
        self._rate_reference = (now, simulated)
        if now > start:
            self._book.set("achieved_real_time_factor", (simulated - simulated_before) / (now - start))
        rejected = self._book.counter("targets_rejected") + self._book.counter("gripper_commands_rejected")
        if rejected > self._rejected_reported:
            self._book.set_status(DiagnosticStatus.WARN, f"{rejected - self._rejected_reported} commands refused")
        else:
            self._book.set_status(DiagnosticStatus.OK, "ok")
        self._rejected_reported = rejected
        self._diagnostics_pub.publish(self._book.to_msg(self.get_clock().now().to_msg()))

    @property
    def diagnostics(self) -> DiagnosticsBook:
        return self._book

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._physics_thread.is_alive():
            self._physics_thread.join()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(SimArmNode, NODE_NAME, args, num_threads=1)


if __name__ == "__main__":
    main()
