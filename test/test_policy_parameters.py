"""The policy node's parameters (videovla_ros.policy_parameters): checked with the parameter named, whether
built directly or read from the node's values."""

from __future__ import annotations

import dataclasses

import pytest


def test_parameters_are_validated_with_the_field_and_allowed_values():
    from videovla_ros.parameters import from_values
    from videovla_ros.policy_node import PolicyNodeParameters

    good = PolicyNodeParameters(checkpoint="/ckpt")
    assert good.image_topic == "image_raw"
    assert dataclasses.replace(good, image_transport="compressed").image_topic == "image_raw/compressed"
    cases = {
        "checkpoint": (
            "",
            "parameter checkpoint is empty: name a checkpoint directory with the launch argument "
            "checkpoint:=/path/to/checkpoint (bringup --checkpoint), or under /**/videovla_policy: "
            "ros__parameters: checkpoint: in the params file",
        ),
        "execution_mode": (
            "request",
            "parameter execution_mode must be one of ['sync', 'async', 'rtc'], got 'request'",
        ),
        "max_instruction_length": (0, "parameter max_instruction_length must be an integer >= 1, got 0"),
        "image_transport": ("theora", "parameter image_transport must be one of ['raw', 'compressed'], got 'theora'"),
        "publish_imagination": (
            "sometimes",
            "parameter publish_imagination must be one of ['auto', 'always', 'never']",
        ),
        "max_image_age": (0.0, "parameter max_image_age must be a number > 0, got 0.0"),
        "image_timeout": (-1.0, "parameter image_timeout must be a number >= 0, got -1.0"),
        "imagination_every": (0, "parameter imagination_every must be an integer >= 1, got 0"),
        "policy": ("remote", "parameter policy must be one of ['checkpoint', 'expert'], got 'remote'"),
        "camera_topic": ("", "parameter camera_topic must be a non-empty string, got ''"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ValueError) as error:
            dataclasses.replace(good, **{name: value})
        assert message in str(error.value)
        with pytest.raises(ValueError) as error:  # as read from the node: the same message
            from_values(PolicyNodeParameters, {"checkpoint": "/ckpt", name: value})
        assert message in str(error.value)
    assert PolicyNodeParameters(policy="expert").checkpoint == ""  # the expert needs no checkpoint
    values = dataclasses.asdict(good)
    assert from_values(PolicyNodeParameters, {**values, "max_image_age": 1}).max_image_age == 1.0
    with pytest.raises(ValueError, match="parameter seed must be an integer, got 'one'"):
        from_values(PolicyNodeParameters, {**values, "seed": "one"})
    with pytest.raises(ValueError, match="parameter max_image_age must be a number > 0, got True"):
        from_values(PolicyNodeParameters, {**values, "max_image_age": True})
