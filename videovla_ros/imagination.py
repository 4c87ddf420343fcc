"""The policy's imagined video as ROS messages: a side-by-side strip for RViz, a VideoClip, frame playback.

Imagined frame i is the scene the policy expects (i + 1) frame periods after the capture of the image it
imagined from, so every frame message is stamped with that time.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from sensor_msgs.msg import Image

from videovla_msgs.msg import VideoClip
from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND, ns_to_time
from videovla_ros.image_conversion import rgb_to_image_msg

IMAGINATION_MODES: tuple[str, ...] = ("auto", "always", "never")


def check_frames(frames: np.ndarray) -> None:
    """Raises ValueError unless `frames` is a non-empty (T, H, W, 3) uint8 array."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(
            f"imagined frames must be a (T, H, W, 3) uint8 array, got {shape} {getattr(frames, 'dtype', '')}"
        )
    if 0 in frames.shape[:3]:
        raise ValueError(f"imagined frames must not be empty, got shape {frames.shape}")


def tile_strip(frames: np.ndarray, max_width: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (H', T*W', 3) uint8: the frames side by side, oldest on the left.

    max_width: when > 0 and the strip would be wider, every frame is subsampled by the smallest integer
        factor that fits (so RViz gets a light image and pixels stay undistorted); 0 keeps full size.
    """
    check_frames(frames)
    if max_width < 0:
        raise ValueError(f"max_width must be >= 0 (0 = no limit), got {max_width}")
    count, _height, width, _ = frames.shape
    factor = 1
    # Subsampling by f leaves ceil(width / f) columns per frame; take the smallest f that fits (1 px at most).
    while max_width and count * -(-width // factor) > max_width and factor < width:
        factor += 1
    small = frames[:, ::factor, ::factor]
    # (T, H, W, 3) -> (H, T, W, 3) -> (H, T*W, 3)
    return np.ascontiguousarray(small.transpose(1, 0, 2, 3).reshape(small.shape[1], -1, 3))


def frame_stamp_ns(capture_time_ns: int, frame_period: float, index: int) -> int:
    """ROS time (ns) imagined frame `index` depicts: one period after the capture for frame 0."""
    return capture_time_ns + round((index + 1) * frame_period * NANOSECONDS_PER_SECOND)


def strip_msg(frames: np.ndarray, capture_time_ns: int, frame_id: str, max_width: int = 0) -> Image:
    """The strip of `tile_strip` as an rgb8 Image stamped with the capture time of the source image."""
    return rgb_to_image_msg(tile_strip(frames, max_width), ns_to_time(capture_time_ns), frame_id)


def frame_msgs(frames: np.ndarray, capture_time_ns: int, frame_id: str, frame_period: float) -> list[Image]:
    """One rgb8 Image per imagined frame (T, H, W, 3), each stamped with the time it depicts."""
    check_frames(frames)
    return [
        rgb_to_image_msg(frame, ns_to_time(frame_stamp_ns(capture_time_ns, frame_period, i)), frame_id)
        for i, frame in enumerate(frames)
    ]


def video_clip_msg(
    frames: np.ndarray,
    capture_time_ns: int,
    frame_id: str,
    instruction: str,
    chunk_sequence: int,
    frame_period: float,
) -> VideoClip:
    """A VideoClip of the imagined frames (T, H, W, 3), linked to the ActionChunk of the same pass."""
    if not frame_period >= 0:
        raise ValueError(f"frame_period must be >= 0 seconds, got {frame_period}")
    clip = VideoClip()
    clip.header.stamp = ns_to_time(capture_time_ns)
    clip.header.frame_id = frame_id
    clip.instruction = instruction
    clip.chunk_sequence = chunk_sequence
    clip.frames = frame_msgs(frames, capture_time_ns, frame_id, frame_period)
    clip.frame_period = float(frame_period)
    return clip


class FramePlayback:
    """Frames waiting to be shown one per tick; a new clip replaces what is left of the old one.

    A timer at the imagined frame period calls `next_frame`, so `imagination/frame` replays the imagined
    video at the speed the policy imagined it. Thread-safe: the inference thread loads, a timer pops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Image] = deque()

    def load(self, frames: list[Image]) -> None:
        with self._lock:
            self._queue = deque(frames)

    def next_frame(self) -> Image | None:
        """The next frame to show, or None when the clip has been shown."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)


def should_decode(mode: str, subscribers: int, sequence: int, every: int) -> bool:
    """Whether to pay for decoding the imagined video of chunk `sequence` (0, 1, ... since activation): "always",
    "never", or "auto" = someone is watching; and then only for every `every`-th chunk, starting with the first."""
    if mode not in IMAGINATION_MODES:
        raise ValueError(f"publish_imagination must be one of {list(IMAGINATION_MODES)}, got {mode!r}")
    if every < 1:
        raise ValueError(f"imagination_every must be >= 1 chunk, got {every}")
    wanted = mode == "always" or (mode == "auto" and subscribers > 0)
    return wanted and sequence % every == 0
