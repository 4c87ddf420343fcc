"""The simulated arm: the MuJoCo tabletop of videovla_sim as a ROS 2 robot with a camera.

Node `sim_arm` (SimArmNode, a plain rclpy Node). It speaks the generic pose-stream interface the arm bridge's
`pose_stream` backend uses, so the whole suite runs against it unchanged. Every message is stamped with the ROS
time of its simulated instant, so a camera frame carries its capture time. Two ways to keep time
(videovla_sim.realtime):
  sim_time false  the physics follows the wall clock (at `real_time_factor`); when it lags more than `max_lag`
                  (a loaded machine) it skips ahead, so results can depend on the machine's load.
  sim_time true   the physics is the clock, as Gazebo with `use_sim_time`: it publishes /clock, never skips (a
                  loaded machine runs it slower than real time), and in sync execution it stands still from a
                  chunk request's camera frame until the bridge's next request, i.e. while the policy thinks
                  (at most policy_wait_timeout wall seconds), so the policy's latency costs no simulated time.
                  Run every node with use_sim_time.
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
  /clock (rosgraph_msgs/Clock, CLOCK)                 sim_time only: the simulated time, every physics step
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz) accepted / rejected commands, frames, lag, achieved
                                                      real-time factor, policy waits, task and seed (wall time)
Subscribes:
  target_pose (geometry_msgs/PoseStamped, COMMAND)    absolute TCP target in frame_id; the sim's controller
                                                      does the IK and refuses (logs, counts, holds) targets
                                                      outside its workspace or reach
  gripper_command (std_msgs/Float64, COMMAND)         0.0 = closed .. 1.0 = open
  chunk_request (std_msgs/Header, COMMAND)            sim_time only: the bridge's sync-mode requests (when to
                                                      stand still, and when to go on)
Services:
  ~/reset (std_srvs/Trigger)                          new episode with the next seed; the reply's message says
                                                      the seed and the instruction to send on `instruction`
Parameters: see SimArmConfig below (all read-only; restart the node to change them), and ROS's use_sim_time.

The node publishes no instruction itself: the user (or an evaluation script) sends it, as with a real arm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, Header, String
from std_srvs.srv import Trigger

from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time, time_to_ns
from videovla_ros.backends.base import pose_from_msg, pose_stamped
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.image_conversion import rgb_to_image_msg
from videovla_ros.node_runner import run_node
from videovla_ros.parameters import check_fields, declare, from_values, parameter, specs
from videovla_ros.trajectory import Pose
from videovla_sim.controller import TargetRejectedError
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.realtime import NANOSECONDS_PER_SECOND, PeriodicEvent, PolicyPause, SimClock, SimulatedClock
from videovla_sim.scene import ARM_JOINTS, FINGER_JOINTS, SceneConfig
from videovla_sim.scene_state import SceneState
from videovla_sim.tasks import EpisodeSetup, InstructionError

NODE_NAME = "sim_arm"
DIAGNOSTICS_PERIOD = 1.0
RESET_TIMEOUT = 10.0
# While the world waits for the policy, the frame it waits at is sent again this often [wall s]: the camera is
# best effort, and a policy that lost that frame would otherwise wait for one that never comes.
FRAME_RESEND_PERIOD = 1.0

# ROS time 0 means "no time yet" to rclpy's clock and to the policy's stamp check: simulated time starts here.
SIM_TIME_START_NS = NANOSECONDS_PER_SECOND


@dataclass(frozen=True)
class SimArmConfig:
    """The simulated arm's ROS parameters (declared from these fields, read-only, checked when the node starts)."""

    task: str = parameter(
        "pick", "task family (pick, place, stack) or a full instruction, e.g. 'pick up the red cube'", non_empty=True
    )
    seed: int = parameter(0, "seed of the first episode; ~/reset moves on to the next one", low=0)
    image_height: int = parameter(96, "camera image height [px]", above=0)
    image_width: int = parameter(96, "camera image width [px]", above=0)
    camera_fps: float = parameter(15.0, "camera frames per simulated second", above=0)
    state_rate_hz: float = parameter(50.0, "joint_states and ee_pose per simulated second", above=0)
    success_rate_hz: float = parameter(
        4.0, "~/task_success and ~/grasped_objects messages per simulated second", above=0
    )
    real_time_factor: float = parameter(1.0, "simulated seconds per wall-clock second (sim_time: the most)", above=0)
    physics_tick_hz: float = parameter(100.0, "physics ticks per wall-clock second [Hz]", above=0)
    max_lag: float = parameter(
        0.25, "wall-clock time only: simulated seconds of lag before the clock skips ahead", above=0
    )
    sim_time: bool = parameter(
        False, "publish /clock from the physics, never skip ahead, stand still while the policy thinks (sync)"
    )
    policy_wait_timeout: float = parameter(
        30.0,
        "sim_time: the longest the physics waits for the bridge's next chunk request [wall s]; 0 = never waits",
        low=0,
    )
    frame_id: str = parameter("base_link", "frame of ee_pose and of accepted target_pose messages", non_empty=True)
    camera_frame_id: str = parameter("sim_camera", "frame_id of image_raw", non_empty=True)

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def physics_step(self) -> float:
        """Simulated seconds one physics tick advances at the real-time factor (sim_time)."""
        return self.real_time_factor / self.physics_tick_hz


def config_from_parameters(values: Mapping[str, object], use_sim_time: bool = False) -> SimArmConfig:
    """Checks the parameter values (missing ones take their default); raises ValueError naming the parameter and
    what it must be. `use_sim_time` is the node's ROS parameter: following a /clock nobody publishes would stop
    every stamp at 0, so it needs sim_time (this node is the clock)."""
    config = from_values(SimArmConfig, values)
    if use_sim_time and not config.sim_time:
        raise ValueError(
            "parameter use_sim_time is true but sim_time is false: nothing would publish /clock; set sim_time: true "
            "(the simulated arm then publishes it)"
        )
    return config


class SimArmNode(Node):
    """The simulated arm (see the module docstring for topics, services, parameters)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, SimArmConfig)
        values = {spec.name: self.get_parameter(spec.name).value for spec in specs(SimArmConfig)}
        self.config = config_from_parameters(values, use_sim_time=bool(self.get_parameter("use_sim_time").value))
        config = self.config
        # SceneConfig checks the image size and says which bound was broken.
        scene_config = SceneConfig(image_height=config.image_height, image_width=config.image_width)
        self._env = TabletopEnv(EnvConfig(scene=scene_config))
        self._seed = config.seed
        try:
            setup = self._env.reset(config.task, self._seed)
        except InstructionError as error:
            raise ValueError(f"parameter task: {error}") from error
        self._sim_clock: SimClock | SimulatedClock
        if config.sim_time:
            self._sim_clock = SimulatedClock(SIM_TIME_START_NS, config.physics_step)
        else:
            self._sim_clock = SimClock(self._now_ns(), config.real_time_factor, config.max_lag)
        self._clock_ns = SIM_TIME_START_NS
        """sim_time: the newest simulated ROS time published on /clock (written by the physics thread only)."""
        self._pause = PolicyPause(config.policy_wait_timeout if config.sim_time else 0.0)
        self._camera_event = PeriodicEvent(1.0 / config.camera_fps)
        self._state_event = PeriodicEvent(1.0 / config.state_rate_hz)
        self._success_event = PeriodicEvent(1.0 / config.success_rate_hz)
        self._book = DiagnosticsBook(f"{self.get_name()}: simulated arm", hardware_id="mujoco")
        self._pending_lock = threading.Lock()
        self._pending_target: PoseStamped | None = None
        self._pending_gripper: float | None = None
        self._simulated_total = 0.0
        """Simulated seconds stepped since start (written by the physics thread only)."""
        self._paused_total = 0.0
        """Wall seconds the physics waited for the policy (sim_time; written by the physics thread only)."""
        self._rate_reference = (time.monotonic(), 0.0)
        """(wall time, _simulated_total) at the previous diagnostics message."""
        self._rejected_reported = 0
        self._last_frame: tuple[Image, String | None] | None = None
        """The newest camera frame and its scene state (physics thread only), resent while the world waits."""
        self._last_resend = 0.0
        self._reset_requested = threading.Event()
        self._reset_done = threading.Event()
        self._reset_reply = (False, "")
        self._stopping = threading.Event()

        self._create_interfaces()
        # The physics has a thread of its own rather than an executor timer: an EGL rendering context is
        # bound to the thread that made it current, and executor callbacks hop between threads. Everything
        # that touches the MuJoCo state (commands, stepping, rendering, resets) happens on this thread.
        self._physics_thread = threading.Thread(target=self._physics_loop, args=(setup,), name="sim_arm physics")
        self._physics_thread.start()

    def _create_interfaces(self) -> None:
        """The publishers, subscriptions, service and timer of the module docstring."""
        config = self.config
        self._image_pub = self.create_publisher(Image, "image_raw", qos.CAMERA)
        self._joint_pub = self.create_publisher(JointState, "joint_states", qos.ROBOT_STATE)
        self._pose_pub = self.create_publisher(PoseStamped, "ee_pose", qos.ROBOT_STATE)
        self._success_pub = self.create_publisher(Bool, "~/task_success", qos.ROBOT_STATE)
        self._grasped_pub = self.create_publisher(String, "~/grasped_objects", qos.ROBOT_STATE)
        self._scene_state_pub = self.create_publisher(String, "~/scene_state", qos.ROBOT_STATE)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", qos.CLOCK) if config.sim_time else None
        self.create_subscription(PoseStamped, "target_pose", self._on_target_pose, qos.COMMAND)
        self.create_subscription(Float64, "gripper_command", self._on_gripper_command, qos.COMMAND)
        if config.sim_time and config.policy_wait_timeout > 0:
            self.create_subscription(Header, "chunk_request", self._on_chunk_request, qos.COMMAND)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=MutuallyExclusiveCallbackGroup())
        # Wall-clock diagnostics: they report the achieved real-time factor and keep coming while the physics
        # waits for the policy (simulated time, and every ROS-time timer, then stands still).
        self.create_timer(DIAGNOSTICS_PERIOD, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---- inputs: cache the newest command; the physics tick applies it ---------------------------------

    def _on_target_pose(self, msg: PoseStamped) -> None:
        with self._pending_lock:
            self._pending_target = msg

    def _on_gripper_command(self, msg: Float64) -> None:
        with self._pending_lock:
            self._pending_gripper = float(msg.data)

    def _on_chunk_request(self, msg: Header) -> None:
        self._pause.on_request(time_to_ns(msg.stamp))

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
        now = time.monotonic()
        if self._pause.paused(now):
            self._paused_total += 1.0 / self.config.physics_tick_hz
            if self._last_frame is not None and now - self._last_resend >= FRAME_RESEND_PERIOD:
                self._last_resend = now
                self._publish_frame(*self._last_frame)
            return
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
            self._publish_clock()
            self._publish_due_events()
            if self._pause.paused(time.monotonic()):
                break  # the frame the policy answers from is out: the world stands still at its instant
        self._simulated_total += env.time - before
        self._book.set("sim_time_s", env.time)

    def _publish_clock(self) -> None:
        """sim_time: /clock at the physics' time, before anything stamped with it goes out."""
        if self._clock_pub is None:
            return
        self._clock_ns = self._sim_clock.to_outside_ns(self._env.time)
        self._clock_pub.publish(ClockMsg(clock=ns_to_time(self._clock_ns)))

    def _publish_due_events(self) -> None:
        env = self._env
        stamp_ns = self._sim_clock.to_outside_ns(env.time)
        if self._camera_event.fire(env.time):
            self._pause.on_frame(stamp_ns, time.monotonic())
            self._last_resend = time.monotonic()
            image = rgb_to_image_msg(env.render(), ns_to_time(stamp_ns), self.config.camera_frame_id)
            state = None
            if self._scene_state_pub.get_subscription_count() > 0:
                scene_state = SceneState.capture(env.scene, env.setup, self.config.task, stamp_ns)
                state = String(data=scene_state.to_json())
            self._last_frame = (image, state)
            self._publish_frame(image, state)
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

    def _publish_frame(self, image: Image, state: String | None) -> None:
        # The state first: the expert policy reads the newest state when the frame arrives.
        if state is not None:
            self._scene_state_pub.publish(state)
        self._image_pub.publish(image)
        self._book.count("frames_published")

    # ---- episodes ---------------------------------------------------------------------------------------

    def _start_episode(self, setup: EpisodeSetup) -> None:
        # A new scene's first render sets up its GL context (~0.5 s): do it before the clock starts, so the
        # episode does not begin by lagging behind.
        self._env.render()
        if isinstance(self._sim_clock, SimulatedClock):
            # Simulated time goes on from the last /clock, one step later, so stamps never repeat.
            self._sim_clock.restart(self._clock_ns + round(self._sim_clock.step * NANOSECONDS_PER_SECOND))
        else:
            self._sim_clock.restart(self._now_ns())
        self._pause.clear()
        for event in (self._camera_event, self._state_event, self._success_event):
            event.restart()
        with self._pending_lock:
            # Commands meant for the previous episode's state must not move the fresh arm.
            self._pending_target = self._pending_gripper = None
        self._publish_clock()
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
        if self.config.sim_time:
            self._book.set("policy_wait_s", self._paused_total)
            self._book.set("policy_wait_timeouts", float(self._pause.timeouts))
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
