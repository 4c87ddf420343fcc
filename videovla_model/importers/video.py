"""mp4 files of RGB frames with PyAV: the encoder settings LeRobot v3 writes by default, and sequential decoding."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class VideoSettings:
    """LeRobot's defaults: AV1 (SVT-AV1), yuv420p, a key frame every 2 frames (cheap random access), CRF 30."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    gop: int = 2
    crf: int = 30

    @property
    def codec_name(self) -> str:
        """The name info.json records (`av1`, `h264`, ...), not the encoder library's."""
        return av.codec.Codec(self.codec, "w").canonical_name


def encode_video(frames: Iterable[np.ndarray], path: Path, fps: int, settings: VideoSettings) -> int:
    """Writes (H, W, 3) uint8 RGB frames, frame i at i / fps seconds; returns the number of frames written."""
    # SVT-AV1 prints its configuration banner to stderr at its default level; keep only its errors.
    os.environ.setdefault("SVT_LOG", "1")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(settings.codec, rate=fps)
        stream.pix_fmt = settings.pix_fmt
        stream.options = {"g": str(settings.gop), "crf": str(settings.crf)}
        count = 0
        for frame in frames:
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def decode_video(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(timestamp in seconds, (H, W, 3) uint8 RGB frame) for every frame of the first video stream, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(f"{path}: a frame without a presentation timestamp")
            yield float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24")
