"""VideoVLA on a Realman arm (or the simulated arm): policy node, arm bridge, optional sim and RViz.

    ros2 launch videovla_ros realman.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch videovla_ros realman.launch.py sim:=true rviz:=true checkpoint:=/path/to/checkpoint
    ros2 launch videovla_ros realman.launch.py record:=true dataset:=$HOME/videovla_data/mine autostart:=false

Arguments (an empty value keeps the value from the params file):
    namespace        namespace of all nodes (topics are relative)
    params_file      parameter YAML keyed by node name (default: the package's config/realman.yaml)
    camera_topic     camera topic the policy reads
    checkpoint       policy checkpoint directory
    device           torch device of the policy, e.g. cuda:0
    backend          arm bridge backend: realman | servo | moveit_py | pose_stream
    execution_mode   sync (the policy infers once per bridge request) | async (back-to-back inference)
    dry_run          true: the bridge computes targets but commands nothing
    sim              true: start the simulated arm instead of expecting rm_driver (the bridge streams poses to it,
                     clamped to its workspace from config/sim.yaml)
    rviz             true: start RViz with config/videovla.rviz
    autostart        true: configure and activate the lifecycle policy node on start
    record           true: also start the recorder (demonstrations into `dataset`; see the README)
    dataset          the recorder's episode dataset folder (empty: from the params file)
`bringup` starts the same nodes with the same YAML in one process. Only launch / launch_ros APIs present in
Humble, Jazzy and Kilted are used.
"""

from __future__ import annotations

from typing import Any

import lifecycle_msgs.msg
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare

PACKAGE = "videovla_ros"
BACKENDS = ("realman", "servo", "moveit_py", "pose_stream")
EXECUTION_MODES = {"sync": "request", "async": "continuous"}  # -> the policy's inference_trigger

ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ("namespace", "", "namespace of all nodes"),
    ("params_file", "", "parameter YAML keyed by node name (empty: config/realman.yaml)"),
    ("camera_topic", "", "camera topic of the policy (empty: from the params file)"),
    ("checkpoint", "", "policy checkpoint directory (empty: from the params file)"),
    ("device", "", "torch device of the policy (empty: from the params file)"),
    ("dtype", "", "policy dtype: auto | float32 | bfloat16 | float16 (empty: from the params file)"),
    ("backend", "", f"arm bridge backend, one of {', '.join(BACKENDS)} (empty: from the params file)"),
    ("execution_mode", "", "sync | async (empty: from the params file)"),
    ("dry_run", "false", "the bridge computes targets but commands nothing"),
    ("sim", "false", "start the simulated arm instead of expecting rm_driver"),
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


def _choice(context: LaunchContext, name: str, allowed: tuple[str, ...]) -> str:
    value = LaunchConfiguration(name).perform(context).strip()
    if value and value not in allowed:
        raise ValueError(f"launch argument {name} must be one of {list(allowed)} or empty, got {value!r}")
    return value


def _config_file(name: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", name])


def _nodes(context: LaunchContext) -> list[Any]:
    """The actions for the resolved arguments (plain Python, so empty arguments can defer to the YAML)."""
    text = {name: LaunchConfiguration(name).perform(context).strip() for name, _, _ in ARGUMENTS}
    namespace = text["namespace"]
    params_file = text["params_file"] or _config_file("realman.yaml")
    sim = _flag(context, "sim")
    mode = _choice(context, "execution_mode", tuple(EXECUTION_MODES))
    backend = "pose_stream" if sim else _choice(context, "backend", BACKENDS)

    policy_overrides = {key: text[key] for key in ("camera_topic", "checkpoint", "device", "dtype") if text[key]}
    if mode:
        policy_overrides["inference_trigger"] = EXECUTION_MODES[mode]
    bridge_overrides: dict[str, Any] = {"dry_run": _flag(context, "dry_run")}
    if backend:
        bridge_overrides["backend"] = backend
    if mode:
        bridge_overrides["mode"] = mode

    policy = LifecycleNode(
        package=PACKAGE,
        executable="policy_node",
        name="videovla_policy",
        namespace=namespace,
        output="screen",
        parameters=[params_file, policy_overrides],
    )
    actions: list[Any] = [
        policy,
        Node(
            package=PACKAGE,
            executable="arm_bridge_node",
            name="arm_bridge",
            namespace=namespace,
            output="screen",
            # The simulated arm's workspace (config/sim.yaml) replaces the real controller's box of the params file.
            parameters=[params_file, *([_config_file("sim.yaml")] if sim else []), bridge_overrides],
        ),
    ]
    if sim:
        actions.append(
            Node(
                package=PACKAGE,
                executable="sim_arm_node",
                name="sim_arm",
                namespace=namespace,
                output="screen",
                parameters=[params_file],
            )
        )
    if _flag(context, "record"):
        actions.append(
            Node(
                package=PACKAGE,
                executable="recorder_node",
                name="recorder",
                namespace=namespace,
                output="screen",
                parameters=[
                    params_file,
                    *([_config_file("sim.yaml")] if sim else []),
                    {"dataset": text["dataset"]} if text["dataset"] else {},
                ],
            )
        )
    if _flag(context, "rviz"):
        rviz_config = _config_file("videovla.rviz")
        actions.append(
            Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace, arguments=["-d", rviz_config])
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
