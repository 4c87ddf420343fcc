"""The arm bridge's backend names, defined once here.

Pure (no rclpy, no backend code), so the launch file, `bringup` and videovla_ros.launch_plan can check a backend
argument without importing the backends; videovla_ros.backends maps each name to its class.
"""

from __future__ import annotations

BACKENDS: tuple[str, ...] = ("pose_stream", "realman", "servo", "moveit_py")
# What the simulated arm (sim_arm_node) speaks.
SIM_BACKEND = "pose_stream"
