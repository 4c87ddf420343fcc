"""What `launch/realman.launch.py` and `bringup` start, and with which overrides (pure: no launch, no rclpy).

Both front ends resolve their arguments into `Choices` and take the parameter overrides of each node from here,
so the two cannot drift apart. An empty choice keeps the params file's value, with one exception: with the
simulated arm and no checkpoint named anywhere, the policy gets the shipped default model
(checkpoints/videovla-sim-small, installed under share/videovla_ros). With `sim_time` the simulated arm publishes
/clock and every node (policy, bridge, sim, recorder, RViz) runs with ROS's `use_sim_time`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from videovla_ros.backend_names import BACKENDS, SIM_BACKEND
from videovla_ros.execution_mode import EXECUTION_MODES

PACKAGE = "videovla_ros"
POLICY_NODE = "videovla_policy"
DEFAULT_SIM_CHECKPOINT = "checkpoints/videovla-sim-small"


def share_path(relative: str) -> Path:
    """`relative` under the installed share/videovla_ros, else under the source tree beside this package."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / relative
        if installed.exists():
            return installed
    except (ImportError, PackageNotFoundError):
        pass  # not installed through colcon: fall back to the source checkout
    return Path(__file__).resolve().parent.parent / relative


def default_params_file() -> Path:
    """config/realman.yaml: every node's parameters for a Realman arm."""
    return share_path("config/realman.yaml")


def sim_params_file() -> Path:
    """config/sim.yaml: what the other nodes need to know about the simulated arm, loaded after the params file."""
    return share_path("config/sim.yaml")


def default_sim_checkpoint() -> Path:
    """The shipped default model the simulated arm runs with."""
    return share_path(DEFAULT_SIM_CHECKPOINT)


def params_file_value(params_file: Path, node: str, name: str) -> object | None:
    """Parameter `name` of node `node` in a ROS params file (any key ending in the node's name), or None."""
    document = yaml.safe_load(Path(params_file).read_text()) or {}
    for key, section in document.items():
        if str(key).rsplit("/", 1)[-1] == node and isinstance(section, dict):
            value = (section.get("ros__parameters") or {}).get(name)
            if value is not None:
                return value
    return None


@dataclass(frozen=True)
class Choices:
    """The launch arguments / bringup options; "" keeps the params file's value."""

    params_file: Path
    sim: bool = False
    sim_time: bool = False
    execution_mode: str = ""
    backend: str = ""
    checkpoint: str = ""
    camera_topic: str = ""
    device: str = ""
    dtype: str = ""
    dry_run: bool | None = None  # None: the params file's (a launch default must not overrule a file's true)
    record: bool = False
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.execution_mode not in ("", *EXECUTION_MODES):
            raise ValueError(
                f"execution_mode must be one of {list(EXECUTION_MODES)} or empty, got {self.execution_mode!r}"
            )
        if self.backend not in ("", *BACKENDS):
            raise ValueError(f"backend must be one of {list(BACKENDS)} or empty, got {self.backend!r}")
        if self.sim and self.backend not in ("", SIM_BACKEND):
            raise ValueError(
                f"sim speaks {SIM_BACKEND}, so backend must be {SIM_BACKEND} or empty, got {self.backend!r}"
            )
        if self.sim_time and not self.sim:
            raise ValueError("sim_time needs sim (the simulated arm publishes /clock), got sim false")
        if not Path(self.params_file).is_file():
            raise ValueError(f"params_file must be an existing YAML file, got {str(self.params_file)!r}")


def policy_checkpoint(choices: Choices) -> str:
    """The checkpoint override: the one named, else with sim (and none in the params file) the default model."""
    if choices.checkpoint:
        return choices.checkpoint
    if choices.sim and not params_file_value(choices.params_file, POLICY_NODE, "checkpoint"):
        return str(default_sim_checkpoint())
    return ""


def sim_time_overrides(choices: Choices) -> dict[str, object]:
    """ROS's own use_sim_time, for every node when the simulated arm keeps the time."""
    return {"use_sim_time": True} if choices.sim_time else {}


def sim_overrides(choices: Choices) -> dict[str, object]:
    return {"sim_time": True, **sim_time_overrides(choices)} if choices.sim_time else {}


def policy_overrides(choices: Choices) -> dict[str, object]:
    overrides: dict[str, object] = {
        "camera_topic": choices.camera_topic,
        "checkpoint": policy_checkpoint(choices),
        "device": choices.device,
        "dtype": choices.dtype,
        "execution_mode": choices.execution_mode,
    }
    return {**{name: value for name, value in overrides.items() if value}, **sim_time_overrides(choices)}


def bridge_overrides(choices: Choices) -> dict[str, object]:
    overrides: dict[str, object] = {} if choices.dry_run is None else {"dry_run": choices.dry_run}
    backend = SIM_BACKEND if choices.sim else choices.backend
    if backend:
        overrides["backend"] = backend
    if choices.execution_mode:
        overrides["execution_mode"] = choices.execution_mode
    return {**overrides, **sim_time_overrides(choices)}


def recorder_overrides(choices: Choices) -> dict[str, object]:
    return {**({"dataset": choices.dataset} if choices.dataset else {}), **sim_time_overrides(choices)}


def params_files(choices: Choices) -> list[Path]:
    """The params file, then with sim config/sim.yaml (the simulated arm's settings for the bridge and the
    recorder: its workspace, its state topic)."""
    return [Path(choices.params_file), *([sim_params_file()] if choices.sim else [])]


def _package_prefix(package: str) -> str:
    from ament_index_python.packages import get_package_prefix

    return get_package_prefix(package)


def missing_packages(packages: Sequence[str], find: Callable[[str], str] = _package_prefix) -> list[str]:
    """The packages of `packages` that are not installed (`find` raises LookupError or ImportError for those)."""
    missing = []
    for package in packages:
        try:
            find(package)
        except (LookupError, ImportError):
            missing.append(package)
    return missing
