"""`videovla-import rosbag`: real rosbag2 files (MCAP and sqlite3, written with `rosbags`) from a simulated run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from videovla_model.episodes import EpisodeDataset
from videovla_model.importers.cli import import_main
from videovla_model.importers.rosbag_import import EpisodeSplit, RosbagImportOptions, import_rosbag
from videovla_model.importers.staging import ConversionError
from videovla_model.train import main as train_main
from videovla_sim import collect
from videovla_sim.env import EnvConfig, TabletopEnv
from videovla_sim.scene import SceneConfig

RATE_HZ = 10.0
PERIOD_NS = 100_000_000
START_NS = 1_700_000_000_000_000_000
TYPES = get_typestore(Stores.LATEST)
T = TYPES.types
IMAGE, POSE, GRIPPER = "/camera/color/image_raw", "/rm_driver/udp_arm_position", "/gripper/state"
# Realman's gripper reports 0..70 mm; 0.07 m is open.
GRIPPER_OPEN_M = 0.07


@dataclass
class Event:
    topic: str
    msgtype: str
    log_time_ns: int
    message: object


@pytest.fixture(scope="module")
def recording() -> collect.Recording:
    env = TabletopEnv(EnvConfig(scene=SceneConfig(image_height=48, image_width=64)))
    try:
        return collect.record_episode(env, "pick", 3, action_rate_hz=RATE_HZ, max_seconds=2.5)
    finally:
        env.close()


def header(stamp_ns: int) -> object:
    time = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=time, frame_id="base_link")


def image_message(frame: np.ndarray, stamp_ns: int, compressed: bool) -> object:
    if compressed:
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        assert ok
        return T["sensor_msgs/msg/CompressedImage"](header=header(stamp_ns), format="png", data=png.ravel())
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    height, width = frame.shape[:2]
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns), height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3,
        data=bgr.ravel(),
    )  # fmt: skip


def pose_message(position: np.ndarray, quaternion: np.ndarray) -> object:
    w, x, y, z = quaternion
    return T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=position[0], y=position[1], z=position[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
    )


def sim_events(recording: collect.Recording, *, realman: bool) -> list[Event]:
    """The run as a robot would publish it: camera at 10 Hz (3 ms transport delay), pose and gripper at each frame.

    realman=True: CompressedImage, header-less geometry_msgs/Pose and std_msgs/Float64 (stamped by log time);
    otherwise raw Image, PoseStamped and a JointState gripper.
    """
    events = []
    for i, frame in enumerate(recording.frames):
        stamp = START_NS + i * PERIOD_NS
        kind = "sensor_msgs/msg/CompressedImage" if realman else "sensor_msgs/msg/Image"
        events.append(Event(IMAGE, kind, stamp + 3_000_000, image_message(frame, stamp, realman)))
        pose = pose_message(recording.target_positions[i], recording.target_quaternions[i])
        if realman:
            events.append(Event(POSE, "geometry_msgs/msg/Pose", stamp, pose))
        else:
            stamped = T["geometry_msgs/msg/PoseStamped"](header=header(stamp), pose=pose)
            events.append(Event(POSE, "geometry_msgs/msg/PoseStamped", stamp + 1_000_000, stamped))
        # The gripper command of step i - 1 is in effect when frame i is captured (open before the first).
        opening = 1.0 if i == 0 else float(recording.actions[i - 1, 6])
        if realman:
            message = T["std_msgs/msg/Float64"](data=opening * GRIPPER_OPEN_M)
            events.append(Event(GRIPPER, "std_msgs/msg/Float64", stamp, message))
        else:
            state = T["sensor_msgs/msg/JointState"](
                header=header(stamp), name=["gripper_finger"], position=np.array([opening * GRIPPER_OPEN_M]),
                velocity=np.array([]), effort=np.array([]),
            )  # fmt: skip
            events.append(Event(GRIPPER, "sensor_msgs/msg/JointState", stamp + 1_000_000, state))
    return events


def write_bag(path: Path, events: list[Event], storage: StoragePlugin) -> Path:
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for event in sorted(events, key=lambda e: e.log_time_ns):
            if event.topic not in connections:
                connections[event.topic] = writer.add_connection(event.topic, event.msgtype, typestore=TYPES)
            writer.write(connections[event.topic], event.log_time_ns, TYPES.serialize_cdr(event.message, event.msgtype))
    return path


def options(**changes: object) -> RosbagImportOptions:
    base = RosbagImportOptions(
        image_topic=IMAGE,
        pose_topic=POSE,
        gripper_topic=GRIPPER,
        instruction="pick up the red cube",
        rate_hz=RATE_HZ,
        gripper_range=(0.0, GRIPPER_OPEN_M),
    )
    return replace(base, **changes)


def test_mcap_bag_gives_the_recorded_frames_and_actions(recording, tmp_path):
    bag = write_bag(tmp_path / "run_mcap", sim_events(recording, realman=False), StoragePlugin.MCAP)
    report = import_rosbag(bag, tmp_path / "out", options())
    (episode,) = EpisodeDataset(tmp_path / "out")
    steps = recording.num_steps - 1  # T frames -> T - 1 steps: the last frame has no next pose
    assert episode.metadata.num_steps == steps and report.episodes[0].steps == steps
    np.testing.assert_array_equal(episode.frames, recording.frames[:steps])
    np.testing.assert_allclose(episode.actions, recording.actions[:steps], atol=2e-6)
    assert episode.metadata.instruction == "pick up the red cube" and episode.metadata.action_rate_hz == RATE_HZ
    streams = {stream.name: stream for stream in report.episodes[0].streams}
    assert set(streams) == {IMAGE, POSE, GRIPPER}
    assert streams[IMAGE].rate_hz == pytest.approx(10.0) and streams[IMAGE].dropped == 0
    text = "\n".join(report.lines())
    assert f"{POSE}: geometry_msgs/msg/PoseStamped, stamps from header.stamp" in text
    assert f"{IMAGE}: {recording.num_steps} samples, 10.0 Hz, longest gap 0.100 s, 0 dropped" in text


def test_sqlite3_bag_with_realman_pose_and_compressed_images(recording, tmp_path):
    bag = write_bag(tmp_path / "run_sqlite", sim_events(recording, realman=True), StoragePlugin.SQLITE3)
    assert list(bag.glob("*.db3"))
    report = import_rosbag(bag, tmp_path / "out", options())
    (episode,) = EpisodeDataset(tmp_path / "out")
    steps = recording.num_steps - 1
    np.testing.assert_array_equal(episode.frames, recording.frames[:steps])  # PNG is lossless
    np.testing.assert_allclose(episode.actions, recording.actions[:steps], atol=2e-6)
    assert f"{POSE}: geometry_msgs/msg/Pose, stamps from bag log time" in report.lines()


def _without_camera_frames(events: list[Event], first: int, last: int) -> list[Event]:
    dropped = {START_NS + i * PERIOD_NS + 3_000_000 for i in range(first, last + 1)}
    return [e for e in events if not (e.topic == IMAGE and e.log_time_ns in dropped)]


def test_a_dropped_camera_frame_is_reported_and_its_tick_repeats_the_previous_frame(recording, tmp_path):
    events = _without_camera_frames(sim_events(recording, realman=False), 7, 7)
    report = import_rosbag(write_bag(tmp_path / "bag", events, StoragePlugin.MCAP), tmp_path / "out", options())
    camera = next(stream for stream in report.episodes[0].streams if stream.name == IMAGE)
    assert camera.dropped == 1 and camera.max_gap_s == pytest.approx(0.2)
    assert any("stalled" in flag for flag in report.episodes[0].flags)
    (episode,) = EpisodeDataset(tmp_path / "out")
    np.testing.assert_array_equal(episode.frames[7], recording.frames[6])


def test_camera_pauses_split_episodes_when_asked_and_are_refused_otherwise(recording, tmp_path):
    bag = write_bag(
        tmp_path / "bag", _without_camera_frames(sim_events(recording, realman=False), 10, 17), StoragePlugin.MCAP
    )
    with pytest.raises(ConversionError, match=rf"stream '{IMAGE}': gap of 0\.900 s after t=0\.900 s"):
        import_rosbag(bag, tmp_path / "refused", options())
    assert not (tmp_path / "refused").exists()
    report = import_rosbag(bag, tmp_path / "split", options(split=EpisodeSplit.parse("gaps")))
    assert [episode.steps for episode in report.episodes] == [9, recording.num_steps - 19]
    second = EpisodeDataset(tmp_path / "split")[1]
    np.testing.assert_array_equal(second.frames, recording.frames[18:-1])
    np.testing.assert_allclose(second.actions, recording.actions[18:-1], atol=2e-6)


def test_split_times(recording, tmp_path):
    bag = write_bag(tmp_path / "bag", sim_events(recording, realman=False), StoragePlugin.MCAP)
    report = import_rosbag(bag, tmp_path / "out", options(split=EpisodeSplit.parse("1.0")))
    assert [episode.steps for episode in report.episodes] == [9, recording.num_steps - 11]
    assert [episode.start_s for episode in report.episodes] == pytest.approx([0.0, 1.0])


def test_stamps_that_go_backwards_are_refused_naming_topic_and_time(recording, tmp_path):
    events = sim_events(recording, realman=False)
    late = next(e for e in events if e.topic == POSE and e.log_time_ns == START_NS + 5 * PERIOD_NS + 1_000_000)
    late.message.header.stamp = header(START_NS + 3 * PERIOD_NS).stamp
    bag = write_bag(tmp_path / "bag", events, StoragePlugin.MCAP)
    with pytest.raises(
        ConversionError, match=rf"stream '{POSE}': stamps are not strictly increasing at sample 5, t=0\.300"
    ):
        import_rosbag(bag, tmp_path / "out", options())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gripper_topic": "/missing"}, r"no topic '/missing' in the bag"),
        ({"image_topic": POSE}, rf"topic '{POSE}' has type geometry_msgs/msg/PoseStamped, expected one of"),
        ({"gripper_joint": "wrist"}, r"JointState has no joint 'wrist'"),
        ({"instruction": " "}, r"--instruction must be a non-empty text"),
    ],
)
def test_bad_requests_are_refused_and_leave_nothing(recording, tmp_path, change, message):
    bag = write_bag(tmp_path / "bag", sim_events(recording, realman=False), StoragePlugin.MCAP)
    with pytest.raises(ConversionError, match=message):
        import_rosbag(bag, tmp_path / "out", options(**change))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_folder_that_is_not_a_bag_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"not a rosbag2 folder: .*metadata.yaml is missing"):
        import_rosbag(tmp_path, tmp_path / "out", options())
    (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag]\n")
    with pytest.raises(ConversionError, match=r"not a readable rosbag2"):
        import_rosbag(tmp_path, tmp_path / "out", options())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["", "gap", "3,1", "-1", "nan"])
def test_episode_split_rejects_bad_text(text):
    with pytest.raises(ValueError, match="--episode-split"):
        EpisodeSplit.parse(text)


def test_command_line_prints_the_report(recording, tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", sim_events(recording, realman=True), StoragePlugin.MCAP)
    arguments = ["rosbag", str(bag), str(tmp_path / "out"), "--image-topic", IMAGE, "--pose-topic", POSE]
    arguments += ["--gripper-topic", GRIPPER, "--gripper-range", "0", str(GRIPPER_OPEN_M)]
    assert import_main([*arguments, "--instruction", "pick up the red cube", "--episode-split", "gaps"]) == 0
    out = capsys.readouterr().out
    assert f"{POSE}: geometry_msgs/msg/Pose, stamps from bag log time" in out and "1 episodes" in out
    assert import_main([*arguments, "--instruction", "again", "--max-gap", "0.05"]) == 2
    assert f"stream '{IMAGE}': gap of 0.100 s" in capsys.readouterr().err


def test_an_imported_bag_trains(recording, tmp_path):
    bag = write_bag(tmp_path / "bag", sim_events(recording, realman=True), StoragePlugin.SQLITE3)
    import_rosbag(bag, tmp_path / "data", options())
    arguments = ["--dataset", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--preset", "tiny"]
    assert train_main([*arguments, "--steps", "1", "--batch-size", "2", "--num-workers", "0"]) == 0
    assert (tmp_path / "run" / "final").is_dir()
