"""MoveIt Servo backend: streams targets to a running servo node, as poses or as twists.

Topics:
  publishes  <servo.node>/pose_cmd (geometry_msgs/PoseStamped) with servo.command "pose", or
             <servo.node>/delta_twist_cmds (geometry_msgs/TwistStamped) with servo.command "twist": the
             velocity that moves the previous target to the new one in one streaming period (base frame);
             gripper_command (std_msgs/Float64, 0.0 = closed .. 1.0 = open)
  subscribes ee_pose (geometry_msgs/PoseStamped, current end-effector pose)
Servo must be configured for the same frame (frame_id) and the command type switched on in its own
parameters (e.g. the switch_command_type service of MoveIt Servo 2.x).
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float64
from transforms3d.quaternions import qinverse, qmult, quat2axangle

from videovla_ros import qos
from videovla_ros.action_chunk import ns_to_time
from videovla_ros.backends.base import BackendParams, pose_stamped
from videovla_ros.backends.pose_stream import GRIPPER_TOPIC, EePoseState
from videovla_ros.trajectory import NANOSECONDS_PER_SECOND, Pose


def twist_between(previous: Pose, target: Pose, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(linear (3,) m/s, angular (3,) rad/s) in the base frame that move `previous` to `target` in dt s."""
    linear = (target.position - previous.position) / dt
    # R_target = R_delta @ R_previous, so q_delta = q_target * q_previous^-1 is the base-frame rotation.
    axis, angle = quat2axangle(qmult(target.quaternion, qinverse(previous.quaternion)))
    if angle > np.pi:
        axis, angle = -axis, 2.0 * np.pi - angle
    return linear, np.asarray(axis) * angle / dt


class ServoBackend(EePoseState):
    name = "servo"

    def __init__(self, node: Node, params: BackendParams) -> None:
        super().__init__(node, params)
        base = params.servo.node.rstrip("/")
        self._pose = node.create_publisher(PoseStamped, f"{base}/pose_cmd", qos.COMMAND)
        self._twist = node.create_publisher(TwistStamped, f"{base}/delta_twist_cmds", qos.COMMAND)
        self._gripper = node.create_publisher(Float64, GRIPPER_TOPIC, qos.COMMAND)
        self._previous: tuple[int, Pose] | None = None

    def send_target(self, pose: Pose, stamp_ns: int) -> None:
        if self.params.servo.command == "pose":
            self._pose.publish(pose_stamped(pose, stamp_ns, self.params.frame_id))
            return
        linear, angular = np.zeros(3), np.zeros(3)
        if self._previous is not None:
            previous_ns, previous = self._previous
            # After a pause (disable, watchdog) the first twist must not span the whole gap.
            dt = min((stamp_ns - previous_ns) / NANOSECONDS_PER_SECOND, 2.0 * self.params.stream_period)
            if dt > 0:
                linear, angular = twist_between(previous, pose, dt)
        self._previous = (stamp_ns, pose)
        self._publish_twist(linear, angular, stamp_ns)

    def _publish_twist(self, linear: np.ndarray, angular: np.ndarray, stamp_ns: int) -> None:
        msg = TwistStamped()
        msg.header.stamp = ns_to_time(int(stamp_ns))
        msg.header.frame_id = self.params.frame_id
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
        self._twist.publish(msg)

    def send_gripper(self, opening: float) -> None:
        self._gripper.publish(Float64(data=float(opening)))

    def stop(self) -> None:
        now_ns = self.node.get_clock().now().nanoseconds
        self._previous = None
        if self.params.servo.command == "twist":
            self._publish_twist(np.zeros(3), np.zeros(3), now_ns)
        elif self.latest_pose is not None:
            self._pose.publish(pose_stamped(self.latest_pose, now_ns, self.params.frame_id))
