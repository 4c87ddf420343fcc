"""ActionChunk validation: every malformed chunk is refused with a message naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videovla_msgs.msg import ActionChunk
from videovla_ros.action_chunk import ChunkRejectedError, TimedChunk, from_msg, ns_to_time, time_to_ns, to_msg

DIMS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def make_msg(**overrides: object) -> ActionChunk:
    chunk = TimedChunk(
        capture_time_ns=5_000_000_001,
        frame_id="base_link",
        instruction="pick up the red cube",
        sequence=7,
        actions=np.linspace(-0.01, 0.01, 42).reshape(6, 7),
        dim_names=DIMS,
        time_step=0.1,
        execute_rows=3,
    )
    msg = to_msg(chunk)
    for field, value in overrides.items():
        setattr(msg, field, value)
    return msg


def test_round_trip_keeps_values():
    chunk = from_msg(make_msg())
    assert chunk.rows == 6 and chunk.dim_names == DIMS
    assert chunk.capture_time_ns == 5_000_000_001
    np.testing.assert_allclose(chunk.column("gripper"), np.linspace(-0.01, 0.01, 42).reshape(6, 7)[:, 6], atol=1e-8)


def test_time_conversion_is_exact():
    for nanoseconds in (0, 1, 999_999_999, 1_000_000_000, 1_763_942_400_123_456_789):
        assert time_to_ns(ns_to_time(nanoseconds)) == nanoseconds


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"rows": 0}, "rows and dims must be > 0"),
        ({"dim_names": list(DIMS[:6])}, "dim_names has 6 names, expected dims=7"),
        ({"dim_names": ["dx"] * 7}, "dim_names has duplicates"),
        ({"actions": [0.0] * 41}, "actions has 41 values, expected rows*dims = 6*7 = 42"),
        ({"actions": [0.0] * 35 + [math.nan] + [0.0] * 6}, "NaN or infinite values in rows [5]"),
        ({"actions": [math.inf] + [0.0] * 41}, "NaN or infinite values in rows [0]"),
        ({"time_step": 0.0}, "time_step must be a positive number of seconds, got 0.0"),
        ({"time_step": math.nan}, "time_step must be a positive number of seconds"),
        ({"execute_rows": 0}, "execute_rows must be in [1, rows=6], got 0"),
        ({"execute_rows": 7}, "execute_rows must be in [1, rows=6], got 7"),
    ],
)
def test_malformed_chunks_are_rejected_with_the_field_named(overrides, expected):
    with pytest.raises(ChunkRejectedError) as error:
        from_msg(make_msg(**overrides))
    assert expected in str(error.value)
    assert str(error.value).startswith("chunk 7:")


def test_zero_stamp_is_rejected():
    msg = make_msg()
    msg.header.stamp.sec = 0
    msg.header.stamp.nanosec = 0
    with pytest.raises(ChunkRejectedError, match=r"header\.stamp is zero"):
        from_msg(msg)


def test_missing_required_dimension_is_named():
    msg = make_msg(dim_names=["dx", "dy", "dz", "droll", "dpitch", "dyaw", "grip"])
    with pytest.raises(ChunkRejectedError, match=r"lacks required dimensions \['gripper'\]"):
        from_msg(msg, required_dims=DIMS)
