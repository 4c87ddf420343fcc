"""`bringup`: the nodes of launch/realman.launch.py in ONE process, for machines without `ros2 launch`.

    bringup --checkpoint /path/to/checkpoint --autostart             # policy + arm bridge (rm_driver backend)
    bringup --sim --autostart --checkpoint ...                        # + the simulated arm (pose_stream backend)
    python -m videovla_ros.bringup --no-bridge --checkpoint ...       # the policy node alone
    bringup --sim --record --dataset data/mine                       # + the recorder (your demonstrations)

Every node reads the same YAML (--params-file, default: the package's config/realman.yaml) keyed by node name,
exactly as under the launch file, and with --sim the package's config/sim.yaml after it (the simulated arm's
workspace for the bridge); command-line options override single parameters. All nodes share one
MultiThreadedExecutor. SIGINT and SIGTERM shut the process down cleanly (nodes destroyed, context shut down).
ROS arguments after `--ros-args` (remappings, log levels) are passed through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from videovla_ros.node_runner import init_ros, spin_until_shutdown
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode

PACKAGE = "videovla_ros"
BACKENDS: tuple[str, ...] = ("realman", "servo", "moveit_py", "pose_stream")
EXECUTION_MODES: dict[str, str] = {"sync": "request", "async": "continuous"}
"""execution_mode -> the policy node's inference_trigger (the bridge's `mode` takes the name itself)."""


def config_file(name: str) -> Path:
    """config/`name` from the installed share directory, else from the source tree beside this package."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / "config" / name
        if installed.is_file():
            return installed
    except (ImportError, LookupError):
        pass  # not installed through colcon: fall back to the source checkout
    return Path(__file__).resolve().parent.parent / "config" / name


def default_params_file() -> Path:
    """config/realman.yaml: every node's parameters for a Realman arm."""
    return config_file("realman.yaml")


def sim_params_file() -> Path:
    """config/sim.yaml: what the other nodes need to know about the simulated arm, loaded after the params file."""
    return config_file("sim.yaml")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bringup", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--params-file", type=Path, default=None, help="YAML keyed by node name (default: %(default)s)")
    parser.add_argument("--namespace", default="", help="namespace of all nodes (topics are relative)")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="arm bridge backend (default: from YAML)")
    parser.add_argument("--execution-mode", choices=tuple(EXECUTION_MODES), default=None, help="sync or async")
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint directory (default: from YAML)")
    parser.add_argument("--sim", action="store_true", help="add the simulated arm (the bridge then streams poses)")
    parser.add_argument("--no-bridge", action="store_true", help="start no arm bridge")
    parser.add_argument("--dry-run", action="store_true", help="the bridge computes targets but commands nothing")
    parser.add_argument("--autostart", action="store_true", help="configure and activate the policy node")
    parser.add_argument("--record", action="store_true", help="add the recorder node (demonstrations)")
    parser.add_argument("--dataset", default=None, help="the recorder's dataset folder (default: from YAML)")
    options = parser.parse_args(list(argv))
    if options.params_file is None:
        options.params_file = default_params_file()
    if not options.params_file.is_file():
        parser.error(f"--params-file must be an existing YAML file, got {str(options.params_file)!r}")
    if options.sim and options.backend not in (None, "pose_stream"):
        parser.error(f"--sim speaks pose_stream, so --backend must be pose_stream or omitted, got {options.backend!r}")
    return options


def policy_overrides(options: argparse.Namespace) -> list[Parameter]:
    overrides = []
    if options.checkpoint is not None:
        overrides.append(Parameter("checkpoint", value=options.checkpoint))
    if options.execution_mode is not None:
        overrides.append(Parameter("inference_trigger", value=EXECUTION_MODES[options.execution_mode]))
    return overrides


def bridge_overrides(options: argparse.Namespace) -> list[Parameter]:
    overrides = []
    backend = "pose_stream" if options.sim else options.backend
    if backend is not None:
        overrides.append(Parameter("backend", value=backend))
    if options.execution_mode is not None:
        overrides.append(Parameter("mode", value=options.execution_mode))
    if options.dry_run:
        overrides.append(Parameter("dry_run", value=True))
    return overrides


def create_nodes(options: argparse.Namespace) -> tuple[PolicyNode, list[Node]]:
    """The policy node and the other nodes the options ask for (the bridge and sim are imported lazily)."""
    policy = PolicyNode(namespace=options.namespace, parameter_overrides=policy_overrides(options))
    others: list[Node] = []
    if not options.no_bridge:
        from videovla_ros.arm_bridge_node import ArmBridgeNode

        others.append(ArmBridgeNode(namespace=options.namespace, parameter_overrides=bridge_overrides(options)))
    if options.sim:
        # The simulator pulls in MuJoCo; only pay for it when asked.
        from videovla_ros.sim_arm_node import SimArmNode

        others.append(SimArmNode(namespace=options.namespace))
    if options.record:
        from videovla_ros.recorder_node import RecorderNode

        dataset = [] if options.dataset is None else [Parameter("dataset", value=options.dataset)]
        others.append(RecorderNode(namespace=options.namespace, parameter_overrides=dataset))
    return policy, others


def autostart(policy: PolicyNode) -> None:
    """configure + activate; a failure is logged and leaves the node where it stopped (it can be retried)."""
    for name, transition in (("configure", policy.trigger_configure), ("activate", policy.trigger_activate)):
        result = transition()
        if result != TransitionCallbackReturn.SUCCESS:
            policy.get_logger().error(f"autostart: {name} returned {result.name}; the policy node stays inactive")
            return
    policy.get_logger().info("autostart: the policy node is active")


def main(args: Sequence[str] | None = None) -> None:
    """args: the command line like sys.argv (program name first); ROS arguments may follow `--ros-args`."""
    argv = list(sys.argv if args is None else args)
    options = parse_args(remove_ros_args(argv)[1:])
    # The YAML comes first so that `--ros-args -p name:=value` on the command line still overrides it.
    params_files = [options.params_file, *([sim_params_file()] if options.sim else [])]
    init_ros(
        [argv[0], "--ros-args", *(f for path in params_files for f in ("--params-file", str(path))), "--", *argv[1:]]
    )
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + 4)
    try:
        policy, others = create_nodes(options)
    except (ValueError, ImportError) as error:  # a bad parameter or a backend this machine lacks
        rclpy.try_shutdown()
        raise SystemExit(f"bringup: {error}") from error
    nodes = [policy, *others]
    for node in nodes:
        executor.add_node(node)
    if options.autostart:
        autostart(policy)
    spin_until_shutdown(executor, nodes)


if __name__ == "__main__":
    main()
