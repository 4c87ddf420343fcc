"""What the launch file and bringup start (videovla_ros.launch_plan): overrides, the default model, missing
packages found before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from videovla_ros.execution_mode import DEFAULT_EXECUTION_MODE
from videovla_ros.launch_plan import (
    Choices,
    bridge_overrides,
    default_params_file,
    default_sim_checkpoint,
    missing_packages,
    params_file_value,
    params_files,
    policy_overrides,
    recorder_overrides,
    sim_overrides,
    sim_params_file,
)


def test_sim_alone_runs_the_shipped_default_model():
    overrides = policy_overrides(Choices(params_file=default_params_file(), sim=True))
    checkpoint = Path(str(overrides["checkpoint"]))
    assert checkpoint == default_sim_checkpoint() and checkpoint.name == "videovla-sim-small"
    assert (checkpoint / "config.json").is_file() and (checkpoint / "model.safetensors").is_file()
    named = policy_overrides(Choices(params_file=default_params_file(), sim=True, checkpoint="/my/model"))
    assert named["checkpoint"] == "/my/model"  # checkpoint:= wins


def test_a_checkpoint_in_the_params_file_is_kept_with_sim(tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("/**/videovla_policy:\n  ros__parameters:\n    checkpoint: /models/mine\n")
    assert params_file_value(params, "videovla_policy", "checkpoint") == "/models/mine"
    assert "checkpoint" not in policy_overrides(Choices(params_file=params, sim=True))
    # Without sim an empty checkpoint stays empty: the policy's configure names checkpoint:= and the YAML key.
    assert "checkpoint" not in policy_overrides(Choices(params_file=default_params_file()))


def test_recorder_and_dtype_choices_pass_through():
    choices = Choices(params_file=default_params_file(), dtype="bfloat16", record=True, dataset="/data/mine")
    assert policy_overrides(choices)["dtype"] == "bfloat16"
    assert recorder_overrides(choices) == {"dataset": "/data/mine"}
    assert recorder_overrides(Choices(params_file=default_params_file())) == {}


def test_one_execution_mode_for_both_nodes():
    choices = Choices(params_file=default_params_file(), execution_mode="async")
    assert policy_overrides(choices)["execution_mode"] == bridge_overrides(choices)["execution_mode"] == "async"
    plain = Choices(params_file=default_params_file())
    assert "execution_mode" not in policy_overrides(plain) and "execution_mode" not in bridge_overrides(plain)
    # The shipped params file leaves it to the one shared default.
    for node in ("videovla_policy", "arm_bridge"):
        assert params_file_value(default_params_file(), node, "execution_mode") is None
    assert DEFAULT_EXECUTION_MODE == "sync"


def test_sim_gives_the_bridge_the_pose_stream_backend_and_the_sim_workspace():
    choices = Choices(params_file=default_params_file(), sim=True, dry_run=True)
    assert bridge_overrides(choices) == {"dry_run": True, "backend": "pose_stream"}
    assert params_files(choices) == [default_params_file(), sim_params_file()]


def test_dry_run_is_the_params_files_unless_chosen(tmp_path):
    dry = tmp_path / "dry.yaml"
    dry.write_text("/**/arm_bridge:\n  ros__parameters: {dry_run: true}\n")
    # No choice: no override, so a params file's dry_run: true is never overruled by a front end's default.
    assert "dry_run" not in bridge_overrides(Choices(params_file=dry))
    assert bridge_overrides(Choices(params_file=dry, dry_run=False)) == {"dry_run": False}
    assert bridge_overrides(Choices(params_file=dry, dry_run=True)) == {"dry_run": True}


def test_sim_time_puts_every_node_on_the_simulated_clock():
    choices = Choices(params_file=default_params_file(), sim=True, sim_time=True)
    assert sim_overrides(choices) == {"sim_time": True, "use_sim_time": True}
    for overrides in (policy_overrides(choices), bridge_overrides(choices), recorder_overrides(choices)):
        assert overrides["use_sim_time"] is True
    wall = Choices(params_file=default_params_file(), sim=True)
    assert sim_overrides(wall) == {}
    assert "use_sim_time" not in policy_overrides(wall) and "use_sim_time" not in bridge_overrides(wall)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"execution_mode": "request"},
            "execution_mode must be one of ['sync', 'async', 'rtc'] or empty, got 'request'",
        ),
        ({"backend": "ur"}, "backend must be one of ['pose_stream', 'realman', 'servo', 'moveit_py'] or empty"),
        ({"sim": True, "backend": "realman"}, "sim speaks pose_stream, so backend must be pose_stream or empty"),
        ({"sim_time": True}, "sim_time needs sim (the simulated arm publishes /clock), got sim false"),
        ({"params_file": Path("/no/such.yaml")}, "params_file must be an existing YAML file, got '/no/such.yaml'"),
    ],
)
def test_bad_choices_are_named(changes, message):
    with pytest.raises(ValueError) as error:
        Choices(**{"params_file": default_params_file(), **changes})
    assert message in str(error.value)


def test_missing_packages_are_found_in_the_ament_index():
    # rviz2 is not part of this environment; this package is (make setup installs it).
    assert missing_packages(["rviz2", "videovla_ros"]) == ["rviz2"]
    assert missing_packages([]) == []
