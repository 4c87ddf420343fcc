"""What every arm backend offers the bridge, its parameters, and geometry_msgs <-> Pose conversion."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.subscription import Subscription

from videovla_ros.action_chunk import ns_to_time
from videovla_ros.parameters import parameter
from videovla_ros.trajectory import Pose

StateCallback = Callable[[int, Pose], None]
"""Called with (stamp in ROS time ns, end-effector pose) for every robot state sample."""

STOP_MESSAGE_TYPES = ("bool", "empty")
SERVO_COMMANDS = ("twist", "pose")


class BackendConfigError(ValueError):
    """A backend parameter has a wrong value; the message names it and what is expected."""


class BackendUnavailableError(ImportError):
    """A backend needs a package that is not installed; the message names it and how to install it."""


@dataclass(frozen=True)
class RealmanParams:
    """Backend `realman` (bridge parameters realman.*): rm_driver's topic prefix, Cartepos.follow (true =
    high-follow mode) and move_stop_cmd's type, "bool" (driver 1.1) or "empty" (1.1.6)."""

    prefix: str = parameter("/rm_driver", "realman: rm_driver topic prefix")
    follow: bool = parameter(False, "realman: Cartepos.follow (true = high-follow mode)")
    stop_message_type: str = parameter(
        "bool", "realman: move_stop_cmd type, bool (driver 1.1) or empty (1.1.6)", choices=STOP_MESSAGE_TYPES
    )

    def __post_init__(self) -> None:
        if self.stop_message_type not in STOP_MESSAGE_TYPES:
            raise BackendConfigError(
                f"realman.stop_message_type must be one of {list(STOP_MESSAGE_TYPES)}, got {self.stop_message_type!r}"
            )


@dataclass(frozen=True)
class ServoParams:
    """Backend `servo` (servo.*): MoveIt Servo's node name (its topics are <node>/pose_cmd and
    <node>/delta_twist_cmds) and the command, "twist" (TwistStamped from target deltas) or "pose" (PoseStamped)."""

    node: str = parameter("servo_node", "servo: MoveIt Servo node name (prefix of its command topics)", non_empty=True)
    command: str = parameter("twist", "servo: twist (delta_twist_cmds) or pose (pose_cmd)", choices=SERVO_COMMANDS)

    def __post_init__(self) -> None:
        if self.command not in SERVO_COMMANDS:
            raise BackendConfigError(f"servo.command must be one of {list(SERVO_COMMANDS)}, got {self.command!r}")


@dataclass(frozen=True)
class MoveItPyParams:
    """Backend `moveit_py` (moveit_py.*): the planning group, the link the pose goal is for, and the least time
    between two plans [s] (planning cannot run at the streaming rate)."""

    planning_group: str = parameter("arm", "moveit_py: planning group", non_empty=True)
    pose_link: str = parameter("", "moveit_py: link the pose goal is for")
    replan_period: float = parameter(0.5, "moveit_py: least time between plans [s]", above=0.0)


@dataclass(frozen=True)
class BackendParams:
    """What every backend gets: the base frame of every pose sent and received, the bridge's streaming period
    [s], and each backend's own options under its name."""

    frame_id: str = "base_link"
    stream_period: float = 0.01
    realman: RealmanParams = field(default_factory=RealmanParams)
    servo: ServoParams = field(default_factory=ServoParams)
    moveit_py: MoveItPyParams = field(default_factory=MoveItPyParams)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stream_period) and self.stream_period > 0):
            raise BackendConfigError(f"stream_period must be > 0 s, got {self.stream_period}")
        if not self.frame_id:
            raise BackendConfigError("frame_id must name the arm's base frame, got an empty string")


class ArmBackend(ABC):
    """Turns streamed end-effector targets into commands for one kind of arm, and reports the arm's pose.

    The bridge calls send_target at the streaming rate with poses that already passed every safety rule,
    send_gripper when the gripper command changes, and stop on disable, e-stop and faults.
    """

    name = ""
    state_subscription: Subscription  # the robot state's subscription, created by each backend

    def __init__(self, node: Node, params: BackendParams) -> None:
        self.node = node
        self.params = params
        self._state_callbacks: list[StateCallback] = []

    @property
    def state_topic(self) -> str:
        """The fully resolved topic the robot state comes from (for messages that say what is missing)."""
        return self.state_subscription.topic_name

    def add_state_callback(self, callback: StateCallback) -> None:
        self._state_callbacks.append(callback)

    def _report_state(self, stamp_ns: int, pose: Pose) -> None:
        for callback in self._state_callbacks:
            callback(stamp_ns, pose)

    @abstractmethod
    def send_target(self, pose: Pose, stamp_ns: int) -> None:
        """Commands the end-effector pose `pose` (base frame) for ROS time `stamp_ns`."""

    @abstractmethod
    def send_gripper(self, opening: float) -> None:
        """Commands the gripper: 0.0 = closed .. 1.0 = open."""

    @abstractmethod
    def stop(self) -> None:
        """Stops the arm where it is now."""


def pose_to_msg(pose: Pose) -> PoseMsg:
    msg = PoseMsg()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose.position)
    w, x, y, z = (float(v) for v in pose.quaternion)
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = w, x, y, z
    return msg


def pose_from_msg(msg: PoseMsg) -> Pose:
    """Raises ValueError for non-finite values or a zero quaternion."""
    p, q = msg.position, msg.orientation
    return Pose.from_floats(p.x, p.y, p.z, q.w, q.x, q.y, q.z)


def pose_stamped(pose: Pose, stamp_ns: int, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = ns_to_time(int(stamp_ns))
    msg.header.frame_id = frame_id
    msg.pose = pose_to_msg(pose)
    return msg
