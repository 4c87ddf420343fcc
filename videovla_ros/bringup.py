"""`bringup`: the nodes of launch/realman.launch.py in ONE process, for machines without `ros2 launch`.

    bringup --checkpoint /path/to/checkpoint --autostart             # policy + arm bridge (rm_driver backend)
    bringup --sim --autostart                                         # + the simulated arm, the default model
    bringup --sim --sim-time --autostart                              # ... in simulated time (/clock)
    python -m videovla_ros.bringup --no-bridge --checkpoint ...       # the policy node alone
    bringup --sim --record --dataset data/mine                       # + the recorder (your demonstrations)

Every node reads the same YAML (--params-file, default: the package's config/realman.yaml) keyed by node name,
exactly as under the launch file, and with --sim the package's config/sim.yaml after it (the simulated arm's
workspace for the bridge); command-line options override single parameters, decided by
videovla_ros.launch_plan as for the launch file. All nodes share one multi-threaded executor. SIGINT and
SIGTERM shut the process down cleanly (nodes destroyed, context shut down).
ROS arguments after `--ros-args` (remappings, log levels) are passed through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.launch_plan import (
    BACKENDS,
    Choices,
    bridge_overrides,
    default_params_file,
    params_files,
    policy_overrides,
    recorder_overrides,
    sim_overrides,
)
from videovla_ros.node_runner import init_ros, make_executor, spin_until_shutdown
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bringup", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--params-file", type=Path, default=None, help="YAML keyed by node name (default: %(default)s)")
    parser.add_argument("--namespace", default="", help="namespace of all nodes (topics are relative)")
    parser.add_argument("--backend", choices=BACKENDS, default="", help="arm bridge backend (default: from YAML)")
    parser.add_argument("--execution-mode", choices=EXECUTION_MODES, default="", help="sync, async or rtc (both nodes)")
    parser.add_argument(
        "--checkpoint",
        default="",
        help="policy checkpoint directory (default: from YAML; with --sim the default model)",
    )
    parser.add_argument("--sim", action="store_true", help="add the simulated arm (the bridge then streams poses)")
    parser.add_argument(
        "--sim-time",
        action="store_true",
        help="with --sim: the simulated arm publishes /clock, every node uses it (use_sim_time), the physics never "
        "skips ahead and waits while the policy thinks (sync mode)",
    )
    parser.add_argument("--no-bridge", action="store_true", help="start no arm bridge")
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the bridge computes targets but commands nothing (default: from YAML)",
    )
    parser.add_argument("--autostart", action="store_true", help="configure and activate the policy node")
    parser.add_argument("--record", action="store_true", help="add the recorder node (demonstrations)")
    parser.add_argument("--dataset", default="", help="the recorder's dataset folder (default: from YAML)")
    options = parser.parse_args(list(argv))
    if options.params_file is None:
        options.params_file = default_params_file()
    try:
        options.choices = Choices(
            params_file=options.params_file,
            sim=options.sim,
            sim_time=options.sim_time,
            execution_mode=options.execution_mode,
            backend=options.backend,
            checkpoint=options.checkpoint,
            dry_run=options.dry_run,
            record=options.record,
            dataset=options.dataset,
        )
    except ValueError as error:
        parser.error(f"--{str(error).replace('_', '-')}")
    return options


def _parameters(overrides: dict[str, object]) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in overrides.items()]


def create_nodes(options: argparse.Namespace) -> tuple[PolicyNode, list[Node]]:
    """The policy node and the other nodes the options ask for (the bridge and sim are imported lazily)."""
    choices: Choices = options.choices
    policy = PolicyNode(namespace=options.namespace, parameter_overrides=_parameters(policy_overrides(choices)))
    others: list[Node] = []
    if not options.no_bridge:
        from videovla_ros.arm_bridge_node import ArmBridgeNode

        others.append(
            ArmBridgeNode(namespace=options.namespace, parameter_overrides=_parameters(bridge_overrides(choices)))
        )
    if options.sim:
        # The simulator pulls in MuJoCo; only pay for it when asked.
        from videovla_ros.sim_arm_node import SimArmNode

        others.append(SimArmNode(namespace=options.namespace, parameter_overrides=_parameters(sim_overrides(choices))))
    if options.record:
        from videovla_ros.recorder_node import RecorderNode

        overrides = _parameters(recorder_overrides(choices))
        others.append(RecorderNode(namespace=options.namespace, parameter_overrides=overrides))
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
    # The YAML comes first so that `--ros-args -p name:=value` on the command line still overrides it. The sim's
    # file only concerns the bridge and the recorder, so loading it for every node changes nothing else.
    files = params_files(options.choices)
    init_ros([argv[0], "--ros-args", *(f for path in files for f in ("--params-file", str(path))), "--", *argv[1:]])
    executor = make_executor(EXECUTOR_THREADS + 4)
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
