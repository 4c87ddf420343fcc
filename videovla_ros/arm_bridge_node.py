"""The arm bridge: action chunks in, safe streaming end-effector motion out.

Node `arm_bridge` (ArmBridgeNode, a plain rclpy Node). It starts DISABLED and moves only after `~/enable`.

Subscribes:
  action_chunk (videovla_msgs/ActionChunk, ACTION_CHUNK)   chunks of per-step end-effector deltas
  estop (std_msgs/Bool, SAFETY)                             data=true stops and latches until released + re-enabled
  robot state, by backend: ee_pose (PoseStamped) or <realman.prefix>/udp_arm_position (Pose)  (ROBOT_STATE)
Publishes:
  ~/target_pose (geometry_msgs/PoseStamped, COMMAND)       every streamed target (also in dry run), for RViz;
                                                           built only while something subscribes
  chunk_request (std_msgs/Header, COMMAND)                 sync mode: once when enabled (stamp: then), and when
                                                           a chunk is admitted, stamped when its execute_rows
                                                           rows end: the next chunk starts from a frame
                                                           captured then
  rtc_chunk_request (videovla_msgs/ChunkRequest, COMMAND)  rtc mode: when enabled, after each admitted
                                                           or rejected chunk and on the chunk watchdog; carries
                                                           the committed motion (videovla_ros.realtime_chunking)
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz)     counters of every clamp / rejection / drop, stream
                                                           rate, jitter, idle fraction
  the backend's commands (not in dry run): target_pose + gripper_command, rm_driver, servo or MoveItPy
Services:
  ~/enable (std_srvs/SetBool)                              data=true enables (refused with a reason when the
                                                           robot state is silent, the pose is outside the
                                                           workspace or the e-stop is asserted); false disables
Parameters: videovla_ros.bridge_config.BridgeParameters (all read-only; restart the node to change them).
Shutdown: Ctrl-C or SIGTERM while enabled stops the arm through the backend before the node goes away.

Admission: which chunks run and how is decided by videovla_ros.chunk_admission.plan_chunk (pure); this node
holds the lock, logs, counts and publishes. Every callback runs on one thread (main(): an EventsExecutor where
rclpy has one); the stream timer runs only while enabled.

Timing: T_{-1} (the anchor of a chunk's deltas) is the end-effector pose at the chunk's header.stamp, looked
up in the robot state history; row i is due at header.stamp + offset + (i + 1) * time_step (videovla_ros.
trajectory). In async and rtc modes offset = latency_compensation (0: strictly time aligned; rows already due are
dropped), and each new chunk is blended into the current motion. In sync mode the arm stood still while the
policy inferred, so the schedule starts at the chunk's arrival (offset = arrival - stamp), only execute_rows
rows of the answer to the outstanding request are executed, and the next chunk is requested for the instant they
are done. The request goes out at once, stamped with that instant: the policy (and a simulated arm keeping
simulated time, which stands still at that frame while the policy thinks) know which frame to wait for however
late the request is delivered, so sync execution in simulated time does not depend on the machine's load.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Bool, Header
from std_srvs.srv import SetBool

from videovla_msgs.msg import ActionChunk, ChunkRequest
from videovla_ros import qos
from videovla_ros.action_chunk import ChunkRejectedError, TimedChunk, from_msg, ns_to_time
from videovla_ros.backends import make_backend
from videovla_ros.backends.base import pose_stamped
from videovla_ros.bridge_config import BridgeConfig, BridgeParameters
from videovla_ros.chunk_admission import (
    AdmissionLimits,
    BridgeState,
    ChunkRejection,
    outstanding_request_ns,
    plan_chunk,
)
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.node_runner import run_node
from videovla_ros.parameters import declare, read
from videovla_ros.realtime_chunking import DelayEstimate, committed_motion
from videovla_ros.realtime_chunking import to_msg as rtc_request_msg
from videovla_ros.safety import (
    ArmState,
    Decision,
    EnableStateMachine,
    Watchdog,
    enable_preconditions,
    stream_command,
)
from videovla_ros.trajectory import (
    DELTA_DIMS,
    GRIPPER_DIM,
    NANOSECONDS_PER_SECOND,
    Hold,
    Motion,
    Pose,
    PoseHistory,
    StreamStats,
    settle,
)

NODE_NAME = "arm_bridge"
REQUIRED_DIMS = (*DELTA_DIMS, GRIPPER_DIM)
DIAGNOSTICS_PERIOD = 1.0
# How long shutting down waits, per publisher, for subscribers to acknowledge the last commands (the stop) [s].
STOP_DELIVERY_TIMEOUT = 0.5
# A streaming tick that comes late may move the arm for the time that passed, but never for longer than this
# many periods: after a stall the command must not jump.
MAX_TICK_PERIODS = 3.0


class ArmBridgeNode(Node):
    """Chunks in, safe streaming motion out (see the module docstring for topics, services, parameters)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, BridgeParameters)
        self.config = BridgeConfig.from_parameters(read(self, BridgeParameters))
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
        self._request_ns: int | None = None  # stamp of the outstanding chunk request (sync)
        self._period_ns = round(NANOSECONDS_PER_SECOND / self.config.stream_rate_hz)
        self._admission_limits = AdmissionLimits(
            safety=limits,
            frame_id=self.config.backend_params.frame_id,
            blend_duration=self.config.blend_duration,
            latency_compensation=self.config.latency_compensation,
        )
        self._inference_delay = DelayEstimate()
        self._chunk_time_step = 0.0

        self.backend = make_backend(self.config.backend, self, self.config.backend_params)
        self.backend.add_state_callback(self._on_state)

        self._target_pub = self.create_publisher(PoseStamped, "~/target_pose", qos.COMMAND)
        self._request_pub = self.create_publisher(Header, "chunk_request", qos.COMMAND)
        if self.config.execution_mode == "rtc":
            self._rtc_pub = self.create_publisher(ChunkRequest, "rtc_chunk_request", qos.COMMAND)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.ACTION_CHUNK)
        self.create_subscription(Bool, "estop", self._on_estop, qos.SAFETY)
        self.create_service(SetBool, "~/enable", self._on_enable)
        # One thread runs every callback (node_runner: a SingleThreadedExecutor costs a fraction of the CPU of a
        # multi-threaded one at 100 Hz); chunk admission and service calls take well under a stream period.
        self._stream_timer = self.create_timer(1.0 / self.config.stream_rate_hz, self._on_stream_tick)
        self._stream_timer.cancel()  # runs only while enabled (_start / _halt)
        self.create_timer(DIAGNOSTICS_PERIOD, self._publish_diagnostics)
        self._book.set("execution_mode", self.config.execution_mode)
        self._book.set("state", self._machine.state.value)
        self._book.set_status(DiagnosticStatus.WARN, self._machine.reason)
        self.get_logger().info(
            f"arm bridge ready: backend {self.config.backend}, execution_mode {self.config.execution_mode}, "
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
                preconditions = enable_preconditions(
                    self._history.latest(), now_ns, self.config.limits, self.backend.state_topic
                )
                decision = self._machine.request_enable(preconditions)
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
        """Runs chunk admission (videovla_ros.chunk_admission) and installs the plan (caller holds the lock)."""
        state = BridgeState(self._history, self._motion, self._last_capture_ns, self._request_ns)
        plan = plan_chunk(chunk, state, now_ns, self.config.execution_mode, self._admission_limits)
        if isinstance(plan, ChunkRejection):
            self._reject(plan.kind, plan.reason, now_ns, plan.request_again)
            return
        prefix = f"chunk {chunk.sequence}"
        for counter, reasons in plan.clamps:
            self._book.count(counter, len(reasons))
            self.get_logger().warning(f"{prefix}: " + "; ".join(reasons))
        if plan.late_rows:
            self._book.count("rows_dropped_late", plan.late_rows)
        self._motion = plan.motion
        self._last_capture_ns = chunk.capture_time_ns
        self._chunk_watchdog.feed(now_ns)
        self._request_ns = None
        if plan.next_request_ns is not None:
            self._publish_request(plan.next_request_ns)
        self._book.count("chunks_accepted")
        self._book.set("last_chunk_age_s", (now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND)
        if self.config.execution_mode == "rtc":
            self._inference_delay.update((now_ns - chunk.capture_time_ns) / NANOSECONDS_PER_SECOND)
            self._chunk_time_step = chunk.time_step
            self._request_with_motion(now_ns)
        if self.config.dry_run:
            for waypoint in plan.waypoints:
                self.get_logger().info(
                    f"dry run: {prefix} row {waypoint.row} due in {(waypoint.due_ns - now_ns) / 1e9:+.3f} s -> "
                    f"position {np.round(waypoint.pose.position, 5).tolist()} quaternion(wxyz) "
                    f"{np.round(waypoint.pose.quaternion, 5).tolist()} gripper {waypoint.gripper:g}"
                )

    def _reject(self, kind: str, reason: str, now_ns: int, request_again: bool = False) -> None:
        """Counts and logs a refused chunk; a refused answer to the outstanding request (sync) is asked again."""
        self._book.count(f"chunks_rejected_{kind}")
        self._book.set("last_rejection", reason)
        self.get_logger().warning(f"rejected {reason}")
        if request_again and self._machine.enabled:
            self._publish_request(now_ns)
        if self.config.execution_mode == "rtc" and self._machine.enabled:
            self._request_with_motion(now_ns)

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
        # The same clock as the motion's samples, so the allowed step matches the time the motion advanced.
        elapsed_ns = now_ns - (self._last_sample_ns if self._last_sample_ns is not None else now_ns)
        dt = min(elapsed_ns, MAX_TICK_PERIODS * self._period_ns) / NANOSECONDS_PER_SECOND
        command, reason, idle = stream_command(self._last_command, target, dt, self.config.limits)
        if reason is not None:
            self._book.count("stream_speed_limited")
            self.get_logger().warning(f"speed limit: {reason}", throttle_duration_sec=1.0)
        self._stats.record(tick_ns, idle)
        self._last_command, self._last_sample_ns = command, now_ns

        frame_id = self.config.backend_params.frame_id
        if self._target_pub.get_subscription_count() > 0:  # nobody listening: no message to build and send
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

    def _on_chunk_silence(self, decision: Decision, now_ns: int) -> None:
        """A silent policy: hold where the command is now; sync mode asks again (the request may be lost). The
        first trip of a silence is logged; repeats while the policy stays silent are only counted."""
        self._book.count("watchdog_chunk_trips")
        hold = self._last_command or (self._motion.sample(now_ns) if self._motion is not None else None)
        if hold is not None:
            self._motion = Hold(hold, now_ns, self._last_gripper)
        if self._chunk_watchdog.silences == 1:
            self.get_logger().warning(f"{decision.reason}: holding position until a chunk arrives")
        if self.config.execution_mode == "sync":
            self._publish_request(now_ns)
        if self.config.execution_mode == "rtc":
            self._request_with_motion(now_ns)

    def _publish_request(self, stamp_ns: int) -> None:
        """sync: asks for a chunk predicted from a frame captured at or after `stamp_ns` (now, or when the
        executing rows end) (caller holds the lock)."""
        self._request_pub.publish(Header(stamp=ns_to_time(stamp_ns), frame_id=self.config.backend_params.frame_id))
        self._request_ns = outstanding_request_ns(self._request_ns, stamp_ns)
        self._book.count("chunk_requests")
        # Silence is measured from the request's instant: the policy has chunk_watchdog seconds to answer.
        self._chunk_watchdog.restart(stamp_ns)

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

    def _start(self, now_ns: int) -> None:
        """Newly enabled: hold the measured pose, then (sync) ask for the first chunk (caller holds the lock)."""
        latest = self._history.latest()
        assert latest is not None  # guaranteed by enable_preconditions
        self._motion = Hold(latest[1], now_ns)
        self._last_command, self._last_sample_ns, self._last_gripper = None, None, None
        self._last_capture_ns, self._request_ns = None, None
        self._stats.reset()
        self._stream_timer.reset()
        self._chunk_watchdog.feed(now_ns)
        if self.config.execution_mode == "sync":
            self._publish_request(now_ns)
        if self.config.execution_mode == "rtc":
            self._request_with_motion(now_ns)

    def _halt(self) -> None:
        """Forget the motion and stop the arm (caller holds the lock)."""
        self._motion, self._last_command, self._request_ns = None, None, None
        self._stream_timer.cancel()
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
    run_node(ArmBridgeNode, NODE_NAME, args, num_threads=1)


if __name__ == "__main__":
    main()
