"""Crash-safe live recording (videovla_model.recording) and the live frame rule (TickSelector)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from videovla_model.episodes import EpisodeDataset
from videovla_model.recording import (
    INTERRUPTED_PREFIX,
    RECORDING_PREFIX,
    DiskSpaceError,
    EpisodeTooShortError,
    Journal,
    LiveRecording,
    check_free_space,
    recover,
)
from videovla_model.resampling import PoseSeries, TickSelector, resample

S = 1_000_000_000
RATE = 10.0


def frame(value: int) -> np.ndarray:
    return np.full((8, 10, 3), value % 256, dtype=np.uint8)


def record(root: Path, seconds: float, *, camera_hz: float = 30.0, close: bool = True) -> LiveRecording:
    """A straight-line motion: frames at camera_hz (offered through TickSelector), poses at 100 Hz."""
    recording = LiveRecording.start(root, "pick up the red cube", RATE, min_free_bytes=0)
    selector = TickSelector(RATE)
    for i in range(int(seconds * 100) + 1):
        recording.add_pose(i * S // 100, np.array([0.3 + 0.001 * i, 0.0, 0.4]), np.array([0.0, 1.0, 0.0, 0.0]))
    recording.add_gripper(0, 1.0)
    recording.add_gripper(int(seconds / 2 * S), 0.0)
    for i in range(int(seconds * camera_hz)):
        for stamp, rgb in selector.offer(round(i * S / camera_hz), frame(i)):
            recording.add_frame(stamp, rgb)
    for stamp, rgb in selector.flush():
        recording.add_frame(stamp, rgb)
    if close:
        recording.close()
    return recording


def test_kept_frames_resample_like_all_frames():
    rng = np.random.default_rng(0)
    stamps = np.cumsum(rng.uniform(0.02, 0.05, 200) * S).astype(np.int64)
    poses = PoseSeries(
        np.arange(0, stamps[-1] + S, S // 100),
        np.zeros((len(np.arange(0, stamps[-1] + S, S // 100)), 3)),
        np.tile([1.0, 0.0, 0.0, 0.0], (len(np.arange(0, stamps[-1] + S, S // 100)), 1)),
    )
    selector = TickSelector(RATE)
    kept = [s for stamp in stamps for s, _ in selector.offer(int(stamp), None)] + [s for s, _ in selector.flush()]
    assert len(kept) < len(stamps) / 2
    everything = resample(stamps, poses, None, None, RATE)
    subset = resample(np.array(kept), poses, None, None, RATE)
    np.testing.assert_array_equal(stamps[everything.frame_indices], np.array(kept)[subset.frame_indices])
    np.testing.assert_array_equal(everything.actions, subset.actions)


def test_a_finalised_recording_is_an_ordinary_episode(tmp_path):
    recording = record(tmp_path, 2.0, close=False)
    episode_dir = recording.finalise()
    assert not recording.folder.exists()
    episode = EpisodeDataset(tmp_path)[0]
    assert episode_dir.name == "episode_000000" and episode.metadata.num_steps == 19
    # Ticks every 0.1 s from frame 0; at 30 Hz the newest frame at or before tick k is frame 3k.
    np.testing.assert_array_equal(episode.frames[:, 0, 0, 0], np.arange(19) * 3)
    np.testing.assert_allclose(episode.actions[:, 0], 0.01, atol=1e-7)
    assert episode.actions[:9, 6].tolist() == [1.0] * 9 and episode.actions[10:, 6].tolist() == [0.0] * 9
    extra = episode.metadata.extra
    assert extra["source"] == "videovla recorder" and extra["start_pose"]["position"][0] == pytest.approx(0.3)
    assert [s["name"] for s in extra["streams"]] == ["camera", "pose", "gripper"]


def test_too_short_is_refused_and_the_recording_goes_on(tmp_path):
    recording = record(tmp_path, 0.5, close=False)
    with pytest.raises(
        EpisodeTooShortError, match=r"has 4 steps \(0\.4 s at 10\.0 Hz\); at least 6 \(one action chunk\)"
    ):
        recording.finalise()
    assert recording.folder.exists() and len(EpisodeDataset(tmp_path)) == 0
    recording.add_frame(int(0.8 * S), frame(1))  # still open: the user can keep recording
    recording.discard()
    assert not recording.folder.exists()


def test_a_full_disk_refuses_to_start(tmp_path):
    free = check_free_space(tmp_path, 0)
    with pytest.raises(DiskSpaceError, match=r"MB free on the disk holding .* \(at least .* MB required"):
        LiveRecording.start(tmp_path, "pick", RATE, min_free_bytes=free * 10)
    assert not list(tmp_path.glob(f"{RECORDING_PREFIX}*"))


def test_recover_finalises_interrupted_and_sets_aside_what_cannot_be_an_episode(tmp_path):
    record(tmp_path, 2.0)  # closed without stop: what a crash leaves
    short = record(tmp_path, 0.3)
    with open(short.folder / "frames.u8", "ab") as handle:  # a frame cut short by the kill
        handle.write(b"\x00" * 17)
    live = record(tmp_path, 2.0, close=False)  # another recorder still writing: left alone
    outcomes = {o.recording_id: o for o in recover(tmp_path)}
    assert live.journal.recording_id not in outcomes
    assert outcomes[short.journal.recording_id].episode is None
    kept_at = outcomes[short.journal.recording_id].kept_at
    assert kept_at.name.startswith(INTERRUPTED_PREFIX) and "at least 6" in Journal.load(kept_at).unrecoverable
    dataset = EpisodeDataset(tmp_path)
    assert len(dataset) == 1 and "crash or kill" in dataset[0].metadata.extra["interrupted"]
    live.close()


def test_recover_after_a_crash_between_rename_and_clean_up_does_not_duplicate(tmp_path):
    recording = record(tmp_path, 1.0)
    backup = tmp_path / "backup"
    shutil.copytree(recording.folder, backup)
    recording.finalise()
    backup.rename(recording.folder)
    outcomes = recover(tmp_path)
    assert outcomes[0].episode == tmp_path / "episode_000000"
    assert len(EpisodeDataset(tmp_path)) == 1 and not recording.folder.exists()


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from videovla_model.recording import LiveRecording
    from test_recording import record
    root = sys.argv[1]
    record(root, 1.0, close=False).finalise()
    live = LiveRecording.start(root, "stack the blocks", 10.0, min_free_bytes=0)
    i = 0
    while True:  # killed from outside, mid-episode
        live.add_pose(i * 10_000_000, np.array([0.3, 0.001 * i, 0.4]), np.array([1.0, 0.0, 0.0, 0.0]))
        if i % 3 == 0:
            live.add_frame(i * 10_000_000, np.full((8, 10, 3), i % 256, dtype=np.uint8))
        i += 1
    """
)


def test_sigkill_mid_episode_leaves_a_loadable_dataset_and_a_recoverable_episode(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stamps = list(tmp_path.glob(f"{RECORDING_PREFIX}*/frame_stamps.i64"))
            if stamps and stamps[0].stat().st_size >= 8 * 40:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child recorder did not record 40 frames in 60 s")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(EpisodeDataset(tmp_path)) == 1  # the finished episode only, never the half one
    outcomes = recover(tmp_path)
    assert len(outcomes) == 1 and outcomes[0].episode is not None, outcomes
    dataset = EpisodeDataset(tmp_path)
    assert len(dataset) == 2
    assert dataset[1].metadata.num_steps >= 12 and "interrupted" in dataset[1].metadata.extra
    assert json.loads((tmp_path / "dataset.json").read_text())["format"] == "videovla-episodes"
