"""sensor_msgs Image / CompressedImage <-> (H, W, 3) uint8 RGB numpy arrays, without cv_bridge.

ROS 2's cv_bridge is not on PyPI, and the policy only needs a handful of encodings, so the conversion lives
here as plain numpy + OpenCV. Every malformed message raises ValueError naming the field and the value that
was expected, so the policy node can log it, count it and keep serving.

Supported raw encodings: rgb8, bgr8, mono8, rgba8, bgra8 and their 16-bit variants (rgb16, bgr16, mono16,
rgba16, bgra16, scaled to 8 bit by dropping the low byte; `is_bigendian` says the byte order of those).
Compressed formats: whatever image_transport's compressed plugin writes for JPEG and PNG ("jpeg", "png",
"rgb8; jpeg compressed bgr8", ...); OpenCV decodes them.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image


@dataclass(frozen=True)
class _Layout:
    channels: int
    bytes_per_channel: int
    to_rgb: int | None
    """cv2 colour conversion code to RGB, or None when the pixels are RGB already."""


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, None),
    "bgr8": _Layout(3, 1, cv2.COLOR_BGR2RGB),
    "mono8": _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    "rgba8": _Layout(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, 1, cv2.COLOR_BGRA2RGB),
    "rgb16": _Layout(3, 2, None),
    "bgr16": _Layout(3, 2, cv2.COLOR_BGR2RGB),
    "mono16": _Layout(1, 2, cv2.COLOR_GRAY2RGB),
    "rgba16": _Layout(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Layout(4, 2, cv2.COLOR_BGRA2RGB),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# The compression name image_transport puts in `format`, mapped to the encoder extension OpenCV wants.
_COMPRESSED_FORMATS: dict[str, str] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def check_image_msg(msg: Image) -> None:
    """Validates the metadata of a raw image in O(1) (no pixel access); raises ValueError naming the field.

    Cheap enough to run in a subscription callback on every frame, so malformed frames never displace a good
    one from the newest-frame slot.
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ValueError(f"image encoding must be one of {list(SUPPORTED_ENCODINGS)}, got {msg.encoding!r}")
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f"image height and width must be > 0, got height={msg.height} width={msg.width}")
    if msg.is_bigendian not in (0, 1):
        raise ValueError(f"image is_bigendian must be 0 or 1, got {msg.is_bigendian}")
    row_bytes = msg.width * layout.channels * layout.bytes_per_channel
    if msg.step < row_bytes:
        raise ValueError(
            f"image step must be >= width*channels*bytes = {msg.width}*{layout.channels}*"
            f"{layout.bytes_per_channel} = {row_bytes} for {msg.encoding}, got {msg.step}"
        )
    # The last row needs only its pixels, not the full stride (some drivers trim the final padding).
    needed = msg.step * (msg.height - 1) + row_bytes
    if len(msg.data) < needed:
        raise ValueError(
            f"image data is truncated: {msg.height} rows of step {msg.step} for a {msg.width}x{msg.height} "
            f"{msg.encoding} image need {needed} bytes, got {len(msg.data)}"
        )


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (height, width, 3) uint8 RGB (a new array; the message is not referenced)."""
    check_image_msg(msg)
    layout = _LAYOUTS[msg.encoding]
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    row_bytes = msg.width * layout.channels * layout.bytes_per_channel
    # Pad a trimmed last row virtually by viewing rows through the stride, then cut the padding off.
    rows = np.lib.stride_tricks.as_strided(raw, shape=(msg.height, row_bytes), strides=(msg.step, 1))
    if layout.bytes_per_channel == 2:
        # The high byte of a 16-bit sample is the first byte in big-endian order and the second otherwise.
        high = 0 if msg.is_bigendian else 1
        rows = rows[:, high::2]
    pixels = rows.reshape(msg.height, msg.width, layout.channels)
    if layout.to_rgb is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), layout.to_rgb)


def compressed_format(msg: CompressedImage) -> str:
    """The compression of a CompressedImage ("jpeg" or "png"), read from its `format` field."""
    # image_transport writes "<encoding>; <codec> compressed <encoding>"; plain "jpeg"/"png" is also common.
    text = msg.format.lower()
    for name in _COMPRESSED_FORMATS:
        if name in text:
            return "jpeg" if name == "jpg" else name
    raise ValueError(f"compressed image format must name jpeg or png, got {msg.format!r}")


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    codec = compressed_format(msg)
    if len(msg.data) == 0:
        raise ValueError("compressed image data is empty, expected an encoded jpeg or png")
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None or decoded.size == 0:
        raise ValueError(f"compressed image data ({len(msg.data)} bytes) is not a decodable {codec} image")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb image must be a non-empty (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image with encoding "rgb8" or "bgr8", tightly packed."""
    _check_rgb(rgb)
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be 'rgb8' or 'bgr8' when publishing, got {encoding!r}")
    pixels = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    # An array.array('B') is taken by the message as-is; bytes or numpy input would be copied element-wise.
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


def rgb_to_compressed_msg(
    rgb: np.ndarray, stamp: Time, frame_id: str, codec: str = "jpeg", quality: int = 90
) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage ("jpeg" with `quality` 0..100, or "png")."""
    _check_rgb(rgb)
    if codec not in ("jpeg", "png"):
        raise ValueError(f"codec must be 'jpeg' or 'png', got {codec!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(_COMPRESSED_FORMATS[codec], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {codec}")
    msg = CompressedImage()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {codec} compressed bgr8"
    msg.data = array.array("B", encoded.tobytes())
    return msg
