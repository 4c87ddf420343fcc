"""Parameters declared once from a typed description (videovla_ros.parameters), and the bridge's set of them."""

from __future__ import annotations

import array
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from videovla_ros.bridge_config import BRIDGE_PARAMETERS, BridgeParameters, bridge_config
from videovla_ros.parameters import (
    MAX_UNKNOWN_NAMED,
    Spec,
    check_fields,
    check_values,
    closest_name,
    from_values,
    group,
    parameter,
    specs,
    unknown_parameters_warning,
)


@dataclass(frozen=True)
class _Gripper:
    width: float = parameter(0.08, "opening [m]", above=0)


@dataclass(frozen=True)
class _Params:
    rate: float = parameter(10.0, "rate [Hz]", above=0)
    mode: str = parameter("a", "mode", choices=("a", "b"))
    topic: str = parameter("image_raw", "camera topic", non_empty=True)
    gripper: _Gripper = group(_Gripper)

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (Spec("rate", 100.0, "", above=0.0), 50, 50.0),  # YAML's integer where a float is meant
        (Spec("count", 3, "", low=1), 2, 2),
        (Spec("box", (0.0, 0.0, 0.0), ""), array.array("d", [1.0, 2.0, 3.0]), (1.0, 2.0, 3.0)),
        (Spec("box", (0.0, 0.0, 0.0), ""), [1, 2, 3], (1.0, 2.0, 3.0)),
        (Spec("mode", "a", "", choices=("a", "b")), "b", "b"),
        (Spec("flag", False, ""), True, True),
    ],
)
def test_values_are_converted_to_the_parameters_type(spec, value, expected):
    checked = spec.check(value)
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (Spec("rate", 100.0, "", above=0.0), 0.0, "parameter rate must be a number > 0, got 0.0"),
        (Spec("rate", 100.0, "", above=0.0), "fast", "parameter rate must be a number > 0, got 'fast'"),
        (Spec("rate", 100.0, ""), float("nan"), "parameter rate must be a number, got nan"),
        (Spec("share", 0.5, "", low=0, high=1), 1.5, "parameter share must be a number >= 0 and <= 1, got 1.5"),
        (Spec("count", 3, "", low=1), 2.5, "parameter count must be an integer >= 1, got 2.5"),
        (Spec("flag", False, ""), 1, "parameter flag must be true or false, got 1"),
        (Spec("box", (0.0, 0.0, 0.0), ""), [1.0, 2.0], "parameter box must be a list of 3 numbers, got [1.0, 2.0]"),
        (Spec("box", (0.0, 0.0, 0.0), ""), "abc", "parameter box must be a list of 3 numbers, got 'abc'"),
        (Spec("mode", "a", "", choices=("a", "b")), "c", "parameter mode must be one of ['a', 'b'], got 'c'"),
    ],
)
def test_bad_values_name_the_parameter_and_what_it_expects(spec, value, message):
    with pytest.raises(ValueError) as error:
        spec.check(value)
    assert str(error.value) == message


def test_a_dataclass_declares_its_fields_with_groups_as_dotted_names():
    assert [(spec.name, spec.default, spec.expected()) for spec in specs(_Params)] == [
        ("rate", 10.0, "a number > 0"),
        ("mode", "a", "one of ['a', 'b']"),
        ("topic", "image_raw", "a non-empty string"),
        ("gripper.width", 0.08, "a number > 0"),
    ]
    params = from_values(_Params, {"rate": 5, "gripper.width": 0.1})  # YAML's 5 for 5.0; the rest defaults
    assert params == _Params(rate=5.0, gripper=_Gripper(width=0.1)) and type(params.rate) is float
    with pytest.raises(ValueError, match=r"^parameter gripper.width must be a number > 0, got -1.0$"):
        from_values(_Params, {"gripper.width": -1.0})


def test_an_instance_built_directly_is_checked_and_converted_like_one_read():
    assert type(_Params(rate=3).rate) is float
    with pytest.raises(ValueError, match=r"^parameter topic must be a non-empty string, got ' '$"):
        _Params(topic=" ")
    with pytest.raises(ValueError, match=r"^parameter mode must be one of \['a', 'b'\], got 'c'$"):
        dataclasses.replace(_Params(), mode="c")


def test_a_field_that_is_not_a_parameter_is_refused():
    @dataclass(frozen=True)
    class Loose:
        rate: float = 1.0

    with pytest.raises(TypeError, match=r"Loose\.rate is neither a parameter"):
        specs(Loose)


def test_a_long_bad_value_is_cut_in_the_message():
    with pytest.raises(ValueError) as error:
        Spec("rate", 1.0, "").check("x" * 10_000)
    assert len(str(error.value)) < 150


def test_the_descriptor_shows_the_description_and_range_read_only():
    descriptor = Spec("rate", 100.0, "stream rate [Hz]", above=0.0).descriptor()
    assert descriptor.description == "stream rate [Hz] (a number > 0)" and descriptor.read_only
    assert descriptor.dynamic_typing  # YAML's `100` for a float parameter is converted, not refused
    assert not Spec("rate", 100.0, "").descriptor(read_only=False).read_only


def test_bridge_defaults_make_a_valid_config_with_backend_options_nested():
    names = [spec.name for spec in BRIDGE_PARAMETERS]
    assert len(names) == len(set(names))
    config = bridge_config({})
    assert config.execution_mode == "sync" and config.backend_params.realman.prefix == "/rm_driver"
    assert config.backend_params.stream_period == pytest.approx(0.01)
    assert [n for n in names if "." in n] == [
        "realman.prefix",
        "realman.follow",
        "realman.stop_message_type",
        "servo.node",
        "servo.command",
        "moveit_py.planning_group",
        "moveit_py.pose_link",
        "moveit_py.replan_period",
    ]
    nested = bridge_config({"backend": "servo", "servo.command": "pose", "moveit_py.pose_link": "tool0"})
    assert nested.backend_params.servo.command == "pose" and nested.backend_params.moveit_py.pose_link == "tool0"
    assert check_values(BRIDGE_PARAMETERS, {"stream_rate_hz": 50})["stream_rate_hz"] == 50.0
    assert specs(BridgeParameters) == BRIDGE_PARAMETERS


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workspace_min": [1.0, 0.0, 0.0]}, "parameter workspace_min [1.0, 0.0, 0.0] must be below workspace_max"),
        ({"gripper_threshold": 1.0}, "parameter gripper_threshold must be in (0, 1), got 1.0"),
        ({"max_chunk_age": 10.0}, "parameter history_duration (5.0 s) must exceed max_chunk_age (10.0 s)"),
    ],
)
def test_rules_across_parameters_name_them(values, message):
    with pytest.raises(ValueError) as error:
        bridge_config(values)
    assert message in str(error.value)


def test_unknown_parameters_are_named_with_the_closest_known_name():
    known = [spec.name for spec in BRIDGE_PARAMETERS]
    assert unknown_parameters_warning(["execution_mode", "backend"], known) is None
    assert unknown_parameters_warning(["mode", "backend"], known) == (
        "unknown parameter 'mode' (did you mean 'execution_mode'?): ignored "
        "(check the params file's keys against `ros2 param list`)"
    )
    message = unknown_parameters_warning(["stream_rate", "realman.prefx", "zzz"], known)
    assert message is not None and message.startswith(
        "unknown parameters 'realman.prefx' (did you mean 'realman.prefix'?), "
        "'stream_rate' (did you mean 'stream_rate_hz'?), 'zzz': ignored"
    )
    assert closest_name("servo_command", known) == "servo.command"
    assert closest_name("zzz", known) is None


def test_the_unknown_parameter_warning_is_bounded():
    given = [f"unknown_{i:04d}" + "x" * 500 for i in range(1000)]
    message = unknown_parameters_warning(given, ["rate"])
    assert message is not None and len(message) < 1500
    assert message.count("'unknown_") == MAX_UNKNOWN_NAMED and message.endswith(
        f"and {1000 - MAX_UNKNOWN_NAMED} more: ignored (check the params file's keys against `ros2 param list`)"
    )


def test_a_node_warns_once_about_a_params_file_key_it_does_not_know(tmp_path, capfd):
    from ros_process import ros_context

    from videovla_ros.arm_bridge_node import ArmBridgeNode

    params_file = tmp_path / "old.yaml"
    params_file.write_text("/**/arm_bridge:\n  ros__parameters:\n    mode: async\n    dry_run: true\n")
    with ros_context() as context:
        node = ArmBridgeNode(context=context, cli_args=["--ros-args", "--params-file", str(params_file)])
        try:
            assert node.config.dry_run and not node.has_parameter("mode")
        finally:
            node.destroy_node()
    err = capfd.readouterr().err
    assert err.count("unknown parameter") == 1
    assert "unknown parameter 'mode' (did you mean 'execution_mode'?)" in err


def _flatten(values: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@pytest.mark.parametrize("layers", [["realman.yaml"], ["realman.yaml", "sim.yaml"]])
def test_the_shipped_params_files_set_only_declared_parameters_to_valid_values(layers):
    import yaml

    from videovla_ros.policy_parameters import PolicyNodeParameters
    from videovla_ros.recorder_node import RecorderNodeParameters
    from videovla_ros.sim_arm_node import SimArmConfig

    nodes = {
        "arm_bridge": BridgeParameters,
        "videovla_policy": PolicyNodeParameters,
        "recorder": RecorderNodeParameters,
        "sim_arm": SimArmConfig,
    }
    merged: dict[str, dict] = {node: {} for node in nodes}
    for file_name in layers:  # sim.yaml is loaded after realman.yaml (launch_plan.params_files)
        path = Path(__file__).resolve().parents[1] / "config" / file_name
        for key, section in yaml.safe_load(path.read_text()).items():
            node = key.removeprefix("/**/")
            assert node in nodes, f"{file_name}: a section for an unknown node {key!r}"
            values = _flatten(section["ros__parameters"])
            known = [spec.name for spec in specs(nodes[node])]
            assert unknown_parameters_warning(values, known) is None, f"{file_name}: {node}"
            merged[node].update(values)
    merged["videovla_policy"]["checkpoint"] = "/ckpt"  # given with checkpoint:= (or the shipped model with sim)
    for node, values in merged.items():
        from_values(nodes[node], values)


def test_bridge_parameters_built_directly_are_checked():
    assert BridgeParameters(stream_rate_hz=50).stream_rate_hz == 50.0
    with pytest.raises(ValueError, match=r"^parameter execution_mode must be one of \['sync', 'async', 'rtc'\]"):
        BridgeParameters(execution_mode="fast")
