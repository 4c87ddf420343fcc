"""ament_python package `videovla_ros`: installs videovla_ros/, videovla_model/, videovla_sim/, and launch/, config/,
checkpoints/ (the default model) under share/videovla_ros."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_NAME = "videovla_ros"
HERE = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """Every file below `folder`, installed under share/videovla_ros/<folder>/ keeping sub-folders."""
    by_destination: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(HERE)
            destination = str(Path("share") / PACKAGE_NAME / relative.parent)
            by_destination.setdefault(destination, []).append(str(relative))
    return sorted(by_destination.items())


setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(
        include=[
            "videovla_ros",
            "videovla_ros.*",
            "videovla_model",
            "videovla_model.*",
            "videovla_sim",
            "videovla_sim.*",
        ]
    ),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        *share_files("launch"),
        *share_files("config"),
        *share_files("checkpoints"),  # the default model of `sim:=true`
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="videovla maintainers",
    maintainer_email="videovla@example.org",
    description="VideoVLA policy, arm bridge and imagination on ROS 2, plus the videovla_model package.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # ROS nodes (`ros2 run videovla_ros <name>`)
            "policy_node = videovla_ros.policy_node:main",
            "arm_bridge_node = videovla_ros.arm_bridge_node:main",
            "sim_arm_node = videovla_ros.sim_arm_node:main",
            "recorder_node = videovla_ros.recorder_node:main",
            # The launch file's nodes in one process, for machines without `ros2 launch`
            "bringup = videovla_ros.bringup:main",
            # Model tools
            "videovla-convert-sat = videovla_model.convert_sat:main",
            "videovla-train = videovla_model.train:main",
            "videovla-train-vae = videovla_model.train_vae:main",
            "videovla-eval-offline = videovla_model.evaluate_offline:main",
            "videovla-merge-datasets = videovla_model.dataset_merge:main",
            "videovla-merge-lora = videovla_model.lora:main",
            # Simulation tools
            "videovla-collect = videovla_sim.collect:main",
            # Recording your own demonstrations
            "videovla-recover = videovla_model.recording:main",
            "videovla-sim-teleop = videovla_ros.sim_teleop:main",
            # Datasets in and out: LeRobot v3, rosbag2 (MCAP / sqlite3)
            "videovla-import = videovla_model.importers.cli:import_main",
            "videovla-export = videovla_model.importers.cli:export_main",
            # Closed-loop evaluation and the demo (sim + policy + bridge through ROS, one process)
            "videovla-eval = videovla_ros.evaluate_cli:main",
            "videovla-demo = videovla_ros.evaluate_cli:demo_main",
        ],
    },
)
