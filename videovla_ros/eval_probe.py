"""`EvalProbe`: the evaluator node `videovla_eval`, which does what a person at the robot would do.

It publishes the instruction, calls `sim_arm/reset` and `arm_bridge/enable`, and records the chunks, success,
grasps and pose it sees; while an episode is recorded also the camera and the imagination (see
`videovla_ros.evaluate` for the topics and QoS).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from videovla_msgs.msg import ActionChunk, VideoClip
from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.evaluation_report import FrameTimeline, ImaginedClip
from videovla_ros.image_conversion import image_msg_to_rgb

NODE_NAME = "videovla_eval"
SERVICE_TIMEOUT = 15.0  # s; a reset renders a new scene, an enable waits for fresh robot state


class EvalProbe(Node):
    """The evaluator's node: sends instructions, calls the sim and bridge services, and records what it sees."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._lock = threading.Lock()
        self._instruction_pub = self.create_publisher(String, "instruction", qos.INSTRUCTION)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.ACTION_CHUNK)
        self.create_subscription(Bool, "sim_arm/task_success", self._on_success, qos.ROBOT_STATE)
        self.create_subscription(String, "sim_arm/grasped_objects", self._on_grasped, qos.ROBOT_STATE)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, qos.ROBOT_STATE)
        self._reset_client = self.create_client(Trigger, "sim_arm/reset")
        self._enable_client = self.create_client(SetBool, "arm_bridge/enable")
        self._chunks: list[tuple[float, ActionChunk]] = []
        """(monotonic arrival time [s], message) of every chunk since `clear`."""
        self._success = False
        self._success_stamp: float | None = None
        """The simulated arm's time [s] (newest ee_pose stamp) when success was first reported since `clear`."""
        self._grasped: set[str] = set()
        """Every object the sim reported between the fingers since `clear`."""
        self._pose: PoseStamped | None = None
        self._pose_seen_at = time.monotonic()
        """Wall time at which the newest ee_pose stamp first arrived (a simulated clock that stands still)."""
        self._recording: list[Subscription] = []
        self._camera = FrameTimeline()
        self._clips: list[ImaginedClip] = []

    # ---- callbacks: record ------------------------------------------------------------------------------

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self._lock:
            self._chunks.append((time.monotonic(), msg))

    def _on_success(self, msg: Bool) -> None:
        if msg.data:
            with self._lock:
                if not self._success and self._pose is not None:
                    self._success_stamp = time_to_ns(self._pose.header.stamp) / 1e9
                self._success = True

    def _on_grasped(self, msg: String) -> None:
        names = {name for name in msg.data.split(",") if name}
        if names:
            with self._lock:
                self._grasped |= names

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._lock:
            if self._pose is None or time_to_ns(msg.header.stamp) != time_to_ns(self._pose.header.stamp):
                self._pose_seen_at = time.monotonic()
            self._pose = msg

    def _on_image(self, msg: Image) -> None:
        frame = image_msg_to_rgb(msg)
        with self._lock:
            self._camera.add(time_to_ns(msg.header.stamp), frame)

    def _on_clip(self, msg: VideoClip) -> None:
        frames = np.stack([image_msg_to_rgb(f) for f in msg.frames]) if msg.frames else None
        if frames is None:
            return
        with self._lock:
            self._clips.append(ImaginedClip(time_to_ns(msg.header.stamp), msg.frame_period, frames))

    # ---- what the evaluation reads ------------------------------------------------------------------------

    def clear(self) -> None:
        """Forgets chunks, success and grasps seen so far (called when an episode starts)."""
        with self._lock:
            self._chunks.clear()
            self._success, self._success_stamp = False, None
            self._grasped.clear()

    @property
    def success(self) -> bool:
        with self._lock:
            return self._success

    @property
    def grasped_objects(self) -> tuple[str, ...]:
        """Sorted names of the objects held at some point since `clear`."""
        with self._lock:
            return tuple(sorted(self._grasped))

    def chunks(self) -> list[tuple[float, ActionChunk]]:
        with self._lock:
            return list(self._chunks)

    def last_chunk_time(self) -> float | None:
        with self._lock:
            return self._chunks[-1][0] if self._chunks else None

    @property
    def success_stamp(self) -> float | None:
        with self._lock:
            return self._success_stamp

    def robot_time(self) -> tuple[float, float]:
        """(stamp of the newest ee_pose [s] (0 before the first), wall seconds since that stamp last changed)."""
        with self._lock:
            stamp = time_to_ns(self._pose.header.stamp) / 1e9 if self._pose is not None else 0.0
            return stamp, time.monotonic() - self._pose_seen_at

    def position(self) -> np.ndarray | None:
        """The newest end-effector position [m] in base_link, or None before the first ee_pose."""
        with self._lock:
            pose = self._pose
        if pose is None:
            return None
        return np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z])

    # ---- actions ----------------------------------------------------------------------------------------

    def send_instruction(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def reset_scene(self) -> str:
        """Calls sim_arm/reset; returns its message ("seed N: instruction"); raises RuntimeError on refusal."""
        response = self._call(self._reset_client, Trigger.Request(), "sim_arm/reset")
        if not response.success:
            raise RuntimeError(f"sim_arm/reset refused: {response.message}")
        return response.message

    def set_bridge(self, enabled: bool) -> tuple[bool, str]:
        """Calls arm_bridge/enable; returns (success, message)."""
        response = self._call(self._enable_client, SetBool.Request(data=enabled), "arm_bridge/enable")
        return bool(response.success), str(response.message)

    def _call(self, client: Any, request: Any, name: str) -> Any:
        if not client.wait_for_service(timeout_sec=SERVICE_TIMEOUT):
            raise RuntimeError(f"service {name} is not available after {SERVICE_TIMEOUT} s")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(SERVICE_TIMEOUT):
            client.remove_pending_request(future)
            raise RuntimeError(f"service {name} did not answer within {SERVICE_TIMEOUT} s")
        return future.result()

    def start_recording(self) -> None:
        """Subscribes to the camera and the imagination (which makes the policy decode its video)."""
        with self._lock:
            self._camera = FrameTimeline()
            self._clips = []
        # No QoS event handlers on these: they are destroyed while the executor thread spins, and rclpy's
        # executor adds an event handler whose destruction has begun to its wait set anyway, which kills the
        # thread (InvalidHandle). The subscriptions themselves are destroyed safely.
        no_events = SubscriptionEventCallbacks(use_default_callbacks=False)
        self._recording = [
            self.create_subscription(Image, "image_raw", self._on_image, qos.CAMERA, event_callbacks=no_events),
            self.create_subscription(
                VideoClip, "imagination/clip", self._on_clip, qos.IMAGINATION, event_callbacks=no_events
            ),
        ]

    def stop_recording(self) -> tuple[list[ImaginedClip], FrameTimeline]:
        for subscription in self._recording:
            self.destroy_subscription(subscription)
        self._recording = []
        with self._lock:
            return list(self._clips), self._camera
