"""VideoVLA on a Realman arm (or the simulated arm): policy node, arm bridge, optional sim and RViz.

    ros2 launch videovla_ros realman.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch videovla_ros realman.launch.py sim:=true rviz:=true      # the shipped default model
    ros2 launch videovla_ros realman.launch.py record:=true dataset:=$HOME/videovla_data/mine autostart:=false

Arguments (an empty value keeps the value from the params file):
    namespace        namespace of all nodes (topics are relative)
    params_file      parameter YAML keyed by node name (default: the package's config/realman.yaml)
    camera_topic     camera topic the policy reads
    checkpoint       policy checkpoint directory (with sim and none set: checkpoints/videovla-sim-small)
    device           torch device of the policy, e.g. cuda:0
    dtype            policy dtype: auto | float32 | bfloat16 | float16
    backend          arm bridge backend: realman | servo | moveit_py | pose_stream
    execution_mode   sync (the policy infers once per bridge request) | async (back-to-back inference) | rtc
                     (async execution, one inference per bridge request carrying the committed motion); set on
                     both the policy and the bridge
    dry_run          true: the bridge computes targets but commands nothing; false: it commands the arm
    sim              true: start the simulated arm instead of expecting rm_driver (the bridge streams poses to it,
                     clamped to its workspace from config/sim.yaml)
    sim_time         true (with sim): simulated time, as Gazebo runs: the simulated arm publishes /clock, never
                     skips ahead when the machine is slow, and in sync mode waits while the policy thinks; every
                     node runs with use_sim_time
    rviz             true: start RViz with config/videovla.rviz
    autostart        true: configure and activate the lifecycle policy node on start
    record           true: also start the recorder (demonstrations into `dataset`; see the README)
    dataset          the recorder's episode dataset folder (empty: from the params file)
Which nodes get which overrides is decided in videovla_ros.launch_plan, shared with `bringup` (the same nodes
with the same YAML in one process). Everything is checked before anything starts (rviz:=true needs rviz2), and
the launch shuts down when the policy, the bridge or the simulated arm exits, so no node is left running alone;
each node also ends with the launch process (node_runner). Only launch / launch_ros APIs present in Humble,
Jazzy and Kilted are used.
"""

from __future__ import annotations

from typing import Any

import lifecycle_msgs.msg
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState

from videovla_ros.launch_plan import (
    BACKENDS,
    PACKAGE,
    Choices,
    bridge_overrides,
    default_params_file,
    missing_packages,
    params_files,
    policy_overrides,
    recorder_overrides,
    share_path,
    sim_overrides,
    sim_time_overrides,
)

ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("namespace", "", "namespace of all nodes"),
    ("params_file", "", "parameter YAML keyed by node name (empty: config/realman.yaml)"),
    ("camera_topic", "", "camera topic of the policy (empty: from the params file)"),
    ("checkpoint", "", "policy checkpoint directory (empty: from the params file; with sim, the default model)"),
    ("device", "", "torch device of the policy (empty: from the params file)"),
    ("dtype", "", "policy dtype: auto | float32 | bfloat16 | float16 (empty: from the params file)"),
    ("backend", "", f"arm bridge backend, one of {', '.join(BACKENDS)} (empty: from the params file)"),
    ("execution_mode", "", "sync | async | rtc, for the policy and the bridge (empty: from the params file)"),
    ("dry_run", "", "true: the bridge computes targets but commands nothing (empty: from the params file)"),
    ("sim", "false", "start the simulated arm instead of expecting rm_driver"),
    ("sim_time", "false", "with sim: the simulated arm publishes /clock and every node uses it (use_sim_time)"),
    ("rviz", "false", "start RViz with config/videovla.rviz"),
    ("autostart", "true", "configure and activate the policy node on start"),
    ("record", "false", "also start the recorder node"),
    ("dataset", "", "the recorder's episode dataset folder (empty: from the params file)"),
)


def _flag(context: LaunchContext, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name} must be 'true' or 'false', got {value!r}")
    return value == "true"


def _optional_flag(context: LaunchContext, name: str) -> bool | None:
    """None when the argument is empty (the params file decides)."""
    return _flag(context, name) if LaunchConfiguration(name).perform(context).strip() else None


def _choices(context: LaunchContext) -> Choices:
    text = {name: LaunchConfiguration(name).perform(context).strip() for name, _, _ in ARGUMENTS}
    try:
        return Choices(
            params_file=text["params_file"] or default_params_file(),
            sim=_flag(context, "sim"),
            sim_time=_flag(context, "sim_time"),
            execution_mode=text["execution_mode"],
            backend=text["backend"],
            checkpoint=text["checkpoint"],
            camera_topic=text["camera_topic"],
            device=text["device"],
            dtype=text["dtype"],
            dry_run=_optional_flag(context, "dry_run"),
            record=_flag(context, "record"),
            dataset=text["dataset"],
        )
    except ValueError as error:
        raise ValueError(f"launch argument {error}") from error


def _nodes(context: LaunchContext) -> list[Any]:
    """The actions for the resolved arguments; raises before any node starts when something is missing."""
    choices = _choices(context)
    rviz = _flag(context, "rviz")
    missing = missing_packages(["rviz2"] if rviz else [])
    if missing:
        raise RuntimeError(
            f"rviz:=true needs the package(s) {missing}, which are not installed (e.g. apt install "
            "ros-$ROS_DISTRO-rviz2); nothing was started. Install it, or launch with rviz:=false"
        )
    namespace = LaunchConfiguration("namespace").perform(context).strip()
    # Any of these ending ends the launch: a policy without a bridge (or the reverse) must not run on alone.
    policy = LifecycleNode(
        package=PACKAGE,
        executable="policy_node",
        name="videovla_policy",
        namespace=namespace,
        output="screen",
        parameters=[str(choices.params_file), policy_overrides(choices)],
        on_exit=Shutdown(reason="videovla_policy exited"),
    )
    actions: list[Any] = [
        policy,
        Node(
            package=PACKAGE,
            executable="arm_bridge_node",
            name="arm_bridge",
            namespace=namespace,
            output="screen",
            parameters=[*(str(path) for path in params_files(choices)), bridge_overrides(choices)],
            on_exit=Shutdown(reason="arm_bridge exited"),
        ),
    ]
    if choices.sim:
        actions.append(
            Node(
                package=PACKAGE,
                executable="sim_arm_node",
                name="sim_arm",
                namespace=namespace,
                output="screen",
                parameters=[str(choices.params_file), sim_overrides(choices)],
                on_exit=Shutdown(reason="sim_arm exited"),
            )
        )
    if choices.record:
        actions.append(
            Node(
                package=PACKAGE,
                executable="recorder_node",
                name="recorder",
                namespace=namespace,
                output="screen",
                parameters=[*(str(path) for path in params_files(choices)), recorder_overrides(choices)],
            )
        )
    if rviz:
        rviz_config = str(share_path("config/videovla.rviz"))
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace,
                arguments=["-d", rviz_config],
                parameters=[sim_time_overrides(choices)],
            )
        )
    if _flag(context, "autostart"):
        # Configure once the process is up; activate when configuring has reached "inactive".
        actions += [
            RegisterEventHandler(
                OnStateTransition(
                    target_lifecycle_node=policy,
                    start_state="configuring",
                    goal_state="inactive",
                    entities=[_change_state(policy, lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)],
                )
            ),
            _change_state(policy, lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE),
        ]
    return actions


def _change_state(node: LifecycleNode, transition_id: int) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS),
            OpaqueFunction(function=_nodes),
        ]
    )
