"""Speed of `videovla-import rosbag` and of a LeRobot v3 export -> import round trip, on a synthetic recording.

    scripts/with_env.sh python benchmarks/dataset_conversion.py [--seconds 30] [--camera-hz 30] [--size 224]

Writes a rosbag2 (--storage mcap or sqlite3) like a real arm's: raw RGB camera at --camera-hz, PoseStamped at
100 Hz, a Float64 gripper at 10 Hz. Printed: the bag's size and frames; the import's wall time (sampled at
10 Hz); the export and import times of the LeRobot round trip and its frame error (uint8 levels).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from videovla_model.episodes import EpisodeDataset
from videovla_model.importers.lerobot_export import export_lerobot
from videovla_model.importers.lerobot_import import import_lerobot
from videovla_model.importers.rosbag_import import RosbagImportOptions, import_rosbag

TYPES = get_typestore(Stores.LATEST)
T = TYPES.types
START_NS = 1_700_000_000_000_000_000


def _header(stamp_ns: int) -> object:
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="base_link")


def _scene(size: int) -> np.ndarray:
    """A smooth colour pattern; frames are it shifted along, like a slowly panning camera."""
    y, x = np.mgrid[0:size, 0:size] / size
    return (np.stack((x, y, 0.5 + 0.5 * np.sin(6 * x * y)), axis=-1) * 255).astype(np.uint8)


def write_bag(path: Path, seconds: float, camera_hz: float, size: int, storage: StoragePlugin) -> int:
    scene = _scene(size)
    events: list[tuple[int, str, str, object]] = []
    frames = int(seconds * camera_hz)
    for i in range(frames):
        stamp = START_NS + round(i * 1e9 / camera_hz)
        image = np.roll(scene, i, axis=1)
        message = T["sensor_msgs/msg/Image"](
            header=_header(stamp), height=size, width=size, encoding="rgb8", is_bigendian=0, step=size * 3,
            data=image.ravel(),
        )  # fmt: skip
        events.append((stamp + 5_000_000, "/camera/image_raw", "sensor_msgs/msg/Image", message))
    for i in range(int(seconds * 100) + 10):
        stamp = START_NS + i * 10_000_000
        angle = i * 0.002
        pose = T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=0.3 + 0.05 * np.cos(angle), y=0.05 * np.sin(angle), z=0.2),
            orientation=T["geometry_msgs/msg/Quaternion"](x=1.0, y=0.0, z=0.0, w=0.0),
        )
        stamped = T["geometry_msgs/msg/PoseStamped"](header=_header(stamp), pose=pose)
        events.append((stamp + 1_000_000, "/ee_pose", "geometry_msgs/msg/PoseStamped", stamped))
        if i % 10 == 0:
            opening = T["std_msgs/msg/Float64"](data=float((i // 300) % 2))
            events.append((stamp, "/gripper", "std_msgs/msg/Float64", opening))
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for log_time, topic, kind, message in sorted(events, key=lambda event: event[0]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, kind, typestore=TYPES)
            writer.write(connections[topic], log_time, TYPES.serialize_cdr(message, kind))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    args = parser.parse_args()
    storage = StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        frames = write_bag(root / "bag", args.seconds, args.camera_hz, args.size, storage)
        megabytes = sum(f.stat().st_size for f in (root / "bag").iterdir()) / 2**20
        print(
            f"bag: {args.storage}, {frames} frames {args.size}x{args.size} at {args.camera_hz} Hz, {megabytes:.0f} MiB"
        )
        options = RosbagImportOptions("/camera/image_raw", "/ee_pose", "pan the camera", gripper_topic="/gripper")
        started = time.perf_counter()
        report = import_rosbag(root / "bag", root / "episodes", options)
        steps = sum(episode.steps for episode in report.episodes)
        print(f"rosbag import: {time.perf_counter() - started:.2f} s for {frames} camera frames -> {steps} steps")
        started = time.perf_counter()
        export_lerobot(root / "episodes", root / "lerobot")
        print(f"LeRobot v3 export: {time.perf_counter() - started:.2f} s ({steps} frames, AV1 CRF 30)")
        started = time.perf_counter()
        import_lerobot(root / "lerobot", root / "back")
        print(f"LeRobot v3 import: {time.perf_counter() - started:.2f} s")
        (original,), (back,) = EpisodeDataset(root / "episodes"), EpisodeDataset(root / "back")
        error = np.abs(np.asarray(back.frames, np.int16) - np.asarray(original.frames, np.int16))
        same = np.array_equal(back.actions, original.actions)
        print(f"round trip: frames max error {error.max()}, mean {error.mean():.2f}; actions identical: {same}")


if __name__ == "__main__":
    main()
