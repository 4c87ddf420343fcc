"""The arm bridge: action chunks in, safe streaming end-effector motion out.

Node `arm_bridge` (ArmBridgeNode, a plain rclpy Node). It starts DISABLED and moves only after `~/enable`.

Subscribes:
  action_chunk (videovla_msgs/ActionChunk, ACTION_CHUNK)   chunks of per-step end-effector deltas
  estop (std_msgs/Bool, SAFETY)                             data=true stops and latches until released + re-enabled
  robot state, by backend: ee_pose (PoseStamped) or <realman_prefix>/udp_arm_position (Pose)  (ROBOT_STATE)
Publishes:
  ~/target_pose (geometry_msgs/PoseStamped, COMMAND)       every streamed target (also in dry run), for RViz
  chunk_request (std_msgs/Header, COMMAND)                 sync mode: once when enabled and after each chunk's
                                                           execute_rows; stamp = request time
  rtc_chunk_request (videovla_msgs/ChunkRequest, COMMAND)  async mode with rtc: when enabled, after each admitted
                                                           or rejected chunk and on the chunk watchdog; carries
                                                           the committed motion (videovla_ros.realtime_chunking)
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz)     counters of every clamp / rejection / drop, stream
                                                           rate, jitter, idle fraction
  the backend's commands (not in dry run): target_pose + gripper_command, rm_driver, servo or MoveItPy
Services:
  ~/enable (std_srvs/SetBool)                              data=true enables (refused with a reason when the
                                                           robot state is silent, the pose is outside the
                                                           workspace or the e-stop is asserted); false disables
Parameters: see PARAMETERS below (all read-only; restart the node to change them).
Shutdown: Ctrl-C or SIGTERM while enabled stops the arm through the backend before the node goes away.

Timing: T_{-1} (the anchor of a chunk's deltas) is the end-effector pose at the chunk's header.stamp, looked
up in the robot state history; row i is due at header.stamp + offset + (i + 1) * time_step (videovla_ros.
trajectory). In async mode offset = latency_compensation (0: strictly time aligned; rows already due are
dropped), and each new chunk is blended into the current motion. In sync mode the arm stood still while the
policy inferred, so the schedule starts at the chunk's arrival (offset = arrival - stamp), only execute_rows
rows are executed, and the next chunk is requested when they are done.
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
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Bool, Header
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk, ChunkRequest
from videovla_ros import qos
from videovla_ros.action_chunk import ChunkRejectedError, TimedChunk, from_msg, ns_to_time
from videovla_ros.backends import BackendParams, make_backend
from videovla_ros.backends.base import pose_stamped
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.node_runner import run_node
from videovla_ros.realtime_chunking import DelayEstimate, committed_motion
from videovla_ros.realtime_chunking import to_msg as rtc_request_msg
from videovla_ros.safety import (
    ArmState,
    Decision,
    EnableStateMachine,
    SafetyLimits,
    Watchdog,
    check_chunk_stamp,
    clamp_steps,
    clamp_to_workspace,
    gripper_command,
    in_workspace,
    limit_speed,
)
from videovla_ros.trajectory import (
    DELTA_DIMS,
    GRIPPER_DIM,
    NANOSECONDS_PER_SECOND,
    Hold,
    Motion,
    Pose,
    PoseHistory,
    PoseLookupError,
    StreamStats,
    Trajectory,
    Waypoint,
    apply_deltas,
    drop_late,
    rotation_angle,
    row_due_times_ns,
    settle,
    switch_to,
)

NODE_NAME = "arm_bridge"
REQUIRED_DIMS = (*DELTA_DIMS, GRIPPER_DIM)
MODES = ("sync", "async")
DIAGNOSTICS_PERIOD = 1.0
# How long shutting down waits, per publisher, for subscribers to acknowledge the last commands (the stop) [s].
STOP_DELIVERY_TIMEOUT = 0.5
# A streaming tick that comes late may move the arm for the time that passed, but never for longer than this
# many periods: after a stall the command must not jump.
MAX_TICK_PERIODS = 3.0

_LIMITS = SafetyLimits()
_BACKEND = BackendParams()

# name: (default, description). Declared in one place, read once at start.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "backend": ("pose_stream", "arm backend: pose_stream | realman | servo | moveit_py"),
    "mode": ("sync", "sync: request a chunk, execute its execute_rows, repeat; async: execute chunks as they come"),
    "stream_rate_hz": (100.0, "rate of the streamed end-effector targets [Hz] (realman: at most 500)"),
    "dry_run": (False, "log the targets (and publish ~/target_pose) instead of commanding the arm"),
    "frame_id": (_BACKEND.frame_id, "base frame of chunks, targets and robot state"),
    "workspace_min": (list(_LIMITS.workspace_min), "workspace box lower corner [x, y, z] in m"),
    "workspace_max": (list(_LIMITS.workspace_max), "workspace box upper corner [x, y, z] in m"),
    "max_step_translation": (_LIMITS.max_step_translation, "largest translation of one chunk row [m]"),
    "max_step_rotation": (_LIMITS.max_step_rotation, "largest rotation of one chunk row [rad]"),
    "max_linear_speed": (_LIMITS.max_linear_speed, "largest speed of the streamed target [m/s]"),
    "max_angular_speed": (_LIMITS.max_angular_speed, "largest angular speed of the streamed target [rad/s]"),
    "max_chunk_age": (_LIMITS.max_chunk_age, "chunks captured longer ago than this are rejected [s]"),
    "max_clock_skew": (_LIMITS.max_clock_skew, "chunks stamped further in the future than this are rejected [s]"),
    "chunk_watchdog": (
        _LIMITS.chunk_watchdog,
        "hold (and in sync mode re-request) after this long without a chunk [s]",
    ),
    "state_watchdog": (_LIMITS.state_watchdog, "stop and disable after this long without robot state [s]"),
    "blend_duration": (0.15, "time over which a new chunk's motion is blended into the current one [s]"),
    "latency_compensation": (0.0, "async mode: delay every row's due time by this much [s] (slow policies)"),
    "rtc": (False, "async mode: real-time chunking, ask for each chunk with the motion it must continue"),
    "history_duration": (5.0, "robot state kept to look up the pose at a chunk's capture stamp [s]"),
    "gripper_threshold": (_LIMITS.gripper_threshold, "gripper values at or above it open (1.0), below close (0.0)"),
    "stop_message_type": (_BACKEND.stop_message_type, "realman: move_stop_cmd type, bool (driver 1.1) | empty (1.1.6)"),
    "realman_prefix": (_BACKEND.realman_prefix, "realman: rm_driver topic prefix"),
    "realman_follow": (_BACKEND.realman_follow, "realman: Cartepos.follow (true = high-follow mode)"),
    "servo_node": (_BACKEND.servo_node, "servo: MoveIt Servo node name (prefix of its command topics)"),
    "servo_command": (_BACKEND.servo_command, "servo: twist (delta_twist_cmds) | pose (pose_cmd)"),
    "moveit_planning_group": (_BACKEND.moveit_planning_group, "moveit_py: planning group"),
    "moveit_pose_link": (_BACKEND.moveit_pose_link, "moveit_py: link the pose goal is for"),
    "moveit_replan_period": (_BACKEND.moveit_replan_period, "moveit_py: least time between plans [s]"),
}


@dataclass(frozen=True)
class BridgeConfig:
    """The bridge's parameters, checked; durations in s."""

    backend: str
    mode: str
    stream_rate_hz: float
    dry_run: bool
    blend_duration: float
    latency_compensation: float
    history_duration: float
    limits: SafetyLimits
    backend_params: BackendParams
    rtc: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"parameter mode must be one of {list(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.stream_rate_hz) and self.stream_rate_hz > 0):
            raise ValueError(f"parameter stream_rate_hz must be > 0, got {self.stream_rate_hz}")
        for name in ("blend_duration", "latency_compensation"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"parameter {name} must be >= 0 s, got {getattr(self, name)}")
        if self.rtc and self.mode != "async":
            raise ValueError(f"parameter rtc needs mode 'async' (chunks overlap only there), got mode {self.mode!r}")
        if not self.history_duration > self.limits.max_chunk_age:
            raise ValueError(
                f"parameter history_duration ({self.history_duration} s) must exceed max_chunk_age "
                f"({self.limits.max_chunk_age} s), or fresh chunks could not be anchored"
            )


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"parameter {name} must be a number, got {value!r}")
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"parameter {name} must be a string, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name} must be true or false, got {value!r}")
    return value


def _xyz(name: str, value: object) -> tuple[float, float, float]:
    values = list(value) if isinstance(value, list | tuple | np.ndarray) else None
    if values is None or len(values) != 3:
        raise ValueError(f"parameter {name} must be a list of 3 numbers [x, y, z] in m, got {value!r}")
    x, y, z = (_number(name, v) for v in values)
    return x, y, z


def config_from_parameters(values: dict[str, object]) -> BridgeConfig:
    """Checks and converts raw parameter values (names as in PARAMETERS) into a BridgeConfig."""
    number = {name: _number(name, values[name]) for name, (default, _) in PARAMETERS.items() if _is_number(default)}
    limits = SafetyLimits(
        workspace_min=_xyz("workspace_min", values["workspace_min"]),
        workspace_max=_xyz("workspace_max", values["workspace_max"]),
        max_step_translation=number["max_step_translation"],
        max_step_rotation=number["max_step_rotation"],
        max_linear_speed=number["max_linear_speed"],
        max_angular_speed=number["max_angular_speed"],
        max_chunk_age=number["max_chunk_age"],
        max_clock_skew=number["max_clock_skew"],
        chunk_watchdog=number["chunk_watchdog"],
        state_watchdog=number["state_watchdog"],
        gripper_threshold=number["gripper_threshold"],
    )
    if not number["stream_rate_hz"] > 0:
        raise ValueError(f"parameter stream_rate_hz must be > 0, got {number['stream_rate_hz']}")
    backend_params = BackendParams(
        frame_id=_text("frame_id", values["frame_id"]),
        stream_period=1.0 / number["stream_rate_hz"],
        stop_message_type=_text("stop_message_type", values["stop_message_type"]),
        realman_prefix=_text("realman_prefix", values["realman_prefix"]),
        realman_follow=_flag("realman_follow", values["realman_follow"]),
        servo_node=_text("servo_node", values["servo_node"]),
        servo_command=_text("servo_command", values["servo_command"]),
        moveit_planning_group=_text("moveit_planning_group", values["moveit_planning_group"]),
        moveit_pose_link=_text("moveit_pose_link", values["moveit_pose_link"]),
        moveit_replan_period=number["moveit_replan_period"],
    )
    return BridgeConfig(
        backend=_text("backend", values["backend"]),
        mode=_text("mode", values["mode"]),
        stream_rate_hz=number["stream_rate_hz"],
        dry_run=_flag("dry_run", values["dry_run"]),
        blend_duration=number["blend_duration"],
        latency_compensation=number["latency_compensation"],
        history_duration=number["history_duration"],
        limits=limits,
        backend_params=backend_params,
        rtc=_flag("rtc", values["rtc"]),
    )


def _is_number(default: object) -> bool:
    return isinstance(default, int | float) and not isinstance(default, bool)


class ArmBridgeNode(Node):
    """Chunks in, safe streaming motion out (see the module docstring for topics, services, parameters)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            # dynamic typing: YAML's [0, 0, 0] or 100 must not fail on int-vs-double; config_from_parameters checks.
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True, dynamic_typing=True)
            )
        self.config = config_from_parameters({name: self.get_parameter(name).value for name in PARAMETERS})
        limits = self.config.limits

        self._lock = threading.Lock()
        self._machine = EnableStateMachine()
        self._history = PoseHistory(self.config.history_duration, max_extrapolation_s=limits.state_watchdog)
        self._chunk_watchdog = Watchdog("chunk watchdog (no action chunk)", limits.chunk_watchdog)
        self._state_watchdog = Watchdog("state watchdog (no robot state)", limits.state_watchdog)
        self._book = DiagnosticsBook(f"{self.get_name()}: arm bridge", hardware_id=self.config.backend)
        self._stats = StreamStats()
        self._motion: Motion | None = None
        self._last_command: Pose | None = None
        self._last_sample_ns: int | None = None
        self._last_gripper: float | None = None
        self._last_capture_ns: int | None = None
        self._request_due_ns: int | None = None
        self._speed_limited = False
        self._period_ns = round(NANOSECONDS_PER_SECOND / self.config.stream_rate_hz)
        self._inference_delay = DelayEstimate()
        self._chunk_time_step = 0.0

        self.backend = make_backend(self.config.backend, self, self.config.backend_params)
        self.backend.add_state_callback(self._on_state)

        self._target_pub = self.create_publisher(PoseStamped, "~/target_pose", qos.COMMAND)
        self._request_pub = self.create_publisher(Header, "chunk_request", qos.COMMAND)
        if self.config.rtc:
            self._rtc_pub = self.create_publisher(ChunkRequest, "rtc_chunk_request", qos.COMMAND)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.ACTION_CHUNK)
        self.create_subscription(Bool, "estop", self._on_estop, qos.SAFETY)
        self.create_service(SetBool, "~/enable", self._on_enable)
        # The stream must not wait behind chunk processing or service calls: its own group.
        self._stream_timer = self.create_timer(
            1.0 / self.config.stream_rate_hz, self._on_stream_tick, MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(DIAGNOSTICS_PERIOD, self._publish_diagnostics)
        self._book.set("mode", self.config.mode)
        self._book.set("state", self._machine.state.value)
        self._book.set_status(DiagnosticStatus.WARN, self._machine.reason)
        self.get_logger().info(
            f"arm bridge ready: backend {self.config.backend}, mode {self.config.mode}, "
            f"{self.config.stream_rate_hz:g} Hz{', DRY RUN' if self.config.dry_run else ''}; DISABLED until ~/enable"
        )

    # ---- inputs -----------------------------------------------------------------------------------------

    def _on_state(self, stamp_ns: int, pose: Pose) -> None:
        self._history.add(stamp_ns, pose)
        with self._lock:
            self._state_watchdog.feed(self.get_clock().now().nanoseconds)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            if request.data:
                was_enabled = self._machine.enabled
                decision = self._machine.request_enable(self._enable_preconditions(now_ns))
                if decision.allowed and not was_enabled:
                    self._start(now_ns)
                elif not decision.allowed:
                    self._book.count("enable_refused")
            else:
                decision = self._machine.disable("disabled by ~/enable data=false")
                self._halt()
            self._update_status()
        # rclpy binds one severity to each logging call site: one call per severity.
        if decision.allowed:
            self.get_logger().info(f"~/enable: {decision.reason}")
        else:
            self.get_logger().warning(f"~/enable: {decision.reason}")
        response.success, response.message = decision.allowed, decision.reason
        return response

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            decision = self._machine.estop(bool(msg.data))
            if msg.data:
                self._book.count("estop_events")
                self._halt()
            self._update_status()
        if msg.data:
            self.get_logger().error(f"estop: {decision.reason}")
        else:
            self.get_logger().info(f"estop: {decision.reason}")

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._book.count("chunks_received")
        now_ns = self.get_clock().now().nanoseconds
        try:
            chunk = from_msg(msg, REQUIRED_DIMS)
        except ChunkRejectedError as error:
            with self._lock:
                self._reject("malformed", str(error), now_ns)
            return
        with self._lock:
            if not self._machine.enabled:
                self._book.count("chunks_ignored_disabled")
                self.get_logger().info(
                    f"chunk {chunk.sequence} ignored: bridge is {self._machine.state.value}", throttle_duration_sec=5.0
                )
                return
            self._admit(chunk, now_ns)

    # ---- chunk -> motion --------------------------------------------------------------------------------

    def _admit(self, chunk: TimedChunk, now_ns: int) -> None:
        """Runs every chunk rule and installs the chunk's motion (caller holds the lock)."""
        limits, prefix = self.config.limits, f"chunk {chunk.sequence}"
        if chunk.frame_id != self.config.backend_params.frame_id:
            self._reject(
                "frame",
                f"{prefix}: frame_id {chunk.frame_id!r} differs from the bridge's frame_id "
                f"{self.config.backend_params.frame_id!r}",
                now_ns,
            )
            return
        if self.config.mode == "sync" and self._request_due_ns is not None:
            self._reject(
                "busy",
                f"{prefix}: arrived while the previous chunk's execute_rows are still running (sync mode executes "
                "one requested chunk at a time; use mode async for overlapping chunks)",
                now_ns,
            )
            return
        timing = check_chunk_stamp(chunk.capture_time_ns, now_ns, self._last_capture_ns, limits)
        if not timing.allowed:
            self._reject("timing", f"{prefix}: {timing.reason}", now_ns)
            return
        try:
            anchor = self._history.lookup(chunk.capture_time_ns)
        except PoseLookupError as error:
            self._reject("no_pose", f"{prefix}: no end-effector pose at the capture stamp: {error}", now_ns)
            return

        rows = chunk.execute_rows if self.config.mode == "sync" else chunk.rows
        deltas = np.stack([chunk.column(name) for name in DELTA_DIMS], axis=1)[:rows]
        deltas, step_reasons = clamp_steps(deltas, limits)
        self._count_and_log("rows_step_clamped", prefix, step_reasons)
        targets, workspace_reasons = [], []
        for row, target in enumerate(apply_deltas(anchor, deltas)):
            clamped, reason = clamp_to_workspace(target, limits)
            targets.append(clamped)
            if reason is not None:
                workspace_reasons.append(f"row {row}: {reason}")
        self._count_and_log("rows_workspace_clamped", prefix, workspace_reasons)
        grippers, gripper_reasons = [], []
        for row, value in enumerate(chunk.column(GRIPPER_DIM)[:rows]):
            command, reason = gripper_command(float(value), limits)
            grippers.append(command)
            if reason is not None:
                gripper_reasons.append(f"row {row}: {reason}")
        self._count_and_log("rows_gripper_clipped", prefix, gripper_reasons)

        offset = (
            (now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND
            if self.config.mode == "sync"
            else self.config.latency_compensation
        )
        due = row_due_times_ns(chunk.capture_time_ns, chunk.time_step, rows, offset)
        waypoints = [
            Waypoint(due_ns=int(t), pose=pose, gripper=g, row=i)
            for i, (t, pose, g) in enumerate(zip(due, targets, grippers, strict=True))
        ]
        kept, late = drop_late(waypoints, now_ns)
        if late:
            self._book.count("rows_dropped_late", len(late))
        if not kept:
            self._reject(
                "late",
                f"{prefix}: all {len(late)} rows are already due (the last was due "
                f"{(now_ns - late[-1].due_ns) / 1e9:.3f} s ago); a policy this slow needs mode sync or "
                "latency_compensation",
                now_ns,
            )
            return

        start = self._motion.sample(now_ns) if self._motion is not None else anchor
        trajectory = Trajectory(start_ns=now_ns, start=start, waypoints=tuple(kept))
        blend_ns = round(self.config.blend_duration * NANOSECONDS_PER_SECOND)
        self._motion = switch_to(self._motion or Hold(start, now_ns), trajectory, now_ns, blend_ns)
        self._last_capture_ns = chunk.capture_time_ns
        self._chunk_watchdog.feed(now_ns)
        if self.config.mode == "sync":
            self._request_due_ns = kept[-1].due_ns
        self._book.count("chunks_accepted")
        self._book.set("last_chunk_age_s", (now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND)
        if self.config.rtc:
            self._inference_delay.update((now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND)
            self._chunk_time_step = chunk.time_step
            self._request_with_motion(now_ns)
        if self.config.dry_run:
            for waypoint in kept:
                self.get_logger().info(
                    f"dry run: {prefix} row {waypoint.row} due in {(waypoint.due_ns - now_ns) / 1e9:+.3f} s -> "
                    f"position {np.round(waypoint.pose.position, 5).tolist()} quaternion(wxyz) "
                    f"{np.round(waypoint.pose.quaternion, 5).tolist()} gripper {waypoint.gripper:g}"
                )

    def _reject(self, kind: str, reason: str, now_ns: int) -> None:
        """Counts and logs a refused chunk; in sync mode an idle, enabled bridge asks for another one."""
        self._book.count(f"chunks_rejected_{kind}")
        self._book.set("last_rejection", reason)
        self.get_logger().warning(f"rejected {reason}")
        if self.config.mode == "sync" and self._machine.enabled and self._request_due_ns is None:
            self._publish_request(now_ns)
        if self.config.rtc and self._machine.enabled:
            self._request_with_motion(now_ns)

    def _count_and_log(self, counter: str, prefix: str, reasons: list[str]) -> None:
        if reasons:
            self._book.count(counter, len(reasons))
            self.get_logger().warning(f"{prefix}: " + "; ".join(reasons))

    # ---- streaming --------------------------------------------------------------------------------------

    def _on_stream_tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        tick_ns = time.monotonic_ns()
        with self._lock:
            if not self._machine.enabled:
                return
            state = self._state_watchdog.check(now_ns)
            if not state.allowed:
                self._book.count("watchdog_state_trips")
                self._machine.disable(state.reason)
                self._halt()
                self._update_status()
                self.get_logger().error(f"{state.reason}: arm stopped and disabled; re-enable when the state is back")
                return
            chunk = self._chunk_watchdog.check(now_ns)
            if not chunk.allowed:
                self._on_chunk_silence(chunk, now_ns)
            self._stream(now_ns, tick_ns)

    def _stream(self, now_ns: int, tick_ns: int) -> None:
        """Samples the motion, limits its speed and sends it (caller holds the lock)."""
        if self._motion is None:
            return
        self._motion = settle(self._motion, now_ns)
        target = self._motion.sample(now_ns)
        command, reason = target, None
        if self._last_command is not None and self._last_sample_ns is not None:
            # The same clock as the motion's samples, so the allowed step matches the time the motion advanced.
            dt = min(now_ns - self._last_sample_ns, MAX_TICK_PERIODS * self._period_ns) / NANOSECONDS_PER_SECOND
            command, reason = limit_speed(self._last_command, target, dt, self.config.limits)
        self._speed_limited = reason is not None
        if reason is not None:
            self._book.count("stream_speed_limited")
            self.get_logger().warning(f"speed limit: {reason}", throttle_duration_sec=1.0)
        idle = self._last_command is not None and (
            float(np.linalg.norm(command.position - self._last_command.position)) < 1e-7
            and rotation_angle(command.quaternion, self._last_command.quaternion) < 1e-6
        )
        self._stats.record(tick_ns, idle)
        self._last_command, self._last_sample_ns = command, now_ns

        frame_id = self.config.backend_params.frame_id
        self._target_pub.publish(pose_stamped(command, now_ns, frame_id))
        gripper = self._motion.gripper(now_ns)
        gripper_changed = gripper is not None and gripper != self._last_gripper
        if self.config.dry_run:
            self.get_logger().debug(f"dry run: target {np.round(command.position, 5).tolist()}")
            if gripper_changed:
                self.get_logger().info(f"dry run: gripper -> {gripper:g}")
        else:
            self.backend.send_target(command, now_ns)
            if gripper_changed:
                self.backend.send_gripper(gripper)
        if gripper_changed:
            self._last_gripper = gripper

        if self._request_due_ns is not None and now_ns >= self._request_due_ns and not self._speed_limited:
            self._request_due_ns = None
            self._publish_request(now_ns)

    def _on_chunk_silence(self, decision: Decision, now_ns: int) -> None:
        """A silent policy: hold where the command is now; sync mode asks again (the request may be lost)."""
        self._book.count("watchdog_chunk_trips")
        hold = self._last_command or (self._motion.sample(now_ns) if self._motion is not None else None)
        if hold is not None:
            self._motion = Hold(hold, now_ns, self._last_gripper)
        self._request_due_ns = None
        self.get_logger().warning(f"{decision.reason}: holding position")
        if self.config.mode == "sync":
            self._publish_request(now_ns)
        if self.config.rtc:
            self._request_with_motion(now_ns)

    def _publish_request(self, now_ns: int) -> None:
        self._request_pub.publish(Header(stamp=ns_to_time(now_ns), frame_id=self.config.backend_params.frame_id))
        self._book.count("chunk_requests")
        # Silence is measured from the request: the policy has chunk_watchdog seconds to answer.
        self._chunk_watchdog.feed(now_ns)

    def _request_with_motion(self, now_ns: int) -> None:
        """rtc: asks for the next chunk with the motion it will have to continue (caller holds the lock)."""
        motion = committed_motion(
            self._motion,
            now_ns,
            self._chunk_time_step,
            self._inference_delay.seconds,
            self.config.latency_compensation,
            self.config.backend_params.frame_id,
        )
        self._rtc_pub.publish(rtc_request_msg(motion))
        self._book.count("chunk_requests")
        self._book.set("rtc_inference_delay_s", self._inference_delay.seconds)
        self._chunk_watchdog.feed(now_ns)

    # ---- state changes ----------------------------------------------------------------------------------

    def _enable_preconditions(self, now_ns: int) -> list[Decision]:
        latest = self._history.latest()
        if latest is None:
            return [Decision.deny("no robot state received yet")]
        stamp_ns, pose = latest
        age = (now_ns - stamp_ns) / NANOSECONDS_PER_SECOND
        fresh = (
            Decision.allow()
            if age <= self.config.limits.state_watchdog
            else Decision.deny(f"robot state is {age:.3f} s old (state_watchdog {self.config.limits.state_watchdog} s)")
        )
        inside = in_workspace(pose.position, self.config.limits)
        return [fresh, Decision(inside.allowed, f"end-effector {inside.reason}")]

    def _start(self, now_ns: int) -> None:
        """Newly enabled: hold the measured pose, then (sync) ask for the first chunk (caller holds the lock)."""
        latest = self._history.latest()
        assert latest is not None  # guaranteed by _enable_preconditions
        self._motion = Hold(latest[1], now_ns)
        self._last_command, self._last_sample_ns, self._last_gripper = None, None, None
        self._last_capture_ns, self._request_due_ns = None, None
        self._stats.reset()
        self._chunk_watchdog.feed(now_ns)
        if self.config.mode == "sync":
            self._publish_request(now_ns)
        if self.config.rtc:
            self._request_with_motion(now_ns)

    def _halt(self) -> None:
        """Forget the motion and stop the arm (caller holds the lock)."""
        self._motion, self._last_command, self._request_due_ns = None, None, None
        self._chunk_watchdog.disarm()
        if self.config.dry_run:
            self.get_logger().info("dry run: stop")
        else:
            self.backend.stop()

    def before_shutdown(self) -> None:
        """The process is ending (Ctrl-C, SIGTERM): an enabled arm is stopped where it is, and the stop is
        delivered before the publishers go. A streaming controller would hold without it; a MoveIt execution or
        a Realman trajectory in progress would run on."""
        with self._lock:
            if not self._machine.enabled:
                return
            self._machine.disable("the arm bridge shut down")
            self._halt()
            self._update_status()
        self.get_logger().warning("shutting down: arm stopped and disabled")
        for publisher in self.publishers:
            publisher.wait_for_all_acked(Duration(seconds=STOP_DELIVERY_TIMEOUT))

    def _update_status(self) -> None:
        state = self._machine.state
        self._book.set("state", state.value)
        level = {
            ArmState.ENABLED: DiagnosticStatus.OK,
            ArmState.DISABLED: DiagnosticStatus.WARN,
            ArmState.ESTOPPED: DiagnosticStatus.ERROR,
        }[state]
        self._book.set_status(level, self._machine.reason)

    def _publish_diagnostics(self) -> None:
        with self._lock:
            self._book.set("stream_rate_hz", self._stats.rate_hz())
            self._book.set("stream_jitter_ms", self._stats.jitter_s() * 1e3)
            self._book.set("stream_max_period_ms", self._stats.max_period_s() * 1e3)
            self._book.set("idle_fraction", self._stats.idle_fraction())
        self._diagnostics_pub.publish(self._book.to_msg(self.get_clock().now().to_msg()))

    # ---- for tests and tools ----------------------------------------------------------------------------

    @property
    def diagnostics(self) -> DiagnosticsBook:
        return self._book

    @property
    def state(self) -> ArmState:
        return self._machine.state

    def stream_stats(self) -> StreamStats:
        return self._stats


def main(args: list[str] | None = None) -> None:
    run_node(ArmBridgeNode, NODE_NAME, args)


if __name__ == "__main__":
    main()
