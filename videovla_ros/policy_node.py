"""`videovla_policy`: the VideoVLA policy as a ROS 2 lifecycle node (camera + instruction in, action chunks out).

The node holds a `videovla_model.contract.Policy` and never imports torch itself; `on_configure` obtains it from
a policy factory (`videovla_ros.policy_factory`: a checkpoint by default, the simulator's scripted expert with
`policy: expert`). Inference runs in its own callback group, so a slow
policy never blocks the camera, instruction or action-server callbacks (spin it with a MultiThreadedExecutor,
as `main` does). When to infer and on which frame is decided by `videovla_ros.inference_scheduler`.

Subscriptions (relative names):
    <camera_topic> (sensor_msgs/Image, QoS CAMERA) when image_transport = "raw", or
    <camera_topic>/compressed (sensor_msgs/CompressedImage, QoS CAMERA) when image_transport = "compressed"
    instruction (std_msgs/String, QoS INSTRUCTION, latched): sets the instruction; preempts a running goal
    chunk_request (std_msgs/Header, QoS COMMAND): with execution_mode = "sync", one inference per request
    rtc_chunk_request (videovla_msgs/ChunkRequest, QoS COMMAND): with execution_mode = "rtc", one inference per
        request, which also carries the arm's committed motion; the answer continues it (real-time chunking:
        videovla_ros.realtime_chunking, videovla_model.rtc)
Publishers:
    action_chunk (videovla_msgs/ActionChunk, QoS ACTION_CHUNK): header.stamp = capture stamp of the image the
        chunk was predicted from; row i holds the per-step delta to the target reached (i + 1) * time_step
        after that capture (row 0 is one step ahead of the observed scene)
    imagination/strip (sensor_msgs/Image rgb8, QoS IMAGINATION): imagined frames side by side
    imagination/frame (sensor_msgs/Image rgb8, QoS IMAGINATION): imagined frames one by one, at their period
    imagination/clip (videovla_msgs/VideoClip, QoS IMAGINATION)
    /diagnostics (diagnostic_msgs/DiagnosticArray): counters chunks_published, chunks_discarded,
        dropped_frames_stale, dropped_frames_unparseable, rejected_instructions, rejected_goals, rejected_rtc_requests,
        inference_errors, imagination_errors;
        gauges inference_time_last/_mean, ros_overhead_last/_mean (image receipt to chunk publish minus
        inference), chunk_rate_hz, policy_load_time, instruction (bounded); the status message names what is
        missing (configuration, activation, camera images on the image topic, an instruction)
Action server:
    execute_instruction (videovla_msgs/action/ExecuteInstruction): runs an instruction until max_chunks,
    timeout, cancel, failure or preemption by a newer goal / instruction; feedback per chunk. Goals are rejected
    (reason logged and counted) while the node is not active or when a goal field is invalid. When a goal ends
    and nothing replaced its instruction, inference stops until the next goal or instruction.
Services: the standard lifecycle services (~/change_state, ~/get_state, ...).
Parameters: see `videovla_ros.policy_parameters.PolicyNodeParameters` (YAML key `/**/videovla_policy`).

Lifecycle: configure loads the policy (and reports its load time); activate subscribes and starts
inference; deactivate stops publishing chunks and fails a running goal; cleanup frees the policy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from videovla_model.contract import Observation, Policy, PolicyMetadata, PolicyOutput, validate_output
from videovla_model.devices import check_device  # torch is imported when it is called
from videovla_msgs.msg import ChunkRequest
from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns, to_msg
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.goals import GoalBook, Outcome
from videovla_ros.image_conversion import check_image_msg, compressed_msg_to_rgb, image_msg_to_rgb
from videovla_ros.imagination import FramePlayback, should_decode
from videovla_ros.inference_scheduler import Frame, InferenceJob, InferenceScheduler, Wait
from videovla_ros.instruction import bounded
from videovla_ros.metrics import RateMeter, RepeatFilter, RunningStats
from videovla_ros.node_runner import run_node
from videovla_ros.parameters import declare, read
from videovla_ros.policy_factory import PolicyFactory, make_policy
from videovla_ros.policy_goals import GoalServer, camera_silence_failure
from videovla_ros.policy_outputs import ChunkContext, PolicyOutputs, chunk_from_output, publish_imagination
from videovla_ros.policy_parameters import PolicyNodeParameters
from videovla_ros.policy_status import PolicyActivity, policy_status, timing_gauges
from videovla_ros.realtime_chunking import MotionSlot, Prefix, prefix_for_capture
from videovla_ros.realtime_chunking import from_msg as rtc_request_from_msg

NODE_NAME = "videovla_policy"
# Inference, inputs, housekeeping, playback and up to a few blocked action-goal threads (one per live goal).
EXECUTOR_THREADS = 8
HOUSEKEEPING_PERIOD = 0.05  # s; goal timeouts and the camera watchdog are checked this often
LOG_REPEAT_PERIOD = 2.0  # s; the same kind of bad input is logged at most this often (every one is counted)


class PolicyNode(LifecycleNode):
    """The VideoVLA policy node (see the module docstring for its interface)."""

    def __init__(self, policy_factory: PolicyFactory = make_policy, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._policy_factory = policy_factory
        # Not read-only: configure reads them again, so `ros2 param set` before a configure takes effect.
        declare(self, PolicyNodeParameters, read_only=False)
        self.diagnostics = DiagnosticsBook(f"{self.get_name()}: policy", hardware_id=self.get_fully_qualified_name())
        self.diagnostics.set_status(DiagnosticStatus.WARN, "unconfigured")
        self.params: PolicyNodeParameters | None = None
        self.policy: Policy | None = None
        self.metadata: PolicyMetadata | None = None
        self.scheduler: InferenceScheduler | None = None
        self.goals = GoalBook()
        self.inference_stats = RunningStats()
        self.overhead_stats = RunningStats()
        self.chunk_rate = RateMeter()
        self._playback = FramePlayback()
        self._frame_log = RepeatFilter(LOG_REPEAT_PERIOD)
        self._error_log = RepeatFilter(LOG_REPEAT_PERIOD)
        self._active = False
        self._active_since_ns: int | None = None
        self._last_error: str | None = None
        self._sequence = 0
        self._state_lock = threading.Lock()

        # Inference has a group of its own so it never blocks inputs; inputs are reentrant because their
        # callbacks only swap a cached message under a lock.
        self._inference_group = MutuallyExclusiveCallbackGroup()
        self._input_group = ReentrantCallbackGroup()
        self._housekeeping_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()

        self._outputs: PolicyOutputs | None = None
        self._instruction_sub: Subscription | None = None
        self._active_subscriptions: list[Subscription] = []
        self._active_timers: list[Timer] = []
        self._wakeup: GuardCondition | None = None
        self._rtc_motion = MotionSlot()
        # Goals and their camera check run on the node clock (simulated under use_sim_time), not the wall clock.
        self._last_frame_clock_ns: int | None = None

        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        # Diagnostics run in every lifecycle state, so their period is read once, at construction.
        diagnostics_period = float(self.get_parameter("diagnostics_period").value)
        self._diagnostics_timer = self.create_timer(
            max(diagnostics_period, 0.01), self._publish_diagnostics, callback_group=self._housekeeping_group
        )
        self._goal_server = GoalServer(
            self, self.goals, self.diagnostics, self._policy_state, self._wake, self._action_group
        )

    # ---- lifecycle ------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read(self, PolicyNodeParameters)
        except ValueError as error:
            return self._configure_failed(str(error))
        try:
            check_device(params.device)
        except ValueError as error:
            return self._configure_failed(f"parameter device: {error}")
        start = time.monotonic()
        source = params.checkpoint if params.policy == "checkpoint" else f"{params.policy} policy"
        try:
            policy = self._policy_factory(params, self)
        except Exception as error:  # any loader failure (missing file, bad config) must not kill the node
            return self._configure_failed(f"could not load {source!r}: {error}")
        load_time = time.monotonic() - start
        metadata = policy.metadata
        if params.embodiment_id not in metadata.embodiment_ids:
            self.get_logger().error(
                f"configure failed: parameter embodiment_id must be one of {list(metadata.embodiment_ids)} "
                f"for this checkpoint, got {params.embodiment_id}"
            )
            return TransitionCallbackReturn.FAILURE

        self.params, self.policy, self.metadata = params, policy, metadata
        self.scheduler = InferenceScheduler(params.execution_mode, params.max_image_age, params.max_instruction_length)
        self.diagnostics.set("policy_load_time", load_time)
        self._outputs = PolicyOutputs.create(self)
        # Subscribed from configure on, so an instruction latched before activation is already known.
        self._instruction_sub = self.create_subscription(
            String, "instruction", self._on_instruction, qos.INSTRUCTION, callback_group=self._input_group
        )
        self.get_logger().info(
            f"loaded {source!r} in {load_time:.2f} s: {metadata.chunk_rows}x{metadata.action_dims} "
            f"actions {list(metadata.action_dim_names)} every {metadata.time_step} s, execution_mode "
            f"{params.execution_mode}, camera {params.image_topic!r}"
        )
        return super().on_configure(state)

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.get_logger().error(f"configure failed: {reason}")
        self.diagnostics.set_status(DiagnosticStatus.ERROR, f"configure failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.params is not None and self.metadata is not None
        params = self.params
        self._wakeup = self.create_guard_condition(self._on_wakeup, callback_group=self._inference_group)
        image_type = Image if params.image_transport == "raw" else CompressedImage
        inputs: list[tuple[Any, str, Callable[[Any], None]]] = [(image_type, params.image_topic, self._on_image)]
        if params.execution_mode == "sync":
            inputs.append((Header, "chunk_request", self._on_chunk_request))
        elif params.execution_mode == "rtc":
            inputs.append((ChunkRequest, "rtc_chunk_request", self._on_rtc_request))
        self._active_subscriptions = [
            self.create_subscription(
                kind,
                topic,
                callback,
                qos.CAMERA if kind is image_type else qos.COMMAND,
                callback_group=self._input_group,
            )
            for kind, topic, callback in inputs
        ]
        timers: list[tuple[float, Callable[[], None]]] = [(HOUSEKEEPING_PERIOD, self._housekeeping)]
        if self.metadata.imagined_frame_period > 0:
            timers.append((self.metadata.imagined_frame_period, self._play_frame))
        self._active_timers = [
            self.create_timer(period, callback, callback_group=self._housekeeping_group) for period, callback in timers
        ]
        with self._state_lock:
            self._sequence = 0
            self._active = True
            self._active_since_ns, self._last_error = time.monotonic_ns(), None
        result = super().on_activate(state)
        self._wakeup.trigger()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("the policy node was deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.diagnostics.set_status(DiagnosticStatus.WARN, "unconfigured")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("the policy node is shutting down")
        self._release()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_control("the policy node is shutting down")
        self._goal_server.destroy()
        super().destroy_node()

    def _stop_control(self, reason: str) -> None:
        with self._state_lock:
            was_active, self._active, self._active_since_ns = self._active, False, None
        for subscription in self._active_subscriptions:
            self.destroy_subscription(subscription)
        for timer in self._active_timers:
            self.destroy_timer(timer)
        self._active_subscriptions, self._active_timers = [], []
        if self._wakeup is not None:
            self.destroy_guard_condition(self._wakeup)
            self._wakeup = None
        self._playback.clear()
        self._rtc_motion.take()
        if self.scheduler is not None:
            self.scheduler.reset()
        if was_active:
            self.goals.end_active(Outcome.FAILED, reason, self._clock_ns())

    def _release(self) -> None:
        with self._state_lock:
            outputs, self._outputs = self._outputs, None
            policy = self.policy
            self.policy = self.metadata = self.scheduler = self.params = None
        close = getattr(policy, "close", None)
        if callable(close):
            close()
        if outputs is not None:
            outputs.destroy(self)
        if self._instruction_sub is not None:
            self.destroy_subscription(self._instruction_sub)
            self._instruction_sub = None

    # ---- inputs ---------------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        receipt = time.monotonic_ns()
        scheduler, params = self.scheduler, self.params
        if scheduler is None or params is None:
            return
        try:
            capture_time_ns = time_to_ns(msg.header.stamp)
            if capture_time_ns == 0:
                raise ValueError("image header.stamp is zero, expected the camera's capture time")
            if isinstance(msg, Image):
                check_image_msg(msg)
        except ValueError as error:
            self._reject_frame(params, error)
            return
        scheduler.offer_frame(Frame(msg, capture_time_ns, receipt))
        self._last_frame_clock_ns = self._clock_ns()
        self._wake()

    def _reject_frame(self, params: PolicyNodeParameters, error: ValueError) -> None:
        self.diagnostics.count("dropped_frames_unparseable")
        self._log_repeated(self._frame_log, f"dropped camera image on {params.image_topic!r}: {error}")

    def _log_repeated(self, gate: RepeatFilter, message: str, error: bool = False) -> None:
        text = gate.filter(message, time.monotonic_ns())
        if text is not None:
            (self.get_logger().error if error else self.get_logger().warning)(text)

    def _on_chunk_request(self, msg: Header) -> None:
        if self.scheduler is not None:
            self.scheduler.request(time_to_ns(msg.stamp))
            self._wake()

    def _on_rtc_request(self, msg: ChunkRequest) -> None:
        params = self.params
        try:
            motion = rtc_request_from_msg(msg)
            if params is not None and motion.frame_id != params.frame_id:
                raise ValueError(
                    f"header.frame_id {motion.frame_id[:64]!r} differs from the policy's frame_id {params.frame_id!r}"
                )
        except ValueError as error:
            self.diagnostics.count("rejected_rtc_requests")
            self._log_repeated(self._error_log, f"rejected request on 'rtc_chunk_request': {error}")
            return
        self._rtc_motion.put(motion)
        self._on_chunk_request(msg.header)

    def _rtc_prefix(self, capture_time_ns: int, metadata: PolicyMetadata) -> Prefix | None:
        """The rows the answer to the pending rtc request must start with (None: no request or nothing to keep)."""
        motion = self._rtc_motion.take()
        if motion is None:
            return None
        try:
            return prefix_for_capture(
                motion, capture_time_ns, metadata.chunk_rows, metadata.time_step, metadata.action_dim_names
            )
        except ValueError as error:
            self._log_repeated(self._error_log, f"real-time chunking off for this chunk: {error}")
            return None

    def _on_instruction(self, msg: String) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        try:
            scheduler.set_instruction(msg.data)
        except ValueError as error:
            self.diagnostics.count("rejected_instructions")
            self.get_logger().warning(f"rejected instruction on 'instruction': {error}")
            return
        self.goals.end_active(Outcome.PREEMPTED, "preempted by a new instruction on 'instruction'", self._clock_ns())
        self.get_logger().info(f"instruction: {bounded(scheduler.instruction)}")
        self._wake()

    def _policy_state(self) -> tuple[bool, PolicyNodeParameters | None, InferenceScheduler | None]:
        with self._state_lock:
            return self._active, self.params, self.scheduler

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.trigger()

    # ---- inference --------------------------------------------------------------------------------------
    def _on_wakeup(self) -> None:
        while True:
            with self._state_lock:
                policy, scheduler, params, outputs = self.policy, self.scheduler, self.params, self._outputs
                if not self._active or policy is None or scheduler is None or params is None or outputs is None:
                    return
            job = scheduler.take_job(self.get_clock().now().nanoseconds)
            if job is Wait.STALE_FRAME:
                self.diagnostics.count("dropped_frames_stale")
                self._log_repeated(
                    self._frame_log,
                    f"dropped camera image on {params.image_topic!r}: "
                    f"older than max_image_age={params.max_image_age} s",
                )
                continue
            if isinstance(job, Wait):
                return
            self._infer(job, policy, params, outputs)

    def _infer(self, job: InferenceJob, policy: Policy, params: PolicyNodeParameters, outputs: PolicyOutputs) -> None:
        message = job.frame.message
        try:
            image = image_msg_to_rgb(message) if isinstance(message, Image) else compressed_msg_to_rgb(message)
        except ValueError as error:
            self._reject_frame(params, error)
            return
        metadata = policy.metadata
        with self._state_lock:
            next_sequence = self._sequence
        decode = should_decode(
            params.publish_imagination, outputs.imagination_subscribers, next_sequence, params.imagination_every
        )
        prefix = self._rtc_prefix(job.frame.capture_time_ns, metadata)
        observation = Observation(
            image=image,
            instruction=job.instruction,
            embodiment_id=params.embodiment_id,
            action_prefix=None if prefix is None else prefix.actions,
            inference_delay_rows=0 if prefix is None else prefix.inference_delay_rows,
        )
        start = time.monotonic_ns()
        try:
            output = policy.infer(observation, imagine=decode)
            validate_output(output, metadata)
        except Exception as error:  # a failing policy is reported and counted; the node keeps serving
            self.diagnostics.count("inference_errors")
            self._last_error = bounded(str(error), 200)
            self._log_repeated(self._error_log, f"inference failed: {error}", error=True)
            self.goals.end_active(Outcome.FAILED, f"inference failed: {error}", self._clock_ns())
            return
        inference_time = (time.monotonic_ns() - start) / 1e9
        self.inference_stats.add(inference_time)
        self._publish_chunk(job, output, inference_time, policy, params, outputs)

    def _publish_chunk(
        self,
        job: InferenceJob,
        output: PolicyOutput,
        inference_time: float,
        policy: Policy,
        params: PolicyNodeParameters,
        outputs: PolicyOutputs,
    ) -> None:
        """Publishes the chunk of `output` unless nobody wants it any more, then its imagination if decoded."""
        with self._state_lock:
            if not self._active or self.scheduler is None or not self.scheduler.is_current(job):
                # Deactivated or a new instruction arrived during inference: nobody wants this chunk.
                self.diagnostics.count("chunks_discarded")
                return
            sequence = self._sequence
            self._sequence += 1
        context = ChunkContext(
            sequence, params.frame_id, params.embodiment_id, inference_time, self.get_clock().now().nanoseconds
        )
        outputs.chunk.publish(to_msg(chunk_from_output(job, output, policy.metadata, context)))
        published = time.monotonic_ns()
        self.diagnostics.count("chunks_published")
        self.chunk_rate.tick(published)
        # What ROS adds on top of the policy: queueing, conversion and message building, receipt to publish.
        self.overhead_stats.add((published - job.frame.receipt_monotonic_ns) / 1e9 - inference_time)
        self._last_error = None
        self._goal_server.on_chunk(inference_time)
        if output.imagination is not None:
            # Decoded only after the chunk is out: the imagined video never delays control.
            failure = publish_imagination(
                policy, output, job, sequence, params.imagination_max_width, outputs, self._playback
            )
            if failure is not None:  # a failed decode costs the picture, never the chunk
                self.diagnostics.count("imagination_errors")
                self._log_repeated(self._error_log, f"imagination decoding failed: {failure}", error=True)

    def _play_frame(self) -> None:
        frame = self._playback.next_frame()
        outputs = self._outputs
        if frame is not None and outputs is not None:
            outputs.frame.publish(frame)

    # ---- housekeeping -----------------------------------------------------------------------------------
    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _housekeeping(self) -> None:
        now = self._clock_ns()
        self.goals.check_timeout(now)
        record, scheduler, params = self.goals.active, self.scheduler, self.params
        if record is not None and scheduler is not None and params is not None:
            failure = camera_silence_failure(record, self._last_frame_clock_ns, now, params)
            if failure is not None:
                self.goals.end_active(Outcome.FAILED, failure, now)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        book, scheduler, params = self.diagnostics, self.scheduler, self.params
        for key, value in timing_gauges(self.inference_stats, self.overhead_stats, self.chunk_rate.rate(now)).items():
            book.set(key, value)
        book.set("instruction", bounded(scheduler.instruction) if scheduler is not None else "''")
        if scheduler is not None and params is not None:
            with self._state_lock:
                active_since, last_error = self._active_since_ns, self._last_error
            book.set_status(*policy_status(PolicyActivity.of(scheduler, params, active_since, last_error), now))
        self._diagnostics_pub.publish(book.to_msg(self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, "videovla_policy", args, num_threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    main()
