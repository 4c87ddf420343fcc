"""The recorder node's decisions without DDS (videovla_ros.recorder_session) and `videovla-recover`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from videovla_model.episodes import EpisodeDataset
from videovla_model.recording import LiveRecording
from videovla_model.recording import main as recover_main
from videovla_model.resampling import ResampleLimits, StreamNames
from videovla_ros.recorder_session import RecorderSession, SessionConfig, latency_summary, min_free_bytes

S = 1_000_000_000
Q = np.array([0.0, 1.0, 0.0, 0.0])


def session(root: Path, **overrides) -> RecorderSession:
    values = {
        "dataset": root,
        "action_rate_hz": 10.0,
        "min_steps": 6,
        "limits": ResampleLimits(max_gap_s=0.5, max_pose_jump_m=0.05),
        "min_free_bytes": 0,
        "embodiment_id": 3,
        "stream_names": StreamNames("image_raw", "ee_pose", "gripper_command"),
        "has_gripper": True,
        **overrides,
    }
    return RecorderSession(SessionConfig(**values))


def feed(recorder: RecorderSession, start_s: float, seconds: float, *, camera: bool = True) -> None:
    """30 Hz camera and 100 Hz poses moving 1 mm per 10 ms, arriving 5 ms after capture."""
    for i in range(round(seconds * 100)):
        t = round((start_s + i / 100) * S)
        recorder.on_pose(t, t + 5_000_000, np.array([0.3 + 0.001 * (t / 1e7), 0.0, 0.4]), Q)
        if camera and i % 3 == 0:
            recorder.on_frame(t, t + 5_000_000, np.full((6, 6, 3), i % 256, dtype=np.uint8))


def test_start_needs_a_pose_and_one_episode_at_a_time(tmp_path):
    recorder = session(tmp_path)
    assert "no arm pose received on 'ee_pose'" in recorder.start("pick", 0).message
    assert not recorder.status(0).has_pose
    feed(recorder, 0.0, 0.1)
    assert recorder.status(0).has_pose
    assert recorder.start("pick", S // 10).ok
    assert "already recording" in recorder.start("pick", S // 10).message
    assert recorder.discard().ok and recorder.status(0).state == "idle"
    assert "not recording" in recorder.stop().message


def test_stop_keeps_the_episode_and_a_short_one_goes_on_recording(tmp_path):
    recorder = session(tmp_path)
    feed(recorder, 0.0, 0.1)
    recorder.on_gripper(0, 1.0)
    assert recorder.start("pick up the red cube", S // 10).ok
    feed(recorder, 0.1, 0.4)
    outcome = recorder.stop()
    assert not outcome.ok and "at least 6 (one action chunk)" in outcome.message
    assert recorder.status(S).state == "recording"
    feed(recorder, 0.5, 1.0)
    outcome = recorder.stop(success=True)
    assert outcome.ok, outcome.message
    episode = EpisodeDataset(tmp_path)[0]
    assert episode.metadata.embodiment_id == 3 and episode.metadata.success is True
    assert episode.metadata.num_steps == 13  # frames from 0.1 s to 1.47 s: ticks 0.1 .. 1.4
    # 0.1 m/s between the capture stamps of the frames taken at each tick (a 33 Hz camera: 0.09 .. 0.12 s apart).
    captured = np.array(episode.metadata.extra["capture_stamps_ns"]) / S
    np.testing.assert_allclose(episode.actions[:-1, 0], 0.1 * np.diff(captured), atol=1e-6)
    assert recorder.status(2 * S).episode == 1


def test_a_camera_that_stops_ends_the_episode_marked_not_padded(tmp_path):
    recorder = session(tmp_path)
    feed(recorder, 0.0, 0.1)
    assert recorder.start("pick", S // 10).ok
    feed(recorder, 0.1, 1.5)
    feed(recorder, 1.6, 0.3, camera=False)
    assert recorder.check_streams(round(1.9 * S)) is None  # 0.3 s of silence is within max_gap
    outcome = recorder.check_streams(round(2.2 * S))
    assert outcome is not None and outcome.ok and "stream 'image_raw' stopped at t=1.475 s" in outcome.message
    episode = EpisodeDataset(tmp_path)[0]
    assert episode.metadata.num_steps == 14  # up to the last frame, nothing repeated after it
    events = episode.metadata.extra["events"]
    assert "stream 'image_raw' stopped" in events[0]["event"]
    assert events[1] == {"event": "stream latency", **latency_summary({"camera": [0.005], "pose": [0.005]})}


def test_a_short_episode_whose_camera_stops_is_discarded_with_the_reason(tmp_path):
    recorder = session(tmp_path)
    feed(recorder, 0.0, 0.1)
    assert recorder.start("pick", S // 10).ok
    feed(recorder, 0.1, 0.3)
    outcome = recorder.check_streams(S)
    assert outcome is not None and not outcome.ok and "discarded" in outcome.message and "at least 6" in outcome.message
    assert len(EpisodeDataset(tmp_path)) == 0 and recorder.recording is None


def test_a_pose_jump_is_marked(tmp_path):
    recorder = session(tmp_path)
    feed(recorder, 0.0, 0.1)
    assert recorder.start("pick", S // 10).ok
    assert recorder.on_pose(S // 5, S // 5, np.array([0.4, 0.1, 0.4]), Q) == "pose jumped 0.135 m at t=0.100 s"
    assert recorder.pose_jumps == 1


def test_min_free_disk_is_checked():
    assert min_free_bytes(1.5) == 1_500_000
    with pytest.raises(ValueError, match="min_free_disk_mb must be a number >= 0"):
        min_free_bytes(-1.0)


def test_videovla_recover_cli(tmp_path, capsys):
    recording = LiveRecording.start(tmp_path, "pick", 10.0, min_free_bytes=0)
    recording.close()
    assert recover_main([str(tmp_path)]) == 1
    assert "not recoverable (RecordingError: no camera frame was recorded)" in capsys.readouterr().out
    assert recover_main([str(tmp_path)]) == 0
    assert "no interrupted recordings" in capsys.readouterr().out


def test_node_parameters_are_checked_and_name_the_topics():
    from videovla_ros.parameters import from_values
    from videovla_ros.recorder_node import RecorderNodeParameters

    defaults = {spec.name: spec.default for spec in dataclasses.fields(RecorderNodeParameters)}
    realman = from_values(RecorderNodeParameters, {**defaults, "dataset": "d", "arm_state": "udp_arm_position"})
    config = realman.session_config()
    assert config.stream_names == StreamNames("image_raw", "/rm_driver/udp_arm_position", "gripper_command")
    compressed = from_values(RecorderNodeParameters, {**defaults, "dataset": "d", "image_transport": "compressed"})
    assert compressed.image_topic == "image_raw/compressed" and compressed.pose_topic == "ee_pose"
    assert (
        not from_values(RecorderNodeParameters, {**defaults, "dataset": "d", "gripper_topic": ""})
        .session_config()
        .has_gripper
    )
    for change, message in [
        ({"dataset": ""}, "parameter dataset must be a non-empty string"),
        ({"arm_state": "joints"}, r"parameter arm_state must be one of \['ee_pose', 'udp_arm_position'\]"),
        ({"action_rate_hz": 0.0}, "parameter action_rate_hz must be a number > 0, got 0.0"),
        ({"action_rate_hz": float("inf")}, "parameter action_rate_hz must be a number > 0, got inf"),
        ({"min_steps": 0}, "parameter min_steps must be an integer >= 1"),
        ({"max_gap": "1"}, "parameter max_gap must be a number > 0, got '1'"),
        ({"min_free_disk_mb": -5.0}, "parameter min_free_disk_mb must be a number >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_values(RecorderNodeParameters, {**defaults, "dataset": "d", **change})
