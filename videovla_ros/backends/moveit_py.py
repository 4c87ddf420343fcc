"""MoveItPy backend: plans to the newest streamed target with MoveIt 2's Python API and executes the plan.

Planning takes far longer than a streaming period, so this backend plans at most every moveit_replan_period
seconds, in a worker thread, to the newest target, and skips targets while a plan is running: it suits
slow, coarse motion, not the smooth streaming of the realman / servo / pose_stream backends.
Topics: publishes gripper_command (std_msgs/Float64); subscribes ee_pose (geometry_msgs/PoseStamped).
moveit_py (moveit.planning.MoveItPy) is imported only when this backend is chosen; MoveItPy reads its
configuration (robot description, planning pipelines, controllers) from the process's parameters, as in
MoveIt's moveit_py tutorials.
"""

from __future__ import annotations

import threading

from rclpy.node import Node
from std_msgs.msg import Float64

from videovla_ros import qos
from videovla_ros.backends.base import BackendConfigError, BackendParams, BackendUnavailableError, pose_stamped
from videovla_ros.backends.pose_stream import GRIPPER_TOPIC, EePoseState
from videovla_ros.trajectory import NANOSECONDS_PER_SECOND, Pose


class MoveItPyBackend(EePoseState):
    name = "moveit_py"

    def __init__(self, node: Node, params: BackendParams) -> None:
        try:
            from moveit.planning import MoveItPy
        except ImportError as error:
            raise BackendUnavailableError(
                "backend 'moveit_py' needs the package moveit_py (MoveIt 2's Python bindings, module "
                "moveit.planning): install it with `apt install ros-$ROS_DISTRO-moveit-py` or build MoveIt 2 "
                f"from source, then source the workspace ({error})"
            ) from error
        if not params.moveit_py.pose_link:
            raise BackendConfigError("moveit_py.pose_link must name the end-effector link for backend 'moveit_py'")
        super().__init__(node, params)
        self._robot = MoveItPy(node_name=f"{node.get_name()}_moveit_py")
        self._component = self._robot.get_planning_component(params.moveit_py.planning_group)
        self._gripper = node.create_publisher(Float64, GRIPPER_TOPIC, qos.COMMAND)
        self._busy = threading.Lock()
        self._last_plan_ns = 0

    def send_target(self, pose: Pose, stamp_ns: int) -> None:
        if stamp_ns - self._last_plan_ns < self.params.moveit_py.replan_period * NANOSECONDS_PER_SECOND:
            return
        if not self._busy.acquire(blocking=False):
            return
        self._last_plan_ns = stamp_ns
        goal = pose_stamped(pose, stamp_ns, self.params.frame_id)
        threading.Thread(target=self._plan_and_execute, args=(goal,), daemon=True).start()

    def _plan_and_execute(self, goal: object) -> None:
        try:
            self._component.set_start_state_to_current_state()
            self._component.set_goal_state(pose_stamped_msg=goal, pose_link=self.params.moveit_py.pose_link)
            result = self._component.plan()
            if not result:
                self.node.get_logger().warning("moveit_py: planning to the streamed target failed; target skipped")
                return
            self._robot.execute(result.trajectory, controllers=[])
        finally:
            self._busy.release()

    def send_gripper(self, opening: float) -> None:
        self._gripper.publish(Float64(data=float(opening)))

    def stop(self) -> None:
        self._robot.get_trajactory_execution_manager().stop_execution()  # (sic: MoveItPy's method name)
