"""Realman backend: streams poses to RealMan's rm_driver (RM65 / RM75 / GEN72, ROS 2 driver 1.1+).

Topics (prefix = parameter realman.prefix, default /rm_driver):
  publishes  <prefix>/movep_canfd_cmd (rm_ros_interfaces/Cartepos {pose, follow}): pose passthrough at the
             streaming rate; the controller does the IK and wants a continuous stream at >= 2 ms period;
             <prefix>/set_gripper_position_cmd (rm_ros_interfaces/Gripperset {position 1..1000 = 0..70 mm,
             block, timeout}); <prefix>/move_stop_cmd (std_msgs/Bool in driver 1.1, std_msgs/Empty in 1.1.6:
             parameter realman.stop_message_type)
  subscribes <prefix>/udp_arm_position (geometry_msgs/Pose, ~200 Hz, unstamped: stamped on receipt)
rm_ros_interfaces is imported only when this backend is chosen.
"""

from __future__ import annotations

from geometry_msgs.msg import Pose as PoseMsg
from rclpy.node import Node
from std_msgs.msg import Bool, Empty

from videovla_ros import qos
from videovla_ros.backends.base import (
    ArmBackend,
    BackendConfigError,
    BackendParams,
    BackendUnavailableError,
    pose_from_msg,
    pose_to_msg,
)
from videovla_ros.trajectory import Pose

# rm_driver rejects pose passthrough points that come faster than every 2 ms.
MIN_STREAM_PERIOD = 0.002
GRIPPER_POSITION_RANGE = (1, 1000)


def gripper_position(opening: float) -> int:
    """0.0 (closed) .. 1.0 (open) -> Gripperset.position 1..1000 (0..70 mm)."""
    low, high = GRIPPER_POSITION_RANGE
    return round(low + min(1.0, max(0.0, opening)) * (high - low))


class RealmanBackend(ArmBackend):
    name = "realman"

    def __init__(self, node: Node, params: BackendParams) -> None:
        super().__init__(node, params)
        try:
            from rm_ros_interfaces.msg import Cartepos, Gripperset
        except ImportError as error:
            raise BackendUnavailableError(
                "backend 'realman' needs the package rm_ros_interfaces (RealMan's ROS 2 messages): build "
                "rm_ros_interfaces from https://github.com/RealManRobot/ros2_rm_robot in your colcon workspace "
                f"and source its install/setup.bash ({error})"
            ) from error
        if params.stream_period < MIN_STREAM_PERIOD:
            raise BackendConfigError(
                f"stream_rate_hz must be at most {1.0 / MIN_STREAM_PERIOD:.0f} Hz for rm_driver's pose passthrough "
                f"(period >= {MIN_STREAM_PERIOD * 1000:.0f} ms), got a period of {params.stream_period * 1000:.2f} ms"
            )
        self._cartepos, self._gripperset = Cartepos, Gripperset
        prefix = params.realman.prefix.rstrip("/")
        self._movep = node.create_publisher(Cartepos, f"{prefix}/movep_canfd_cmd", qos.COMMAND)
        self._gripper = node.create_publisher(Gripperset, f"{prefix}/set_gripper_position_cmd", qos.COMMAND)
        self._stop_type = Bool if params.realman.stop_message_type == "bool" else Empty
        self._stop = node.create_publisher(self._stop_type, f"{prefix}/move_stop_cmd", qos.COMMAND)
        self.state_subscription = node.create_subscription(
            PoseMsg, f"{prefix}/udp_arm_position", self._on_arm_position, qos.ROBOT_STATE
        )

    def _on_arm_position(self, msg: PoseMsg) -> None:
        try:
            pose = pose_from_msg(msg)
        except ValueError as error:
            self.node.get_logger().warning(f"udp_arm_position: sample ignored: {error}", throttle_duration_sec=5.0)
            return
        self._report_state(self.node.get_clock().now().nanoseconds, pose)

    def send_target(self, pose: Pose, stamp_ns: int) -> None:
        self._movep.publish(self._cartepos(pose=pose_to_msg(pose), follow=self.params.realman.follow))

    def send_gripper(self, opening: float) -> None:
        self._gripper.publish(self._gripperset(position=gripper_position(opening), block=False))

    def stop(self) -> None:
        # Bool.data is the driver's "block" flag for the stop call; a stop should return only once it holds.
        self._stop.publish(Bool(data=True) if self._stop_type is Bool else Empty())
