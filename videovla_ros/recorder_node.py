"""`recorder`: records your own demonstrations (camera + arm pose + gripper) as training episodes.

A teleoperation source (SpaceMouse, leader arm, MoveIt Servo, hand-guiding) moves the arm; this node only
listens. Per episode it samples at the model's action rate from the messages' stamps (never arrival order):
the newest camera frame at or before each tick, the arm pose interpolated at that frame's capture stamp, the
action rows through the suite's one action convention (`videovla_model.resampling`). Frames and samples are
appended to disk as they come (`videovla_model.recording`): a killed recorder leaves every kept episode valid
and its interrupted one recoverable (`recover_on_start`, or `videovla-recover DATASET`). Decisions live in
`videovla_ros.recorder_session`; this node converts messages and wires topics.

Subscriptions (relative names unless absolute in a parameter):
    <camera_topic> (sensor_msgs/Image, QoS CAMERA) when image_transport = "raw", or
    <camera_topic>/compressed (sensor_msgs/CompressedImage, QoS CAMERA) when image_transport = "compressed"
    ee_pose (geometry_msgs/PoseStamped, QoS ROBOT_STATE) when arm_state = "ee_pose" (sim arm, pose_stream), or
    <realman_prefix>/udp_arm_position (geometry_msgs/Pose, QoS ROBOT_STATE, unstamped: stamped on receipt)
        when arm_state = "udp_arm_position" (Realman rm_driver)
    <gripper_topic> (std_msgs/Float64 0.0 closed .. 1.0 open, QoS COMMAND; "" = no gripper, recorded as open)
    instruction (std_msgs/String, QoS INSTRUCTION, latched): the instruction ~/start records
Publishers:
    ~/status (std_msgs/String, JSON, 2 Hz): state, episode, seconds, frames, dropped_frames, instruction,
        last_outcome, has_pose, tick_origin_ns (stamp of the episode's first tick)
    /diagnostics (diagnostic_msgs/DiagnosticArray)
Services:
    ~/start (std_srvs/Trigger): starts an episode with the latest instruction (refused on a nearly full disk,
        without an instruction or arm pose, or while recording)
    ~/stop (std_srvs/Trigger): keeps the episode (refused, and recording goes on, when it is shorter than
        min_steps or its streams cannot be resampled; the reply says why)
    ~/discard (std_srvs/Trigger): drops the episode
Parameters: see `RecorderNodeParameters` (YAML key `/**/recorder`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from videovla_model.recording import MIN_EPISODE_STEPS, recover
from videovla_model.resampling import ResampleLimits, StreamNames
from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.backends.base import pose_from_msg
from videovla_ros.diagnostics import DIAGNOSTICS_TOPIC, DiagnosticsBook
from videovla_ros.image_conversion import check_image_msg, compressed_msg_to_rgb, image_msg_to_rgb
from videovla_ros.node_runner import run_node
from videovla_ros.parameters import check_fields, declare, parameter, read
from videovla_ros.recorder_session import Outcome, RecorderSession, SessionConfig, min_free_bytes

NODE_NAME = "recorder"
IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "compressed")
ARM_STATES: tuple[str, ...] = ("ee_pose", "udp_arm_position")
STATUS_PERIOD = 0.5  # s
LOG_REPEAT_PERIOD = 2.0  # s; the same kind of bad input is logged at most this often (every one is counted)


@dataclass(frozen=True)
class RecorderNodeParameters:
    """The node's ROS parameters (declared from these fields, read and checked at start-up)."""

    dataset: str = parameter("", "episode dataset folder (created; episodes are appended)", non_empty=True)
    action_rate_hz: float = parameter(10.0, "the model's action rate: one (frame, action) step per tick [Hz]", above=0)
    image_transport: str = parameter("raw", "Image (raw) or CompressedImage (compressed)", choices=IMAGE_TRANSPORTS)
    camera_topic: str = parameter("image_raw", "camera topic (relative name)", non_empty=True)
    arm_state: str = parameter(
        "ee_pose", "ee_pose (PoseStamped) or udp_arm_position (Realman rm_driver Pose, unstamped)", choices=ARM_STATES
    )
    realman_prefix: str = parameter("/rm_driver", "rm_driver's topic prefix")
    frame_id: str = parameter("base_link", "base frame; ee_pose in another frame is ignored", non_empty=True)
    gripper_topic: str = parameter("gripper_command", 'Float64 gripper 0 closed .. 1 open; "" = none (open)')
    embodiment_id: int = parameter(0, "robot id stored with every episode", low=0)
    min_steps: int = parameter(MIN_EPISODE_STEPS, "shorter episodes are refused (one action chunk) [steps]", low=1)
    max_gap: float = parameter(0.5, "a camera or pose stream silent this long ends the episode [s]", above=0)
    max_pose_jump: float = parameter(0.05, "a larger per-step pose change is flagged [m]", above=0)
    min_free_disk_mb: float = parameter(1000.0, "~/start is refused below this much free disk [MB]", low=0)
    recover_on_start: bool = parameter(True, "finalise recordings a killed recorder left in dataset at start-up")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def image_topic(self) -> str:
        return self.camera_topic if self.image_transport == "raw" else f"{self.camera_topic}/compressed"

    @property
    def pose_topic(self) -> str:
        return "ee_pose" if self.arm_state == "ee_pose" else f"{self.realman_prefix.rstrip('/')}/udp_arm_position"

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            dataset=Path(self.dataset).expanduser(),
            action_rate_hz=self.action_rate_hz,
            min_steps=self.min_steps,
            limits=ResampleLimits(max_gap_s=self.max_gap, max_pose_jump_m=self.max_pose_jump),
            min_free_bytes=min_free_bytes(self.min_free_disk_mb),
            embodiment_id=self.embodiment_id,
            stream_names=StreamNames(self.image_topic, self.pose_topic, self.gripper_topic or "gripper"),
            has_gripper=bool(self.gripper_topic),
        )


class RecorderNode(Node):
    """The recorder (see the module docstring for its interface)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, RecorderNodeParameters)
        self.params = read(self, RecorderNodeParameters)
        p = self.params
        self.session = RecorderSession(p.session_config())
        self.diagnostics = DiagnosticsBook(f"{self.get_name()}: recorder", hardware_id=self.get_fully_qualified_name())
        self._instruction = ""
        if p.recover_on_start and Path(p.dataset).expanduser().is_dir():
            self._recover()
        if p.image_transport == "raw":
            self.create_subscription(Image, p.image_topic, self._on_image, qos.CAMERA)
        else:
            self.create_subscription(CompressedImage, p.image_topic, self._on_image, qos.CAMERA)
        if p.arm_state == "ee_pose":
            self.create_subscription(PoseStamped, p.pose_topic, self._on_pose_stamped, qos.ROBOT_STATE)
        else:
            self.create_subscription(PoseMsg, p.pose_topic, self._on_pose, qos.ROBOT_STATE)
        if p.gripper_topic:
            self.create_subscription(Float64, p.gripper_topic, self._on_gripper, qos.COMMAND)
        self.create_subscription(String, "instruction", self._on_instruction, qos.INSTRUCTION)
        self._status_pub = self.create_publisher(String, "~/status", 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.create_timer(STATUS_PERIOD, self._on_status_timer)
        self.create_timer(0.1, self._check_streams)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _recover(self) -> None:
        for outcome in recover(Path(self.params.dataset).expanduser(), min_steps=self.params.min_steps):
            if outcome.episode is not None:
                self.get_logger().warning(
                    f"recovered interrupted recording {outcome.recording_id} as {outcome.episode}"
                )
                self.diagnostics.count("episodes_recovered")
            else:
                self.get_logger().error(
                    f"interrupted recording {outcome.recording_id} kept at {outcome.kept_at}: {outcome.reason}"
                )

    def _refuse(self, counter: str, message: str) -> None:
        self.diagnostics.count(counter)
        self.get_logger().warning(message[:300], throttle_duration_sec=LOG_REPEAT_PERIOD)

    # ---- inputs -----------------------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        arrival = self._now_ns()
        try:
            if isinstance(msg, Image):
                check_image_msg(msg)
                rgb = image_msg_to_rgb(msg)
            else:
                rgb = compressed_msg_to_rgb(msg)
        except ValueError as error:
            self._refuse("frames_unparseable", f"{self.params.image_topic}: frame ignored: {error}")
            return
        self.diagnostics.count("frames_received")
        self.session.on_frame(time_to_ns(msg.header.stamp) or arrival, arrival, rgb)

    def _on_pose_stamped(self, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.params.frame_id:
            self._refuse("poses_rejected", f"ee_pose in frame {msg.header.frame_id!r}, not {self.params.frame_id!r}")
            return
        self._record_pose(msg.pose, time_to_ns(msg.header.stamp))

    def _on_pose(self, msg: PoseMsg) -> None:
        self._record_pose(msg, 0)

    def _record_pose(self, msg: PoseMsg, stamp_ns: int) -> None:
        arrival = self._now_ns()
        try:
            pose = pose_from_msg(msg)
        except ValueError as error:
            self._refuse("poses_rejected", f"{self.params.pose_topic}: sample ignored: {error}")
            return
        # A zero stamp means the publisher did not stamp it (rm_driver's Pose): receipt time is the best estimate.
        mark = self.session.on_pose(stamp_ns or arrival, arrival, pose.position, pose.quaternion)
        if mark:
            self.diagnostics.count("pose_jumps")
            self.get_logger().warning(mark, throttle_duration_sec=LOG_REPEAT_PERIOD)

    def _on_gripper(self, msg: Float64) -> None:
        value = float(msg.data)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            self._refuse("gripper_rejected", f"{self.params.gripper_topic}: {value!r} ignored, expected 0 .. 1")
            return
        self.session.on_gripper(self._now_ns(), value)

    def _on_instruction(self, msg: String) -> None:
        self._instruction = msg.data

    # ---- services ---------------------------------------------------------------------------------------

    def _reply(self, outcome: Outcome, response: Trigger.Response, counter: str) -> Trigger.Response:
        response.success, response.message = outcome.ok, outcome.message[:500]
        if outcome.ok:
            self.diagnostics.count(counter)
            self.get_logger().info(outcome.message[:300])
        else:
            self.get_logger().warning(outcome.message[:300])
        return response

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        del request  # Trigger has no fields: the instruction is the latched one
        return self._reply(self.session.start(self._instruction, self._now_ns()), response, "episodes_started")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        del request
        return self._reply(self.session.stop(), response, "episodes_kept")

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        del request
        return self._reply(self.session.discard(), response, "episodes_discarded")

    # ---- housekeeping -----------------------------------------------------------------------------------

    def _check_streams(self) -> None:
        outcome = self.session.check_streams(self._now_ns())
        if outcome is not None:
            self.diagnostics.count("episodes_ended_by_fault")
            self.diagnostics.set("last_fault", outcome.message[:200])
            self.get_logger().error(outcome.message[:300])

    def _on_status_timer(self) -> None:
        status = self.session.status(self._now_ns())
        self._status_pub.publish(String(data=json.dumps(dataclasses.asdict(status))))
        for key in ("seconds", "frames", "dropped_frames", "episode"):
            self.diagnostics.set(key, float(getattr(status, key)))
        self.diagnostics.set("state", status.state)
        level = DiagnosticStatus.WARN if self.diagnostics.counter("episodes_ended_by_fault") else DiagnosticStatus.OK
        self.diagnostics.set_status(level, status.last_outcome or status.state)
        self._diagnostics_pub.publish(self.diagnostics.to_msg(self.get_clock().now().to_msg()))

    def before_shutdown(self) -> None:
        """Keeps a running episode when it can be kept; otherwise leaves it on disk for recovery."""
        if self.session.recording is None:
            return
        outcome = self.session.stop()
        if not outcome.ok and self.session.recording is not None:
            self.session.recording.mark("recorder shut down while recording")
            self.session.recording.close()
        self.get_logger().warning(f"shut down while recording: {outcome.message[:300]}")


def main(args: list[str] | None = None) -> None:
    run_node(RecorderNode, NODE_NAME, args, num_threads=1)


if __name__ == "__main__":
    main()
