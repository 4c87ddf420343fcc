"""Image / CompressedImage <-> RGB numpy conversion: every encoding, strides, and every rejection message."""

from __future__ import annotations

import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from videovla_ros.image_conversion import (
    check_image_msg,
    compressed_format,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)

STAMP = Time(sec=12, nanosec=345)


def _rgb(height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _raw(pixels: np.ndarray, encoding: str, step: int | None = None, bigendian: int = 0) -> Image:
    """A message holding `pixels` (H, W, C) of any dtype, rows padded with 0xAB up to `step` bytes."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1)
    step = rows.shape[1] if step is None else step
    padded = np.full((height, step), 0xAB, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = array.array("B", padded.tobytes())
    return msg


def test_rgb8_round_trip_keeps_pixels_header_and_packing():
    rgb = _rgb()
    msg = rgb_to_image_msg(rgb, STAMP, "camera_optical")
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 5, 7, 21)
    assert msg.header.stamp == STAMP and msg.header.frame_id == "camera_optical"
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_bgr8_is_swapped_to_rgb_both_ways():
    rgb = _rgb()
    msg = rgb_to_image_msg(rgb, STAMP, "cam", encoding="bgr8")
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), rgb[..., ::-1])
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("mono8", lambda rgb: rgb[..., :1]),
        ("rgba8", lambda rgb: np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 7, np.uint8)], axis=2)),
        ("bgra8", lambda rgb: np.concatenate([rgb[..., ::-1], np.full((*rgb.shape[:2], 1), 7, np.uint8)], axis=2)),
    ],
)
def test_other_8bit_encodings(encoding, make):
    rgb = _rgb()
    result = image_msg_to_rgb(_raw(make(rgb), encoding))
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("bigendian", [0, 1])
def test_16bit_keeps_the_high_byte_in_either_byte_order(bigendian):
    rgb = _rgb()
    wide = rgb.astype(np.uint16) * 256 + 17  # high byte = the 8-bit value, low byte = noise
    wide = wide.astype(">u2" if bigendian else "<u2")
    np.testing.assert_array_equal(image_msg_to_rgb(_raw(wide, "rgb16", bigendian=bigendian)), rgb)


def test_row_padding_is_skipped_and_a_trimmed_last_row_is_accepted():
    rgb = _rgb()
    msg = _raw(rgb, "rgb8", step=32)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    msg.data = msg.data[: 32 * 4 + 21]  # no padding after the last row
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "yuv422"}, "image encoding must be one of ['rgb8'"),
        ({"encoding": "yuv422"}, "got 'yuv422'"),
        ({"height": 0}, "image height and width must be > 0, got height=0 width=7"),
        ({"width": 0}, "image height and width must be > 0, got height=5 width=0"),
        ({"step": 20}, "image step must be >= width*channels*bytes = 7*3*1 = 21 for rgb8, got 20"),
        ({"is_bigendian": 2}, "image is_bigendian must be 0 or 1, got 2"),
        ({"height": 6}, "image data is truncated: 6 rows of step 21 for a 7x6 rgb8 image need 126 bytes, got 105"),
    ],
)
def test_bad_raw_images_are_rejected_with_the_field_and_expected_value(change, message):
    msg = rgb_to_image_msg(_rgb(), STAMP, "cam")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(ValueError) as error:
        check_image_msg(msg)
    assert message in str(error.value)
    with pytest.raises(ValueError):
        image_msg_to_rgb(msg)


def test_png_round_trip_is_exact_and_jpeg_is_close():
    # Smooth ramps with a different value per channel, so JPEG stays close and a channel swap would show.
    rows, cols = np.mgrid[0:32, 0:48]
    rgb = np.stack([cols * 5, rows * 7, np.full_like(rows, 200)], axis=2).astype(np.uint8)
    png = rgb_to_compressed_msg(rgb, STAMP, "cam", codec="png")
    assert compressed_format(png) == "png" and png.header.stamp == STAMP
    np.testing.assert_array_equal(compressed_msg_to_rgb(png), rgb)
    jpeg = rgb_to_compressed_msg(rgb, STAMP, "cam", codec="jpeg", quality=95)
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    decoded = compressed_msg_to_rgb(jpeg)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 4  # colour channels not swapped


@pytest.mark.parametrize(("fmt", "codec"), [("jpeg", "jpeg"), ("JPG", "jpeg"), ("bgr8; png compressed bgr8", "png")])
def test_compressed_format_names(fmt, codec):
    assert compressed_format(CompressedImage(format=fmt)) == codec


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        ("tiff", b"\x00", "compressed image format must name jpeg or png, got 'tiff'"),
        ("jpeg", b"", "compressed image data is empty, expected an encoded jpeg or png"),
        ("jpeg", b"not a jpeg at all", "compressed image data (17 bytes) is not a decodable jpeg image"),
    ],
)
def test_bad_compressed_images_are_rejected(fmt, data, message):
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    with pytest.raises(ValueError) as error:
        compressed_msg_to_rgb(msg)
    assert message in str(error.value)


def test_truncated_jpeg_is_rejected_or_decodes_to_the_right_size():
    full = rgb_to_compressed_msg(_rgb(64, 64), STAMP, "cam")
    cut = CompressedImage(format=full.format)
    cut.data = full.data[:20]
    with pytest.raises(ValueError, match="is not a decodable jpeg"):
        compressed_msg_to_rgb(cut)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)]
)
def test_publishing_helpers_reject_non_rgb_arrays(bad):
    with pytest.raises(ValueError, match="rgb image must be a non-empty"):
        rgb_to_image_msg(bad, STAMP, "cam")
    with pytest.raises(ValueError, match="rgb image must be a non-empty"):
        rgb_to_compressed_msg(bad, STAMP, "cam")


def test_publishing_helpers_reject_unknown_encodings():
    with pytest.raises(ValueError, match="encoding must be 'rgb8' or 'bgr8' when publishing, got 'mono8'"):
        rgb_to_image_msg(_rgb(), STAMP, "cam", encoding="mono8")
    with pytest.raises(ValueError, match="codec must be 'jpeg' or 'png', got 'webp'"):
        rgb_to_compressed_msg(_rgb(), STAMP, "cam", codec="webp")
