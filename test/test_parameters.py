"""Parameters declared once from a typed description (videovla_ros.parameters), and the bridge's set of them."""

from __future__ import annotations

import array

import pytest

from videovla_ros.bridge_config import BRIDGE_PARAMETERS, bridge_config
from videovla_ros.parameters import Spec, check_values


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


def test_the_descriptor_shows_the_description_and_range_read_only():
    descriptor = Spec("rate", 100.0, "stream rate [Hz]", above=0.0).descriptor()
    assert descriptor.description == "stream rate [Hz] (a number > 0)" and descriptor.read_only


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
