"""ROS 2 messages, as deserialised by `rosbags`, -> numpy: camera frames, end-effector poses, gripper values.

Stamps: messages with a header use `header.stamp` (the capture / measurement time). geometry_msgs/Pose
(Realman's `/rm_driver/udp_arm_position`), std_msgs/Float32 and Float64 have no header: their stamp is the
time the bag recorder received them (the bag's log time), which lags the measurement by the transport delay.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from videovla_model.importers.staging import ConversionError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/Pose")
GRIPPER_TYPES = ("std_msgs/msg/Float32", "std_msgs/msg/Float64", "sensor_msgs/msg/JointState")
HEADERLESS_TYPES = ("geometry_msgs/msg/Pose", "std_msgs/msg/Float32", "std_msgs/msg/Float64")
# encoding -> (channels, the cv2 conversion to RGB or None)
_RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


def stamp_ns(message: Any, msgtype: str, log_time_ns: int) -> int:
    """The message's capture stamp [ns]: header.stamp, or the bag's log time for header-less types."""
    if msgtype in HEADERLESS_TYPES:
        return int(log_time_ns)
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_to_rgb(message: Any, msgtype: str, topic: str, when: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        decoded = cv2.imdecode(np.frombuffer(bytes(message.data), np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ConversionError(f"topic {topic!r}: the {str(message.format)[:30]!r} image at {when} does not decode")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    encoding = str(message.encoding)
    if encoding not in _RAW_ENCODINGS:
        raise ConversionError(
            f"topic {topic!r}: image encoding {encoding[:30]!r} at {when} is not supported (use {list(_RAW_ENCODINGS)})"
        )
    channels, conversion = _RAW_ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.asarray(message.data, dtype=np.uint8)
    if step < width * channels or data.size < height * step:
        raise ConversionError(
            f"topic {topic!r}: the {height}x{width} {encoding} image at {when} has step {step} and {data.size} bytes"
        )
    pixels = data[: height * step].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels) if conversion is None else cv2.cvtColor(pixels, conversion)


def pose_of(message: Any, msgtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(position (3,), quaternion (4,) w, x, y, z) of a Pose or PoseStamped."""
    pose = message.pose if msgtype == "geometry_msgs/msg/PoseStamped" else message
    position, orientation = pose.position, pose.orientation
    return (
        np.array([position.x, position.y, position.z], dtype=np.float64),
        np.array([orientation.w, orientation.x, orientation.y, orientation.z], dtype=np.float64),
    )


def gripper_of(message: Any, msgtype: str, joint: str | None, topic: str) -> float:
    """The raw gripper reading: Float32 / Float64 data, or a JointState's position of `joint` (its only one)."""
    if msgtype != "sensor_msgs/msg/JointState":
        return float(message.data)
    names = list(message.name)
    if joint is None:
        if len(names) != 1:
            raise ConversionError(
                f"topic {topic!r}: JointState has joints {names[:8]}; choose one with --gripper-joint"
            )
        return float(message.position[0])
    if joint not in names:
        raise ConversionError(f"topic {topic!r}: JointState has no joint {joint!r} (joints: {names[:8]})")
    return float(message.position[names.index(joint)])
