"""launch/realman.launch.py: a static check that runs everywhere, and a real parse where launch_ros exists."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from videovla_ros import launch_plan

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "realman.launch.py"
PACKAGE = "videovla_ros"
NODE_ACTIONS = ("Node", "LifecycleNode")


def _console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py's entry_points, read without running setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry_points = ast.literal_eval(node.value)
            return dict((part.strip() for part in line.split("=", 1)) for line in entry_points["console_scripts"])
    raise AssertionError("setup.py has no entry_points")


def _launched_nodes() -> list[dict[str, Any]]:
    """Keyword arguments (constants resolved) of every Node / LifecycleNode the launch file constructs."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = {
        target.id: statement.value.value
        for statement in tree.body
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    for statement in tree.body:  # constants imported from videovla_ros.launch_plan
        if isinstance(statement, ast.ImportFrom) and statement.module == "videovla_ros.launch_plan":
            constants.update({alias.name: getattr(launch_plan, alias.name) for alias in statement.names})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NODE_ACTIONS:
            arguments: dict[str, Any] = {"action": node.func.id}
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "on_exit":
                    arguments["on_exit"] = ast.unparse(value)
                elif isinstance(value, ast.Constant):
                    arguments[keyword.arg] = value.value
                elif isinstance(value, ast.Name) and value.id in constants:
                    arguments[keyword.arg] = constants[value.id]
            found.append(arguments)
    return found


def test_every_executable_the_launch_file_names_is_a_console_script():
    scripts = _console_scripts()
    nodes = [n for n in _launched_nodes() if n.get("package") == PACKAGE]
    assert {n["executable"] for n in nodes} == {"policy_node", "arm_bridge_node", "sim_arm_node", "recorder_node"}
    for node in nodes:
        assert node["executable"] in scripts, f"{node['executable']} is not in setup.py's console_scripts"
        module, function = scripts[node["executable"]].split(":")
        source = REPO / Path(*module.split(".")).with_suffix(".py")
        assert source.is_file(), f"{module} (console script {node['executable']}) has no source file"
        assert f"def {function}(" in source.read_text(), f"{module} defines no {function}()"


def test_launched_node_names_match_the_yaml_and_the_policy_is_a_lifecycle_node():
    nodes = {n["name"]: n for n in _launched_nodes()}
    assert nodes["videovla_policy"]["action"] == "LifecycleNode"
    assert nodes["arm_bridge"]["action"] == "Node" and nodes["sim_arm"]["action"] == "Node"
    for name in ("realman.yaml", "sim.yaml"):
        keys = yaml.safe_load((REPO / "config" / name).read_text())
        for key in keys:
            assert key.startswith("/**/"), f"{name}: {key}: keys must start with /**/ so any namespace matches"
            assert key.removeprefix("/**/") in nodes, f"{name}: {key} configures a node the launch file does not start"
    # With sim:=true the bridge gets the simulated arm's workspace after the params file (launch_plan decides).
    assert "params_files(choices)" in LAUNCH_FILE.read_text()


def test_no_launch_path_leaves_a_node_running_alone():
    nodes = {n["name"]: n for n in _launched_nodes()}
    for name in ("videovla_policy", "arm_bridge", "sim_arm"):
        assert nodes[name].get("on_exit", "").startswith("Shutdown("), f"{name} ending does not end the launch"
    # rviz2 is looked up before any node is created, so a missing rviz2 starts nothing.
    source = LAUNCH_FILE.read_text()
    function = source[source.index("def _nodes(") :]
    assert function.index("missing_packages(") < function.index("LifecycleNode(")


def test_launch_file_uses_no_substitution_division():
    # `substitution / "path"` exists only from Jazzy on; PathJoinSubstitution works on Humble too.
    tree = ast.parse(LAUNCH_FILE.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)]


@pytest.mark.full_ros
def test_launch_description_lists_the_expected_nodes():
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import LifecycleNode, Node

    spec = importlib.util.spec_from_file_location("realman_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()

    def nodes_for(**arguments: str) -> dict[str, Any]:
        context = LaunchContext()
        actions = []
        for entity in description.entities:
            if isinstance(entity, DeclareLaunchArgument):
                entity.execute(context)
            elif isinstance(entity, OpaqueFunction):
                context.launch_configurations.update(arguments)
                actions += entity.execute(context)
        return {a.node_executable: a for a in actions if isinstance(a, Node)}

    default = nodes_for(checkpoint="/ckpt")
    assert set(default) == {"policy_node", "arm_bridge_node"}
    assert isinstance(default["policy_node"], LifecycleNode)
    assert set(nodes_for(sim="true")) == {"policy_node", "arm_bridge_node", "sim_arm_node"}
    assert set(nodes_for(sim="true", sim_time="true")) == {"policy_node", "arm_bridge_node", "sim_arm_node"}
    with pytest.raises(ValueError, match="launch argument sim_time needs sim"):
        nodes_for(checkpoint="/ckpt", sim_time="true")
    if launch_plan.missing_packages(["rviz2"]):
        with pytest.raises(RuntimeError, match="rviz:=true needs the package"):
            nodes_for(sim="true", rviz="true")
    else:
        everything = nodes_for(sim="true", rviz="true", execution_mode="async", record="true")
        assert set(everything) == {"policy_node", "arm_bridge_node", "sim_arm_node", "recorder_node", "rviz2"}
    with pytest.raises(ValueError, match="launch argument sim must be 'true' or 'false'"):
        nodes_for(sim="maybe")


def test_rviz_config_shows_camera_imagination_and_bridge_target_in_base_link():
    config = yaml.safe_load((REPO / "config" / "videovla.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "base_link"
    displays = [(d["Class"], d.get("Topic", {}).get("Value")) for d in manager["Displays"]]
    for expected in [
        ("rviz_default_plugins/Image", "image_raw"),
        ("rviz_default_plugins/Image", "imagination/strip"),
        ("rviz_default_plugins/Pose", "arm_bridge/target_pose"),
        ("rviz_default_plugins/Grid", None),
        ("rviz_default_plugins/TF", None),
    ]:
        assert expected in displays
