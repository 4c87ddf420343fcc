"""Package metadata matches the code: dependencies, installed files, console scripts, interface deps."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from unittest import mock

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = {"videovla_ros", "videovla_model", "videovla_sim", "videovla_msgs"}

# Python libraries -> the rosdep key a ROS user gets them from, or None when requirements/*.txt is the only
# source (no rosdep key tracks their releases).
PYTHON_LIBRARIES = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "transforms3d": "python3-transforms3d",
    "safetensors": "python3-safetensors",
    "tqdm": "python3-tqdm",
    "PIL": "python3-pil",
    "yaml": "python3-yaml",
    "torch": None,
    "diffusers": None,
    "transformers": None,
    "accelerate": None,
    "peft": None,
    "mujoco": None,
    "rosbags": None,
    "pyarrow": None,
    "av": None,
    "tyro": None,
}
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml"}

# Imported lazily by optional back-ends, only on machines that have them; never a hard dependency.
OPTIONAL_ROS_PACKAGES = {"moveit", "rm_ros_interfaces", "launch", "launch_ros"}
# Imported only for an option that needs a CUDA GPU (videovla-train --optimizer adamw-8bit), which refuses with the
# pip command when the library is missing.
OPTIONAL_PYTHON_LIBRARIES = {"bitsandbytes"}
# Used by launch files or at run time by name rather than by import.
RUNTIME_ONLY_DEPENDENCIES = {"launch", "launch_ros", "rviz2", "videovla_msgs", "lifecycle_msgs"}


def _package_xml_dependencies(path: Path, tags: tuple[str, ...]) -> set[str]:
    root = ElementTree.parse(path).getroot()
    return {element.text.strip() for tag in tags for element in root.findall(tag) if element.text}


def _imported_top_level_modules(folders: list[str]) -> dict[str, set[str]]:
    """top-level module -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _requirement_names(*files: str) -> set[str]:
    names = set()
    for file in files:
        for line in (ROOT / "requirements" / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(re.split(r"[<>=!~\[ ]", line)[0].lower())
    return names


def _ros_packages_available() -> set[str]:
    """ROS packages present in this environment (anything with an ament index entry)."""
    from ament_index_python.packages import get_packages_with_prefixes

    return set(get_packages_with_prefixes())


def test_every_import_is_declared():
    exec_depends = _package_xml_dependencies(ROOT / "package.xml", ("exec_depend", "depend"))
    model_requirements = _requirement_names("model.txt", "sim.txt", "data.txt")
    ros_packages = _ros_packages_available()
    problems = []
    for module, files in sorted(
        _imported_top_level_modules(["videovla_ros", "videovla_model", "videovla_sim"]).items()
    ):
        if module in sys.stdlib_module_names or module in OWN_PACKAGES or module in OPTIONAL_ROS_PACKAGES:
            continue
        if module in OPTIONAL_PYTHON_LIBRARIES:
            continue
        if module in PYTHON_LIBRARIES:
            rosdep_key = PYTHON_LIBRARIES[module]
            if rosdep_key is not None and rosdep_key not in exec_depends:
                problems.append(f"{module} (in {sorted(files)}) needs <exec_depend>{rosdep_key}</exec_depend>")
            if PIP_NAMES.get(module, module).lower() not in model_requirements:
                problems.append(f"{module} (in {sorted(files)}) is missing from requirements/*.txt")
        elif module in ros_packages or module == "rclpy":
            if module not in exec_depends:
                problems.append(f"ROS package {module} (in {sorted(files)}) is not an exec_depend in package.xml")
        else:
            problems.append(f"{module} (in {sorted(files)}) is neither declared nor known to this test")
    assert not problems, "\n".join(problems)


def test_every_ros_dependency_is_used():
    exec_depends = _package_xml_dependencies(ROOT / "package.xml", ("exec_depend",))
    imported = set(_imported_top_level_modules(["videovla_ros", "videovla_model", "videovla_sim", "launch"]))
    ros_dependencies = {name for name in exec_depends if not name.startswith("python3-")}
    unused = ros_dependencies - imported - RUNTIME_ONLY_DEPENDENCIES
    assert not unused, f"package.xml declares ROS dependencies nothing imports: {sorted(unused)}"


def test_interface_package_dependencies_match_its_messages():
    folder = ROOT / "videovla_msgs"
    used = set()
    for path in [*folder.glob("msg/*.msg"), *folder.glob("action/*.action")]:
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            match = re.match(r"([a-z_]+)/[A-Z]\w*", line)
            if match:
                used.add(match.group(1))
    declared = _package_xml_dependencies(folder / "package.xml", ("depend",))
    cmake = (folder / "CMakeLists.txt").read_text()
    assert used <= declared, f"videovla_msgs uses {sorted(used - declared)} without <depend>"
    for package in used:
        assert f"find_package({package} REQUIRED)" in cmake, f"CMakeLists.txt lacks find_package({package})"


def _setup_arguments() -> dict:
    captured: dict = {}
    with mock.patch.object(setuptools, "setup", side_effect=lambda **kwargs: captured.update(kwargs)):
        source = (ROOT / "setup.py").read_text()
        exec(compile(source, str(ROOT / "setup.py"), "exec"), {"__file__": str(ROOT / "setup.py"), "__name__": "x"})
    return captured


def test_setup_installs_launch_config_and_the_marker():
    arguments = _setup_arguments()
    installed = {(destination, file) for destination, files in arguments["data_files"] for file in files}
    expected_files = [p for folder in ("launch", "config") for p in (ROOT / folder).rglob("*") if p.is_file()]
    assert expected_files, "launch/ and config/ are empty"
    for path in expected_files:
        relative = path.relative_to(ROOT)
        assert (f"share/videovla_ros/{relative.parent}", str(relative)) in installed, f"{relative} is not installed"
    assert ("share/ament_index/resource_index/packages", "resource/videovla_ros") in installed
    assert ("share/videovla_ros", "package.xml") in installed
    assert set(arguments["packages"]) >= {"videovla_ros", "videovla_model", "videovla_sim"}


def test_console_scripts_point_at_main_functions():
    scripts = _setup_arguments()["entry_points"]["console_scripts"]
    for entry in scripts:
        name, target = (part.strip() for part in entry.split("="))
        module, function = target.split(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.exists(), f"console script {name}: {path.relative_to(ROOT)} does not exist"
        functions = {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert function in functions, f"console script {name}: {module} has no function {function}()"


def test_built_workspace_has_scripts_where_ros2_run_finds_them():
    install = ROOT / "install" / "videovla_ros"
    if not install.exists():
        pytest.skip("workspace not built (run `make setup`)")
    scripts = _setup_arguments()["entry_points"]["console_scripts"]
    for entry in scripts:
        name = entry.split("=")[0].strip()
        assert (install / "lib" / "videovla_ros" / name).exists(), (
            f"{name} not in install/videovla_ros/lib/videovla_ros"
        )
    for folder in ("launch", "config"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert (install / "share" / "videovla_ros" / path.relative_to(ROOT)).exists(), f"{path} not installed"
