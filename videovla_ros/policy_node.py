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
Parameters: see `PolicyNodeParameters` (YAML key `/**/videovla_policy`).

Lifecycle: configure loads the policy (and reports its load time); activate subscribes and starts
inference; deactivate stops publishing chunks and fails a running goal; cleanup frees the policy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from videovla_model.contract import (
    Observation,
    Policy,
    PolicyMetadata,
    PolicyOutput,
    validate_frames,
    validate_output,
)
from videovla_model.devices import check_device  # torch is imported when it is called
from videovla_msgs.action import ExecuteInstruction
from videovla_msgs.msg import ActionChunk, ChunkRequest, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import TimedChunk, time_to_ns, to_msg
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.execution_mode import DEFAULT_EXECUTION_MODE, EXECUTION_MODE_DESCRIPTION, EXECUTION_MODES
from videovla_ros.goals import GoalBook, GoalRecord, Outcome, check_goal
from videovla_ros.image_conversion import check_image_msg, compressed_msg_to_rgb, image_msg_to_rgb
from videovla_ros.imagination import (
    IMAGINATION_MODES,
    FramePlayback,
    frame_msgs,
    should_decode,
    strip_msg,
    video_clip_msg,
)
from videovla_ros.inference_scheduler import Frame, InferenceJob, InferenceScheduler, Wait
from videovla_ros.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH, bounded
from videovla_ros.metrics import RateMeter, RepeatFilter, RunningStats
from videovla_ros.node_runner import run_node
from videovla_ros.parameters import dataclass_from_values
from videovla_ros.policy_factory import POLICY_SOURCES, PolicyFactory, make_policy
from videovla_ros.policy_status import PolicyActivity, policy_status
from videovla_ros.realtime_chunking import MotionSlot, Prefix, prefix_for_capture
from videovla_ros.realtime_chunking import from_msg as rtc_request_from_msg

NODE_NAME = "videovla_policy"
IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")
# Inference, inputs, housekeeping, playback and up to a few blocked action-goal threads (one per live goal).
EXECUTOR_THREADS = 8
HOUSEKEEPING_PERIOD = 0.05  # s; goal timeouts and the camera watchdog are checked this often
LOG_REPEAT_PERIOD = 2.0  # s; the same kind of bad input is logged at most this often (every one is counted)


def _describe(text: str) -> dict[str, Any]:
    return {"description": text}


@dataclass(frozen=True)
class PolicyNodeParameters:
    """The node's ROS parameters (declared from these fields, read and validated on configure)."""

    policy: str = field(
        default="checkpoint", metadata=_describe('"checkpoint" or "expert" (simulator only; see policy_factory)')
    )
    checkpoint: str = field(
        default="", metadata=_describe("checkpoint directory given to load_policy (launch argument checkpoint:=)")
    )
    device: str = field(default="cpu", metadata=_describe('torch device, e.g. "cpu" or "cuda:0"'))
    dtype: str = field(
        default="auto",
        metadata=_describe('"auto" (bfloat16 on a GPU that has it, else float32), "float32", "bfloat16", "float16"'),
    )
    num_inference_steps: int = field(default=0, metadata=_describe("denoising steps; 0 = checkpoint default"))
    guidance_scale: float = field(default=-1.0, metadata=_describe("classifier-free guidance; < 0 = default"))
    seed: int = field(default=0, metadata=_describe("seed of the initial diffusion noise"))
    added_latency: float = field(
        default=0.0,
        metadata=_describe("s of wall time added to every inference, e.g. the expert at a large model's latency"),
    )
    embodiment_id: int = field(default=0, metadata=_describe("robot id the policy is conditioned on"))
    image_transport: str = field(default="raw", metadata=_describe('"raw" (Image) or "compressed"'))
    camera_topic: str = field(default="image_raw", metadata=_describe("camera topic (relative name)"))
    execution_mode: str = field(default=DEFAULT_EXECUTION_MODE, metadata=_describe(EXECUTION_MODE_DESCRIPTION))
    max_instruction_length: int = field(
        default=DEFAULT_MAX_INSTRUCTION_LENGTH,
        metadata=_describe("characters; longer instructions (topic or goal) are rejected"),
    )
    max_image_age: float = field(default=0.5, metadata=_describe("s; older camera frames are dropped as stale"))
    image_timeout: float = field(
        default=5.0, metadata=_describe("s; a goal fails when no camera frame arrives for this long; 0 = never")
    )
    publish_imagination: str = field(
        default="auto", metadata=_describe('"auto" (decode when imagination/* has subscribers), "always", "never"')
    )
    imagination_every: int = field(
        default=1, metadata=_describe("decode the imagination of every N-th chunk only (it costs seconds on a CPU)")
    )
    imagination_max_width: int = field(
        default=0, metadata=_describe("px; the strip is subsampled to fit this width; 0 = full size")
    )
    frame_id: str = field(default="base_link", metadata=_describe("frame of the action deltas in ActionChunk"))
    diagnostics_period: float = field(default=1.0, metadata=_describe("s between /diagnostics messages"))

    def __post_init__(self) -> None:
        choices = {
            "image_transport": IMAGE_TRANSPORTS,
            "execution_mode": EXECUTION_MODES,
            "publish_imagination": IMAGINATION_MODES,
            "policy": POLICY_SOURCES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"parameter {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.policy == "checkpoint" and not self.checkpoint:
            raise ValueError(
                "parameter checkpoint is empty: name a checkpoint directory with the launch argument "
                "checkpoint:=/path/to/checkpoint (bringup --checkpoint), or under /**/videovla_policy: "
                "ros__parameters: checkpoint: in the params file (sim:=true uses the shipped default model)"
            )
        if not self.camera_topic:
            raise ValueError("parameter camera_topic must be a topic name, got ''")
        for name in ("max_image_age", "diagnostics_period"):
            if not getattr(self, name) > 0:
                raise ValueError(f"parameter {name} must be > 0 seconds, got {getattr(self, name)}")
        for name in ("image_timeout", "imagination_max_width", "num_inference_steps", "added_latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"parameter {name} must be >= 0, got {getattr(self, name)}")
        if self.max_instruction_length < 1:
            raise ValueError(f"parameter max_instruction_length must be >= 1, got {self.max_instruction_length}")
        if self.imagination_every < 1:
            raise ValueError(f"parameter imagination_every must be >= 1 chunk, got {self.imagination_every}")

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> PolicyNodeParameters:
        """Parameters from ROS values, type-checked by each field's default (an int is accepted as a float)."""
        return dataclass_from_values(cls, values)

    @property
    def image_topic(self) -> str:
        """The topic actually subscribed (image_transport's naming for the compressed stream)."""
        return self.camera_topic if self.image_transport == "raw" else f"{self.camera_topic}/compressed"


@dataclass(frozen=True)
class _Outputs:
    """The lifecycle publishers, created on configure (they publish only while the node is active)."""

    chunk: LifecyclePublisher
    strip: LifecyclePublisher
    frame: LifecyclePublisher
    clip: LifecyclePublisher

    @property
    def imagination_subscribers(self) -> int:
        return sum(p.get_subscription_count() for p in (self.strip, self.frame, self.clip))


class PolicyNode(LifecycleNode):
    """The VideoVLA policy node (see the module docstring for its interface)."""

    def __init__(self, policy_factory: PolicyFactory = make_policy, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._policy_factory = policy_factory
        for spec in dataclasses.fields(PolicyNodeParameters):
            # Dynamic typing: YAML's `max_image_age: 1` must not fail as int-vs-double; `from_values` checks types.
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(**spec.metadata, dynamic_typing=True))
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

        self._outputs: _Outputs | None = None
        self._instruction_sub: Subscription | None = None
        self._active_subscriptions: list[Subscription] = []
        self._active_timers: list[Timer] = []
        self._wakeup: GuardCondition | None = None
        self._rtc_motion = MotionSlot()

        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        # Diagnostics run in every lifecycle state, so their period is read once, at construction.
        diagnostics_period = float(self.get_parameter("diagnostics_period").value)
        self._diagnostics_timer = self.create_timer(
            max(diagnostics_period, 0.01), self._publish_diagnostics, callback_group=self._housekeeping_group
        )
        self._action_server = ActionServer(
            self,
            ExecuteInstruction,
            "execute_instruction",
            execute_callback=self._execute_goal,
            goal_callback=self._on_goal_request,
            cancel_callback=lambda _request: CancelResponse.ACCEPT,
            callback_group=self._action_group,
        )

    # ---- lifecycle ------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = self._read_parameters()
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
        self._outputs = _Outputs(
            chunk=self.create_lifecycle_publisher(ActionChunk, "action_chunk", qos.ACTION_CHUNK),
            strip=self.create_lifecycle_publisher(Image, "imagination/strip", qos.IMAGINATION),
            frame=self.create_lifecycle_publisher(Image, "imagination/frame", qos.IMAGINATION),
            clip=self.create_lifecycle_publisher(VideoClip, "imagination/clip", qos.IMAGINATION),
        )
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
        image_type = Image if params.image_transport == "raw" else CompressedImage
        self._wakeup = self.create_guard_condition(self._on_wakeup, callback_group=self._inference_group)
        self._active_subscriptions = [
            self.create_subscription(
                image_type, params.image_topic, self._on_image, qos.CAMERA, callback_group=self._input_group
            )
        ]
        if params.execution_mode == "sync":
            self._active_subscriptions.append(
                self.create_subscription(
                    Header, "chunk_request", self._on_chunk_request, qos.COMMAND, callback_group=self._input_group
                )
            )
        elif params.execution_mode == "rtc":
            self._active_subscriptions.append(
                self.create_subscription(
                    ChunkRequest,
                    "rtc_chunk_request",
                    self._on_rtc_request,
                    qos.COMMAND,
                    callback_group=self._input_group,
                )
            )
        self._active_timers = [
            self.create_timer(HOUSEKEEPING_PERIOD, self._housekeeping, callback_group=self._housekeeping_group)
        ]
        if self.metadata.imagined_frame_period > 0:
            self._active_timers.append(
                self.create_timer(
                    self.metadata.imagined_frame_period, self._play_frame, callback_group=self._housekeeping_group
                )
            )
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
        self._action_server.destroy()
        super().destroy_node()

    def _read_parameters(self) -> PolicyNodeParameters:
        names = [spec.name for spec in dataclasses.fields(PolicyNodeParameters)]
        return PolicyNodeParameters.from_values({name: self.get_parameter(name).value for name in names})

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
            self.goals.end_active(Outcome.FAILED, reason, time.monotonic_ns())

    def _release(self) -> None:
        with self._state_lock:
            outputs, self._outputs = self._outputs, None
            policy = self.policy
            self.policy = self.metadata = self.scheduler = self.params = None
        close = getattr(policy, "close", None)
        if callable(close):
            close()
        if outputs is not None:
            for publisher in (outputs.chunk, outputs.strip, outputs.frame, outputs.clip):
                self.destroy_lifecycle_publisher(publisher)
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
        self._wake()

    def _reject_frame(self, params: PolicyNodeParameters, error: ValueError) -> None:
        self.diagnostics.count("dropped_frames_unparseable")
        self._log_repeated(self._frame_log, f"dropped camera image on {params.image_topic!r}: {error}")

    def _log_repeated(self, gate: RepeatFilter, message: str, error: bool = False) -> None:
        suppressed = gate.check(message, time.monotonic_ns())
        if suppressed is None:
            return
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        if error:
            self.get_logger().error(message)
        else:
            self.get_logger().warning(message)

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
        self.goals.end_active(Outcome.PREEMPTED, "preempted by a new instruction on 'instruction'", time.monotonic_ns())
        self.get_logger().info(f"instruction: {bounded(scheduler.instruction)}")
        self._wake()

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

    def _infer(self, job: InferenceJob, policy: Policy, params: PolicyNodeParameters, outputs: _Outputs) -> None:
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
            self.goals.end_active(Outcome.FAILED, f"inference failed: {error}", time.monotonic_ns())
            return
        inference_time = (time.monotonic_ns() - start) / 1e9
        self.inference_stats.add(inference_time)

        with self._state_lock:
            if not self._active or self.scheduler is None or not self.scheduler.is_current(job):
                # Deactivated or a new instruction arrived during inference: nobody wants this chunk.
                self.diagnostics.count("chunks_discarded")
                return
            sequence = self._sequence
            self._sequence += 1
        capture_time_ns = job.frame.capture_time_ns
        chunk = TimedChunk(
            capture_time_ns=capture_time_ns,
            frame_id=params.frame_id,
            instruction=job.instruction,
            sequence=sequence,
            actions=output.actions,
            dim_names=metadata.action_dim_names,
            time_step=metadata.time_step,
            execute_rows=metadata.execute_rows,
            embodiment_id=params.embodiment_id,
            inference_time=inference_time,
            capture_to_publish_time=(self.get_clock().now().nanoseconds - capture_time_ns) / 1e9,
        )
        outputs.chunk.publish(to_msg(chunk))
        published = time.monotonic_ns()
        self.diagnostics.count("chunks_published")
        self.chunk_rate.tick(published)
        # What ROS adds on top of the policy: queueing, conversion and message building, receipt to publish.
        self.overhead_stats.add((published - job.frame.receipt_monotonic_ns) / 1e9 - inference_time)
        self._last_error = None
        self._account_goal(inference_time, published)
        # Decoded only now, after the chunk is out: the imagined video never delays control.
        if output.imagination is not None:
            self._publish_imagination(policy, output, message.header.frame_id, job, sequence, params, outputs)

    def _publish_imagination(
        self,
        policy: Policy,
        output: PolicyOutput,
        camera_frame_id: str,
        job: InferenceJob,
        sequence: int,
        params: PolicyNodeParameters,
        outputs: _Outputs,
    ) -> None:
        """Decodes the imagined video of `output` ((T, H, W, 3) uint8) and publishes it in the camera's frame."""
        try:
            frames = policy.decode_imagination(output)
            if frames is None:
                return
            validate_frames(frames)
        except Exception as error:  # a failed decode costs the picture, never the chunk
            self.diagnostics.count("imagination_errors")
            self._log_repeated(self._error_log, f"imagination decoding failed: {error}", error=True)
            return
        period = policy.metadata.imagined_frame_period
        capture = job.frame.capture_time_ns
        outputs.strip.publish(strip_msg(frames, capture, camera_frame_id, params.imagination_max_width))
        outputs.clip.publish(video_clip_msg(frames, capture, camera_frame_id, job.instruction, sequence, period))
        if period > 0:
            self._playback.load(frame_msgs(frames, capture, camera_frame_id, period))

    def _play_frame(self) -> None:
        frame = self._playback.next_frame()
        outputs = self._outputs
        if frame is not None and outputs is not None:
            outputs.frame.publish(frame)

    # ---- action server ----------------------------------------------------------------------------------
    def _on_goal_request(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        with self._state_lock:
            active, params = self._active, self.params
        reason = (
            None if active and params is not None else "the policy node is not active (configure and activate it first)"
        )
        if reason is None:
            assert params is not None
            try:
                check_goal(goal.instruction, goal.max_chunks, goal.timeout, params.max_instruction_length)
            except ValueError as error:
                reason = str(error)
                if error.args[0].startswith("goal instruction"):
                    self.diagnostics.count("rejected_instructions")
        if reason is not None:
            self.diagnostics.count("rejected_goals")
            self.get_logger().warning(f"rejected execute_instruction goal: {reason}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute_goal(self, goal_handle: ServerGoalHandle) -> ExecuteInstruction.Result:
        request, params = goal_handle.request, self.params
        cap = params.max_instruction_length if params is not None else DEFAULT_MAX_INSTRUCTION_LENGTH
        record = self.goals.start(
            goal_handle, request.instruction, request.max_chunks, request.timeout, time.monotonic_ns(), cap
        )
        generation = None
        scheduler = self.scheduler
        if scheduler is None:  # cleaned up between acceptance and execution
            self.goals.end(goal_handle, Outcome.FAILED, "the policy node is not active", time.monotonic_ns())
        elif record.outcome is None:
            generation = scheduler.set_instruction(record.instruction, "goal instruction")
            self.get_logger().info(
                f"goal accepted: {bounded(record.instruction)} "
                f"(max_chunks={record.max_chunks}, timeout={record.timeout} s)"
            )
            self._wake()
        # Blocking is fine: goals run in a reentrant group on a multi-threaded executor.
        while not record.done.wait(0.02):
            if goal_handle.is_cancel_requested:
                self.goals.end(goal_handle, Outcome.CANCELED, "canceled by the client", time.monotonic_ns())
        if scheduler is not None and generation is not None and scheduler.generation == generation:
            # The goal that set the instruction has ended and nothing replaced it: stop producing chunks.
            scheduler.clear_instruction()
        return self._finish_goal(goal_handle, record)

    def _finish_goal(self, goal_handle: ServerGoalHandle, record: GoalRecord) -> ExecuteInstruction.Result:
        outcome = record.outcome
        assert outcome is not None, "a goal is finished only once its outcome is decided"
        if outcome in (Outcome.COMPLETED_LIMIT, Outcome.TIMED_OUT):
            goal_handle.succeed()
        elif outcome == Outcome.CANCELED and goal_handle.status == GoalStatus.STATUS_CANCELING:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        self.get_logger().info(f"goal {bounded(record.instruction)} ended: {outcome.name}: {record.reason}")
        return ExecuteInstruction.Result(
            outcome=int(outcome),
            reason=record.reason,
            chunks_executed=record.chunks,
            elapsed=record.elapsed(time.monotonic_ns()),
        )

    def _account_goal(self, inference_time: float, now_monotonic_ns: int) -> None:
        active = self.goals.active
        if active is None:
            return
        record = self.goals.on_chunk(active.goal_id, now_monotonic_ns)
        if record is None:
            return
        goal_handle: ServerGoalHandle = record.goal_id
        goal_handle.publish_feedback(
            ExecuteInstruction.Feedback(
                chunks_executed=record.chunks, last_inference_time=inference_time, state="executing"
            )
        )

    # ---- housekeeping -----------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic_ns()
        self.goals.check_timeout(now)
        record, scheduler, params = self.goals.active, self.scheduler, self.params
        if record is None or scheduler is None or params is None or params.image_timeout <= 0:
            return
        last_frame = scheduler.last_frame_receipt_monotonic_ns
        since = max(record.accepted_monotonic_ns, last_frame or 0)
        silence = (now - since) / 1e9
        if silence > params.image_timeout:
            self.goals.end_active(Outcome.FAILED, f"no camera image for {silence:.1f} s on {params.image_topic!r}", now)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic_ns()
        book = self.diagnostics
        book.set("inference_time_last", self.inference_stats.last)
        book.set("inference_time_mean", self.inference_stats.mean)
        book.set("ros_overhead_last", self.overhead_stats.last)
        book.set("ros_overhead_mean", self.overhead_stats.mean)
        book.set("chunk_rate_hz", self.chunk_rate.rate(now))
        scheduler, params = self.scheduler, self.params
        book.set("instruction", bounded(scheduler.instruction) if scheduler is not None else "''")
        if scheduler is not None and params is not None:
            with self._state_lock:
                active_since, last_error = self._active_since_ns, self._last_error
            activity = PolicyActivity(
                active_since_ns=active_since,
                instruction=scheduler.instruction,
                last_frame_ns=scheduler.last_frame_receipt_monotonic_ns,
                last_error=last_error,
                image_topic=params.image_topic,
                camera_silence=params.max_image_age,
                waiting_for_request=scheduler.waiting_for_request,
            )
            book.set_status(*policy_status(activity, now))
        self._diagnostics_pub.publish(book.to_msg(self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, "videovla_policy", args, num_threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    main()
