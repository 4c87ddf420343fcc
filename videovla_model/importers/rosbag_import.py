"""`videovla-import rosbag`: a rosbag2 recording (sqlite3 or MCAP, read with `rosbags`, no ROS install) -> episodes.

Two passes over the bag. The first reads every stamp, pose and gripper value (not the images), splits the
recording into episodes (`EpisodeSplit`) and samples each with `videovla_model.resampling.resample`, the
recorder's rule: a bag missing a topic, stamps that go backwards or a gap longer than the limit are refused
here, naming the topic and the time, before any image is decoded. The second pass decodes only the sampled
camera frames and writes each episode as soon as it is complete, into a folder renamed to OUT at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, get_typestore
from tyro.constructors import PrimitiveConstructorSpec

from videovla_model.episodes import EpisodeWriter
from videovla_model.importers import rosbag_messages as msgs
from videovla_model.importers.staging import ConversionError, staged_folder
from videovla_model.resampling import (
    NANOSECONDS_PER_SECOND,
    PoseSeries,
    Resampled,
    ResampleError,
    ResampleLimits,
    StreamNames,
    StreamReport,
    resample,
)


@dataclass(frozen=True)
class EpisodeSplit:
    """How one bag becomes episodes: `none` (one episode), `gaps` (a camera pause longer than the gap limit
    starts a new episode instead of being refused) or split times in seconds from the first frame."""

    mode: str = "none"
    times_s: tuple[float, ...] = ()

    def text(self) -> str:
        """The inverse of `parse`: `none`, `gaps` or the comma-separated seconds."""
        return ",".join(f"{t:g}" for t in self.times_s) if self.mode == "times" else self.mode

    @classmethod
    def parse(cls, text: str) -> EpisodeSplit:
        """`none`, `gaps` or comma-separated increasing seconds (`12.5,30`)."""
        if text in ("none", "gaps"):
            return cls(text)
        try:
            times = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"--episode-split takes none, gaps or seconds like 12.5,30; got {text[:40]!r}") from None
        if not all(np.isfinite(times)) or any(b <= a for a, b in zip((0.0, *times), times, strict=False)):
            raise ValueError(f"--episode-split times must be increasing seconds > 0, got {text[:40]!r}")
        return cls("times", times)


EPISODE_SPLIT_FLAG = PrimitiveConstructorSpec(
    nargs=1,
    metavar="none|gaps|SECONDS,...",
    instance_from_str=lambda strings: EpisodeSplit.parse(strings[0]),
    is_instance=lambda value: isinstance(value, EpisodeSplit),
    str_from_instance=lambda split: [split.text()],
)
"""`--episode-split` takes the split as one word (`EpisodeSplit.parse`)."""


@dataclass(frozen=True)
class RosbagImportOptions:
    """How `videovla-import rosbag` reads a bag (each field is a flag of it)."""

    image_topic: str
    """sensor_msgs/Image or CompressedImage"""
    pose_topic: str
    """geometry_msgs/PoseStamped, or Pose (stamped by log time)"""
    instruction: str
    """what the demonstrations do, e.g. 'pick up the red cube'"""
    gripper_topic: str | None = None
    """std_msgs/Float32, Float64 or sensor_msgs/JointState (None: open throughout)"""
    rate_hz: float = 10.0
    """the model's action rate: one step per 1 / rate_hz seconds"""
    limits: Annotated[ResampleLimits, tyro.conf.OmitArgPrefixes] = field(default_factory=ResampleLimits)
    split: Annotated[EpisodeSplit, EPISODE_SPLIT_FLAG, tyro.conf.arg(name="episode-split")] = field(
        default_factory=EpisodeSplit
    )
    """none: one episode; gaps: a camera pause > max-gap starts one; or seconds from the first frame: 12.5,30"""
    gripper_range: Annotated[tuple[float, float], tyro.conf.arg(metavar="CLOSED OPEN")] = (0.0, 1.0)
    """raw gripper readings meaning closed and open; mapped to 0..1 and clipped"""
    gripper_joint: str | None = None
    """the JointState joint that is the gripper (None: its only one)"""
    embodiment_id: int = 0
    """embodiment id stored with every episode"""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate_hz must be a finite number > 0 Hz, got {self.rate_hz!r}")


@dataclass(frozen=True)
class EpisodeReport:
    steps: int
    start_s: float
    """Capture time of the first frame, seconds from the bag's first camera frame."""
    streams: tuple[StreamReport, ...]
    flags: tuple[str, ...]


@dataclass(frozen=True)
class BagImportReport:
    topic_types: dict[str, str]
    stamp_sources: dict[str, str]
    episodes: tuple[EpisodeReport, ...]

    def lines(self) -> list[str]:
        """The report for the user: per topic its type and stamp source, per episode each topic's numbers."""
        lines = [
            f"{topic}: {kind}, stamps from {self.stamp_sources[topic]}" for topic, kind in self.topic_types.items()
        ]
        for number, episode in enumerate(self.episodes):
            lines.append(f"episode {number}: {episode.steps} steps from t={episode.start_s:.3f} s")
            lines.extend(
                f"  {s.name}: {s.count} samples, {s.rate_hz:.1f} Hz, longest gap {s.max_gap_s:.3f} s, "
                f"{s.dropped} dropped"
                for s in episode.streams
            )
            lines.extend(f"  note: {flag}" for flag in episode.flags)
        return lines


@dataclass(frozen=True)
class _Streams:
    frame_stamps: np.ndarray
    poses: PoseSeries
    gripper_stamps: np.ndarray | None
    gripper_values: np.ndarray | None


def _connections(reader: Reader, options: RosbagImportOptions) -> dict[str, Any]:
    """topic -> its connection, for the topics the import needs; ConversionError for a missing or odd one."""
    available = {connection.topic: connection for connection in reader.connections}
    wanted = [(options.image_topic, msgs.IMAGE_TYPES), (options.pose_topic, msgs.POSE_TYPES)]
    if options.gripper_topic is not None:
        wanted.append((options.gripper_topic, msgs.GRIPPER_TYPES))
    found = {}
    for topic, types in wanted:
        if topic not in available:
            raise ConversionError(f"{reader.path}: no topic {topic!r} in the bag (topics: {sorted(available)[:12]})")
        if available[topic].msgtype not in types:
            raise ConversionError(f"topic {topic!r} has type {available[topic].msgtype}, expected one of {list(types)}")
        if available[topic].msgcount == 0:
            raise ConversionError(f"topic {topic!r} has no messages in {reader.path}")
        found[topic] = available[topic]
    return found


def _read_streams(reader: Reader, connections: dict[str, Any], options: RosbagImportOptions) -> _Streams:
    """Pass 1: camera stamps, poses and gripper values in the bag's (arrival) order."""
    typestore = get_typestore(Stores.LATEST)
    stamps: dict[str, list[int]] = {topic: [] for topic in connections}
    positions, quaternions, grips = [], [], []
    closed, opened = options.gripper_range
    for connection, log_time, raw in reader.messages(connections=list(connections.values())):
        topic, kind = connection.topic, connection.msgtype
        message = typestore.deserialize_cdr(raw, kind)
        stamps[topic].append(msgs.stamp_ns(message, kind, log_time))
        if topic == options.pose_topic:
            position, quaternion = msgs.pose_of(message, kind)
            positions.append(position)
            quaternions.append(quaternion)
        elif topic == options.gripper_topic:
            raw_value = msgs.gripper_of(message, kind, options.gripper_joint, topic)
            grips.append(np.clip((raw_value - closed) / (opened - closed), 0.0, 1.0))
    gripper = options.gripper_topic
    return _Streams(
        frame_stamps=np.asarray(stamps[options.image_topic], dtype=np.int64),
        poses=PoseSeries(
            np.asarray(stamps[options.pose_topic], dtype=np.int64), np.asarray(positions), np.asarray(quaternions)
        ),
        gripper_stamps=None if gripper is None else np.asarray(stamps[gripper], dtype=np.int64),
        gripper_values=None if gripper is None else np.asarray(grips, dtype=np.float64),
    )


def _segments(frame_stamps: np.ndarray, split: EpisodeSplit, max_gap_s: float) -> list[range]:
    """Camera message index ranges, one per episode (arrival order is kept; resample checks the stamps)."""
    count = len(frame_stamps)
    if split.mode == "none":
        starts = [0]
    elif split.mode == "gaps":
        gaps = np.diff(frame_stamps) > max_gap_s * NANOSECONDS_PER_SECOND
        starts = [0, *(np.flatnonzero(gaps) + 1).tolist()]
    else:
        bounds = frame_stamps[0] + np.round(np.asarray(split.times_s) * NANOSECONDS_PER_SECOND).astype(np.int64)
        starts = sorted({0, *(int(np.argmax(frame_stamps >= b)) for b in bounds if (frame_stamps >= b).any())})
    ends = [*starts[1:], count]
    return [range(start, end) for start, end in zip(starts, ends, strict=True)]


def _window(stamps: np.ndarray, first: int, last: int, hold_previous: bool) -> np.ndarray:
    """Indices of the samples within [first, last]; with hold_previous also the newest one before `first`."""
    inside = (stamps >= first) & (stamps <= last)
    if hold_previous:
        before = np.flatnonzero(stamps < first)
        if before.size:
            inside[before[-1]] = True
    return np.flatnonzero(inside)


def _resample_segment(streams: _Streams, segment: range, options: RosbagImportOptions) -> Resampled:
    """The recorder's rule on one episode's camera frames, with the poses and gripper values around them."""
    frames = streams.frame_stamps[segment.start : segment.stop]
    margin = int(options.limits.max_gap_s * NANOSECONDS_PER_SECOND)
    first, last = int(frames.min()) - margin, int(frames.max()) + margin
    poses = streams.poses
    keep = _window(poses.stamps_ns, first, last, hold_previous=False)
    grip_stamps, grip_values = streams.gripper_stamps, streams.gripper_values
    if grip_stamps is not None and grip_values is not None:
        held = _window(grip_stamps, first, last, hold_previous=True)
        grip_stamps, grip_values = grip_stamps[held], grip_values[held]
    names = StreamNames(options.image_topic, options.pose_topic, options.gripper_topic or "gripper")
    try:
        return resample(
            frames,
            PoseSeries(poses.stamps_ns[keep], poses.positions[keep], poses.quaternions[keep]),
            grip_stamps,
            grip_values,
            options.rate_hz,
            options.limits,
            names=names,
        )
    except ResampleError as error:
        raise ConversionError(str(error)) from error


def _sampled_frames(
    reader: Reader, connection: Any, plans: list[tuple[range, Resampled]], topic: str
) -> Iterator[tuple[int, np.ndarray]]:
    """Pass 2: (episode number, (T, H, W, 3) frames) for each plan, decoding only the sampled camera messages."""
    typestore = get_typestore(Stores.LATEST)
    wanted: dict[int, list[tuple[int, int]]] = {}
    for number, (segment, resampled) in enumerate(plans):
        for position, index in enumerate(resampled.frame_indices):
            wanted.setdefault(segment.start + int(index), []).append((number, position))
    buffers: dict[int, np.ndarray] = {}
    filled = dict.fromkeys(range(len(plans)), 0)
    for index, (_, log_time, raw) in enumerate(reader.messages(connections=[connection])):
        for number, position in wanted.get(index, ()):
            message = typestore.deserialize_cdr(raw, connection.msgtype)
            when = f"stamp {msgs.stamp_ns(message, connection.msgtype, log_time) / NANOSECONDS_PER_SECOND:.3f} s"
            frame = msgs.image_to_rgb(message, connection.msgtype, topic, when)
            length = len(plans[number][1].frame_indices)
            buffer = buffers.setdefault(number, np.empty((length, *frame.shape), np.uint8))
            if frame.shape != buffer.shape[1:]:
                raise ConversionError(
                    f"topic {topic!r}: the image at {when} is {frame.shape}, earlier ones were {buffer.shape[1:]}"
                )
            buffer[position] = frame
            filled[number] += 1
            if filled[number] == length:
                yield number, buffers.pop(number)


def import_rosbag(bag: Path, out: Path, options: RosbagImportOptions) -> BagImportReport:
    """Converts the rosbag2 folder `bag` into the episode dataset `out` (which must not exist)."""
    if not options.instruction.strip():
        raise ConversionError("--instruction must be a non-empty text")
    if options.gripper_range[0] == options.gripper_range[1]:
        raise ConversionError(f"--gripper-range needs two different values, got {options.gripper_range}")
    bag = Path(bag)
    if not (bag / "metadata.yaml").is_file():
        raise ConversionError(f"{bag} is not a rosbag2 folder: {bag / 'metadata.yaml'} is missing")
    try:
        with Reader(bag) as reader:
            return _import_from(reader, bag, out, options)
    except ReaderError as error:
        raise ConversionError(f"{bag}: not a readable rosbag2: {str(error)[:200]}") from error


def _import_from(reader: Reader, bag: Path, out: Path, options: RosbagImportOptions) -> BagImportReport:
    """Both passes over an open bag; see the module docstring."""
    connections = _connections(reader, options)
    streams = _read_streams(reader, connections, options)
    segments = _segments(streams.frame_stamps, options.split, options.limits.max_gap_s)
    plans = [(segment, _resample_segment(streams, segment, options)) for segment in segments]
    origin = int(streams.frame_stamps[0])
    episodes = tuple(
        EpisodeReport(
            steps=len(resampled.actions),
            start_s=(int(resampled.tick_stamps_ns[0]) - origin) / NANOSECONDS_PER_SECOND,
            streams=resampled.reports,
            flags=resampled.flags,
        )
        for _, resampled in plans
    )
    with staged_folder(out) as root:
        writer = EpisodeWriter(root)
        for number, frames in _sampled_frames(reader, connections[options.image_topic], plans, options.image_topic):
            resampled = plans[number][1]
            writer.write(
                frames,
                resampled.actions,
                options.instruction,
                options.rate_hz,
                embodiment_id=options.embodiment_id,
                extra={
                    "source": "rosbag2",
                    "bag": str(bag.resolve()),
                    "topics": [options.image_topic, options.pose_topic, options.gripper_topic],
                    "start_stamp_ns": int(resampled.tick_stamps_ns[0]),
                    "flags": list(resampled.flags),
                },
            )
    kinds = {topic: connection.msgtype for topic, connection in connections.items()}
    sources = {
        topic: "bag log time" if kind in msgs.HEADERLESS_TYPES else "header.stamp" for topic, kind in kinds.items()
    }
    return BagImportReport(kinds, sources, episodes)
