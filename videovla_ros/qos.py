"""The suite's named QoS profiles, in one place so publishers and subscribers always match."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Camera images: best effort, shallow; a late frame is worth less than the next one.
CAMERA = qos_profile_sensor_data

# Instructions: latched, so a node that starts after `ros2 topic pub --once` still gets the last one.
# (`ros2 topic pub` needs `--qos-durability transient_local` to match; see the README.)
INSTRUCTION = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Action chunks: reliable, and only the newest matters.
ACTION_CHUNK = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Imagined video for RViz: reliable so whole clips arrive, shallow because only the newest is shown.
IMAGINATION = QoSProfile(
    depth=2,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Robot state (joint states, end-effector pose): high rate, newest wins, but reliable like rm_driver's.
ROBOT_STATE = QoSProfile(
    depth=10,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Arm commands (pose stream, gripper, stop): reliable, in order.
COMMAND = QoSProfile(
    depth=10,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Safety inputs (e-stop): reliable with a deeper queue so no stop is ever lost.
SAFETY = QoSProfile(
    depth=10,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# Simulated time (/clock): best effort, only the newest, as ROS's own clock subscribers (rclpy TimeSource) expect.
CLOCK = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
