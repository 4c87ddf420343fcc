"""Imagined video as ROS messages: strip tiling, per-frame stamps, VideoClip, playback, the decode rule."""

from __future__ import annotations

import numpy as np
import pytest

from videovla_ros.action_chunk import time_to_ns
from videovla_ros.image_conversion import image_msg_to_rgb
from videovla_ros.imagination import (
    FramePlayback,
    frame_msgs,
    frame_stamp_ns,
    should_decode,
    strip_msg,
    tile_strip,
    video_clip_msg,
)

CAPTURE_NS = 1_700_000_000_123_456_789


def _frames(count: int = 3, height: int = 4, width: int = 6) -> np.ndarray:
    # Frame i is filled with the value 10*i + position so tiles are easy to tell apart.
    base = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3) % 10
    return np.stack([base + 10 * i for i in range(count)]).astype(np.uint8)


def test_strip_places_frames_side_by_side_oldest_left():
    frames = _frames()
    strip = tile_strip(frames)
    assert strip.shape == (4, 18, 3) and strip.flags.c_contiguous
    for i in range(3):
        np.testing.assert_array_equal(strip[:, 6 * i : 6 * (i + 1)], frames[i])


def test_strip_is_subsampled_by_an_integer_factor_to_fit_max_width():
    frames = _frames(count=4, height=8, width=10)
    strip = tile_strip(frames, max_width=20)  # 40 px wide -> factor 2 -> 20 px
    assert strip.shape == (4, 20, 3)
    np.testing.assert_array_equal(strip[:, 5:10], frames[1, ::2, ::2])
    assert tile_strip(frames, max_width=19).shape == (3, 16, 3)  # factor 3 (4 columns a frame) fits
    assert tile_strip(_frames(count=3, width=7), max_width=8).shape == (1, 6, 3)  # factor 3 gives 9 > 8: 4
    assert tile_strip(frames, max_width=1000).shape == (8, 40, 3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), "must be a (T, H, W, 3) uint8 array"),
        (np.zeros((2, 4, 4, 3), np.float32), "must be a (T, H, W, 3) uint8 array"),
        (np.zeros((0, 4, 4, 3), np.uint8), "must not be empty"),
    ],
)
def test_bad_frames_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tile_strip(bad)


def test_strip_message_is_rgb8_at_the_capture_stamp():
    msg = strip_msg(_frames(), CAPTURE_NS, "camera_optical")
    assert msg.encoding == "rgb8" and msg.header.frame_id == "camera_optical"
    assert time_to_ns(msg.header.stamp) == CAPTURE_NS
    np.testing.assert_array_equal(image_msg_to_rgb(msg), tile_strip(_frames()))


def test_frame_i_is_stamped_with_the_time_it_depicts():
    assert frame_stamp_ns(CAPTURE_NS, 0.25, 0) == CAPTURE_NS + 250_000_000
    msgs = frame_msgs(_frames(), CAPTURE_NS, "cam", 0.25)
    assert [time_to_ns(m.header.stamp) - CAPTURE_NS for m in msgs] == [250_000_000, 500_000_000, 750_000_000]
    np.testing.assert_array_equal(image_msg_to_rgb(msgs[2]), _frames()[2])


def test_video_clip_links_to_its_chunk():
    clip = video_clip_msg(_frames(), CAPTURE_NS, "cam", "pick up the cube", chunk_sequence=7, frame_period=0.1)
    assert (clip.instruction, clip.chunk_sequence, clip.frame_period, len(clip.frames)) == (
        "pick up the cube",
        7,
        0.1,
        3,
    )
    assert time_to_ns(clip.header.stamp) == CAPTURE_NS
    with pytest.raises(ValueError, match="frame_period must be >= 0 seconds, got -1"):
        video_clip_msg(_frames(), CAPTURE_NS, "cam", "x", 0, -1.0)


def test_playback_pops_in_order_and_a_new_clip_replaces_the_rest():
    playback = FramePlayback()
    first = frame_msgs(_frames(), CAPTURE_NS, "cam", 0.1)
    playback.load(first)
    assert playback.next_frame() is first[0]
    second = frame_msgs(_frames(count=2), CAPTURE_NS + 1, "cam", 0.1)
    playback.load(second)
    assert len(playback) == 2
    assert [playback.next_frame(), playback.next_frame(), playback.next_frame()] == [second[0], second[1], None]


@pytest.mark.parametrize(
    ("mode", "subscribers", "expected"),
    [("auto", 0, False), ("auto", 2, True), ("always", 0, True), ("never", 3, False)],
)
def test_decode_rule(mode, subscribers, expected):
    assert should_decode(mode, subscribers, 0, 1) is expected


def test_decode_rule_decodes_every_nth_chunk_from_the_first():
    assert [should_decode("always", 0, sequence, 3) for sequence in range(7)] == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    assert not any(should_decode("auto", 0, sequence, 3) for sequence in range(7))


def test_decode_rule_rejects_unknown_modes_and_periods():
    with pytest.raises(ValueError, match=r"publish_imagination must be one of \['auto', 'always', 'never'\], got 'x'"):
        should_decode("x", 0, 0, 1)
    with pytest.raises(ValueError, match="imagination_every must be >= 1 chunk, got 0"):
        should_decode("always", 0, 0, 0)
