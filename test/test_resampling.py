"""The recorder's and importer's one resampling rule (videovla_model.resampling)."""

from __future__ import annotations

import numpy as np
import pytest
from transforms3d.euler import euler2mat

from videovla_model.action_convention import matrix_to_quaternion, quaternion_to_matrix
from videovla_model.resampling import (
    MAX_FLAGS,
    PoseSeries,
    ResampleError,
    ResampleLimits,
    StreamNames,
    resample,
)
from videovla_ros.trajectory import Pose, apply_deltas

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a wall-clock-like origin: int64 nanoseconds must not lose precision
TOPICS = StreamNames(frames="/camera/image_raw", poses="/rm_driver/udp_arm_position", gripper="/gripper/state")


def pose_at(t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth path: positions (N, 3) and quaternions (N, 4) at times t_s [s]."""
    t = np.asarray(t_s, dtype=float)
    positions = np.stack([0.3 + 0.05 * np.sin(t), -0.1 + 0.04 * t, 0.4 - 0.02 * np.cos(2 * t)], axis=1)
    quaternions = np.array([matrix_to_quaternion(euler2mat(np.pi, 0.2 * np.sin(x), 0.3 * x, "sxyz")) for x in t])
    return positions, quaternions


def pose_series(stamps_ns: np.ndarray) -> PoseSeries:
    positions, quaternions = pose_at((stamps_ns - T0) / S)
    return PoseSeries(stamps_ns.astype(np.int64), positions, quaternions)


def linear_poses(stamps_ns: np.ndarray) -> PoseSeries:
    """Position linear in time and yaw linear in time: linear interpolation and slerp are exact on it."""
    t = (stamps_ns - T0) / S
    positions = np.stack([0.1 * t, 0.2 - 0.05 * t, np.full_like(t, 0.3)], axis=1)
    quaternions = np.array([matrix_to_quaternion(euler2mat(np.pi, 0.0, 0.4 * x, "sxyz")) for x in t])
    return PoseSeries(stamps_ns.astype(np.int64), positions, quaternions)


def stamps(rate_hz: float, seconds: float, start_s: float = 0.0, jitter_s: float = 0.0, seed: int = 0) -> np.ndarray:
    count = int(seconds * rate_hz)
    rng = np.random.default_rng(seed)
    times = start_s + np.arange(count) / rate_hz + rng.uniform(0.0, jitter_s, count)
    return T0 + np.round(times * S).astype(np.int64)


def test_each_tick_takes_the_newest_frame_at_or_before_it():
    frames = stamps(30.0, 3.0, jitter_s=0.01, seed=1)
    result = resample(frames, pose_series(stamps(100.0, 3.2, start_s=-0.1)), None, None, rate_hz=10.0)
    assert result.tick_stamps_ns[0] == frames[0]
    np.testing.assert_array_equal(np.diff(result.tick_stamps_ns), np.full(len(result.tick_stamps_ns) - 1, S // 10))
    for tick, index in zip(result.tick_stamps_ns, result.frame_indices, strict=True):
        assert index == np.flatnonzero(frames <= tick)[-1]
    assert result.actions.shape == (len(result.frame_indices), 7) and result.actions.dtype == np.float32


def test_ticks_start_at_the_first_frame_with_a_pose():
    frames = stamps(10.0, 2.0)
    result = resample(frames, pose_series(stamps(100.0, 3.0, start_s=0.25)), None, None, rate_hz=10.0)
    assert result.tick_stamps_ns[0] == frames[3]  # frames at 0.0, 0.1, 0.2 are before the first pose


def test_the_pose_is_interpolated_at_the_capture_stamp():
    frames = stamps(30.0, 2.0, jitter_s=0.02, seed=4)
    poses = linear_poses(stamps(7.0, 2.5, start_s=-0.2))  # coarse pose stream: interpolation matters
    result = resample(frames, poses, None, None, rate_hz=10.0)
    expected = linear_poses(result.poses.stamps_ns)
    np.testing.assert_array_equal(result.poses.stamps_ns[:-1], frames[result.frame_indices])
    np.testing.assert_allclose(result.poses.positions, expected.positions, atol=1e-12)
    for q, r in zip(result.poses.quaternions, expected.quaternions, strict=True):
        np.testing.assert_allclose(quaternion_to_matrix(q), quaternion_to_matrix(r), atol=1e-12)


def test_bridge_of_recorder_gives_back_the_poses():
    """bridge(recorder(poses)) == poses: the stored float32 actions, integrated by the arm bridge from the start
    pose, land on the recorded poses (here frames are captured at pose stamps, so on the input poses)."""
    pose_stamps = stamps(10.0, 20.0)
    poses = pose_series(pose_stamps)
    result = resample(pose_stamps.copy(), poses, None, None, rate_hz=10.0)
    assert len(result.actions) == len(pose_stamps) - 1
    start = Pose.make(poses.positions[0], poses.quaternions[0])
    targets = apply_deltas(start, result.actions[:, :6])
    np.testing.assert_allclose([t.position for t in targets], poses.positions[1:], rtol=0, atol=1e-9)
    for target, quaternion in zip(targets, poses.quaternions[1:], strict=True):
        np.testing.assert_allclose(target.rotation, quaternion_to_matrix(quaternion), rtol=0, atol=1e-9)


def test_gripper_is_the_newest_value_at_the_next_frame_and_open_without_a_stream():
    frames = stamps(10.0, 1.0)
    poses = pose_series(stamps(50.0, 1.2, start_s=-0.1))
    gripper_stamps = T0 + np.array([-0.05, 0.35, 0.62]) * S
    result = resample(frames, poses, gripper_stamps.astype(np.int64), np.array([1.0, 0.0, 0.5]), rate_hz=10.0)
    # Row t holds the gripper at frame t + 1 (0.1 s .. 0.9 s): open up to 0.3, closed from 0.4, half from 0.7.
    np.testing.assert_array_equal(result.actions[:, 6], [1, 1, 1, 0, 0, 0, 0.5, 0.5, 0.5])
    assert [r.name for r in result.reports] == ["camera", "pose", "gripper"]
    late = resample(frames, poses, gripper_stamps[1:].astype(np.int64), np.array([0.0, 0.5]), rate_hz=10.0)
    np.testing.assert_array_equal(late.actions[:, 6], [0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5])
    assert late.tick_stamps_ns[0] == frames[0]  # a gripper that starts late does not move the ticks
    assert any("'gripper' starts at t=0.450 s" in flag for flag in late.flags)
    without = resample(frames, poses, None, None, rate_hz=10.0)
    assert np.all(without.actions[:, 6] == 1.0)
    assert any("no 'gripper' stream" in flag for flag in without.flags)


@pytest.mark.parametrize(
    ("frames", "pose_stamps", "message"),
    [
        (
            stamps(10.0, 1.0)[[0, 2, 1, 3, 4]],
            stamps(50.0, 1.0),
            r"'/camera/image_raw'.*not strictly increasing.*t=0\.100",
        ),
        (
            stamps(10.0, 2.0),
            np.delete(stamps(50.0, 2.0), np.s_[20:60]),
            r"'/rm_driver/udp_arm_position'.*gap of 0\.820 s after t=0\.380",
        ),
        (np.array([], dtype=np.int64), stamps(50.0, 1.0), r"'/camera/image_raw' has no samples"),
        (stamps(10.0, 1.0), np.array([], dtype=np.int64), r"'/rm_driver/udp_arm_position' has no samples"),
        (stamps(10.0, 1.0, start_s=5.0), stamps(50.0, 1.0), r"'/camera/image_raw' has 0 frame\(s\) between"),
    ],
)
def test_bad_streams_are_refused_naming_the_stream_and_the_time(frames, pose_stamps, message):
    with pytest.raises(ResampleError, match=message):
        resample(frames, pose_series(pose_stamps), None, None, rate_hz=10.0, names=TOPICS)


def test_bad_gripper_values_and_rates_are_refused():
    frames, poses = stamps(10.0, 1.0), pose_series(stamps(50.0, 1.0))
    with pytest.raises(ResampleError, match=r"'/gripper/state': sample 1 is 1\.5, expected 0 \(closed\) \.\. 1"):
        resample(frames, poses, frames[:3], np.array([0.0, 1.5, 1.0]), 10.0, names=TOPICS)
    with pytest.raises(ResampleError, match="give both stamps and values"):
        resample(frames, poses, frames, None, 10.0, names=TOPICS)
    with pytest.raises(ResampleError, match="rate_hz must be a finite number > 0"):
        resample(frames, poses, None, None, 0.0)
    with pytest.raises(ValueError, match=r"ResampleLimits.max_gap_s must be a finite number > 0"):
        ResampleLimits(max_gap_s=-1.0)


def test_a_pose_jump_and_a_stalled_camera_are_flagged_not_refused():
    frames = np.delete(stamps(10.0, 2.0), [7, 8])  # the camera misses 0.7 s and 0.8 s
    pose_stamps = stamps(50.0, 2.0)
    poses = pose_series(pose_stamps)
    jumped = poses.positions.copy()
    jumped[pose_stamps >= T0 + S] += [0.08, 0.0, 0.0]  # the pose stream jumps 8 cm at t = 1.0 s
    result = resample(frames, PoseSeries(poses.stamps_ns, jumped, poses.quaternions), None, None, 10.0, names=TOPICS)
    stalls = [f for f in result.flags if "stalled" in f]
    assert len(stalls) == 2 and "t=0.700" in stalls[0] and "captured at t=0.600" in stalls[0]
    assert np.abs(result.actions[6:8, :6]).max() < 1e-9  # a repeated frame is a step without motion, flagged
    jumps = [f for f in result.flags if "jumped" in f]
    assert len(jumps) == 1 and "between t=0.900 s" in jumps[0]
    camera = result.reports[0]
    assert camera.name == "/camera/image_raw" and camera.dropped == 2 and camera.max_gap_s == pytest.approx(0.3)


def test_flags_stay_bounded():
    pose_stamps = stamps(10.0, 5.0)
    poses = pose_series(pose_stamps)
    zigzag = poses.positions + np.where(np.arange(len(pose_stamps)) % 2, 0.1, 0.0)[:, None]
    result = resample(pose_stamps, PoseSeries(pose_stamps, zigzag, poses.quaternions), None, None, 10.0)
    assert len(result.flags) == MAX_FLAGS and result.flags[-1].startswith("... and ")
