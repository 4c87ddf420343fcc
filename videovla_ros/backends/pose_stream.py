"""Generic pose-stream backend: PoseStamped targets out, PoseStamped end-effector state in.

Topics (relative):
  publishes  target_pose (geometry_msgs/PoseStamped, absolute end-effector target in frame_id)
             gripper_command (std_msgs/Float64, 0.0 = closed .. 1.0 = open)
  subscribes ee_pose (geometry_msgs/PoseStamped, the current end-effector pose in frame_id)
This is what the suite's simulated arm takes, and what a user's own arm driver can implement in a few lines.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_msgs.msg import Float64

from videovla_ros import qos
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.backends.base import ArmBackend, BackendParams, pose_from_msg, pose_stamped
from videovla_ros.trajectory import NANOSECONDS_PER_SECOND, Pose

EE_POSE_TOPIC = "ee_pose"
TARGET_POSE_TOPIC = "target_pose"
GRIPPER_TOPIC = "gripper_command"


class EePoseState(ArmBackend):
    """Shared by backends whose arm reports its end-effector pose on `ee_pose`."""

    def __init__(self, node: Node, params: BackendParams) -> None:
        super().__init__(node, params)
        self.latest_pose: Pose | None = None
        self.state_subscription = node.create_subscription(
            PoseStamped, EE_POSE_TOPIC, self._on_ee_pose, qos.ROBOT_STATE
        )

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.params.frame_id:
            self.node.get_logger().warning(
                f"{EE_POSE_TOPIC}: frame_id {msg.header.frame_id!r} differs from frame_id "
                f"{self.params.frame_id!r}; sample ignored",
                throttle_duration_sec=5.0,
            )
            return
        try:
            pose = pose_from_msg(msg.pose)
        except ValueError as error:
            self.node.get_logger().warning(f"{EE_POSE_TOPIC}: sample ignored: {error}", throttle_duration_sec=5.0)
            return
        stamp_ns = time_to_ns(msg.header.stamp)
        # A zero stamp means the publisher did not stamp it; receipt time is the best estimate then.
        self.latest_pose = pose
        self._report_state(stamp_ns or self.node.get_clock().now().nanoseconds, pose)


class PoseStreamBackend(EePoseState):
    name = "pose_stream"

    def __init__(self, node: Node, params: BackendParams) -> None:
        super().__init__(node, params)
        self._target = node.create_publisher(PoseStamped, TARGET_POSE_TOPIC, qos.COMMAND)
        self._gripper = node.create_publisher(Float64, GRIPPER_TOPIC, qos.COMMAND)
        self._sent: tuple[Pose, PoseStamped] | None = None

    def send_target(self, pose: Pose, stamp_ns: int) -> None:
        # A held pose is sent again every stream period: only its stamp changes (publish copies the message).
        if self._sent is None or self._sent[0] is not pose:
            self._sent = (pose, pose_stamped(pose, stamp_ns, self.params.frame_id))
        else:
            stamp = self._sent[1].header.stamp
            stamp.sec, stamp.nanosec = divmod(stamp_ns, NANOSECONDS_PER_SECOND)
        self._target.publish(self._sent[1])

    def send_gripper(self, opening: float) -> None:
        self._gripper.publish(Float64(data=float(opening)))

    def stop(self) -> None:
        # A pose stream has no stop command: targeting the measured pose is the stop.
        if self.latest_pose is not None:
            self.send_target(self.latest_pose, self.node.get_clock().now().nanoseconds)
