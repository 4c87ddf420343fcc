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

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from videovla_model.cli import choices, optional_flag, parse
from videovla_ros.backend_names import BACKENDS
from videovla_ros.execution_mode import EXECUTION_MODES
from videovla_ros.launch_plan import (
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


@dataclass(frozen=True)
class BringupConfig:
    """The `bringup` command line (one flag per field); validated by `Choices`, which names the field."""

    params_file: Path = field(default_factory=default_params_file)
    """YAML keyed by node name (the package's config/realman.yaml unless given)"""
    namespace: str = ""
    """namespace of all nodes (topics are relative)"""
    backend: Annotated[str, choices(BACKENDS)] = ""
    """arm bridge backend ('': the YAML's)"""
    execution_mode: Annotated[str, choices(EXECUTION_MODES)] = ""
    """sync, async or rtc, for both nodes ('': the YAML's)"""
    checkpoint: str = ""
    """policy checkpoint directory ('': the YAML's; with --sim the shipped model)"""
    sim: bool = False
    """add the simulated arm (the bridge then streams poses)"""
    sim_time: bool = False
    """with --sim: the simulated arm publishes /clock, every node uses it (use_sim_time), the physics never
    skips ahead and waits while the policy thinks (sync mode)"""
    bridge: bool = True
    """start the arm bridge (--no-bridge: the policy node alone)"""
    dry_run: Annotated[bool | None, optional_flag()] = None
    """the bridge computes targets but commands nothing (--dry-run false: it commands; none: the YAML's)"""
    autostart: bool = False
    """configure and activate the policy node"""
    record: bool = False
    """add the recorder node (demonstrations)"""
    dataset: str = ""
    """the recorder's dataset folder ('': the YAML's)"""

    def __post_init__(self) -> None:
        self.launch_choices()  # a ValueError names the field

    def launch_choices(self) -> Choices:
        """The launch-plan choices these options make (decided as for the launch file's arguments)."""
        return Choices(
            params_file=self.params_file,
            sim=self.sim,
            sim_time=self.sim_time,
            execution_mode=self.execution_mode,
            backend=self.backend,
            checkpoint=self.checkpoint,
            dry_run=self.dry_run,
            record=self.record,
            dataset=self.dataset,
        )


def parse_args(argv: Sequence[str]) -> BringupConfig:
    """The options of `argv` (program name excluded); exits 2 naming the field of a bad value."""
    return parse(BringupConfig, argv, prog="bringup", description=__doc__)


def _parameters(overrides: dict[str, object]) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in overrides.items()]


def create_nodes(options: BringupConfig) -> tuple[PolicyNode, list[Node]]:
    """The policy node and the other nodes the options ask for (the bridge and sim are imported lazily)."""
    plan = options.launch_choices()
    policy = PolicyNode(namespace=options.namespace, parameter_overrides=_parameters(policy_overrides(plan)))
    others: list[Node] = []
    if options.bridge:
        from videovla_ros.arm_bridge_node import ArmBridgeNode

        others.append(
            ArmBridgeNode(namespace=options.namespace, parameter_overrides=_parameters(bridge_overrides(plan)))
        )
    if options.sim:
        # The simulator pulls in MuJoCo; only pay for it when asked.
        from videovla_ros.sim_arm_node import SimArmNode

        others.append(SimArmNode(namespace=options.namespace, parameter_overrides=_parameters(sim_overrides(plan))))
    if options.record:
        from videovla_ros.recorder_node import RecorderNode

        overrides = _parameters(recorder_overrides(plan))
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
    files = params_files(options.launch_choices())
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
