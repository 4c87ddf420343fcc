"""The training data pipeline: episode windows, padding, masks, normalisation, sampling and bad datasets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videovla_model.batch import TrainingBatch
from videovla_model.configuration import VideoVLAConfig
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.data import (
    DatasetError,
    EpisodeWindowDataset,
    StepBatchSampler,
    collate_samples,
    compute_action_statistics,
    dataset_action_rate,
    frame_stride_for,
)
from videovla_model.episodes import EpisodeDataset, EpisodeWriter
from videovla_model.normalization import ActionNormalizer
from videovla_model.processing import prepare_image, to_model_range

TINY = VideoVLAConfig.preset("tiny")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}
METRES_PER_PIXEL = 0.002


def square_episode(
    colour: str, direction: str, num_steps: int, rng: np.random.Generator, height: int = 48, width: int = 72
) -> tuple[np.ndarray, np.ndarray, str]:
    """A coloured square on a grey table that moves by each step's (dx, dy); the gripper closes half way.

    Returns frames (T, height, width, 3) uint8, actions (T, 7) float32 (DEFAULT_ACTION_DIM_NAMES) and the
    instruction. Frame t + 1 shows the square moved by action t, so actions are predictable from the video.
    """
    unit = np.asarray(DIRECTIONS[direction])
    position = np.asarray([width / 2, height / 2]) - unit * num_steps * 1.0
    frames = np.empty((num_steps, height, width, 3), np.uint8)
    actions = np.zeros((num_steps, 7), np.float32)
    for t in range(num_steps):
        frame = np.full((height, width, 3), 128, np.uint8)
        x, y = np.clip(np.round(position).astype(int), 4, [width - 5, height - 5])
        frame[y - 4 : y + 4, x - 4 : x + 4] = COLOURS[colour]
        frames[t] = frame
        pixels = unit * (2.0 + rng.uniform(-0.3, 0.3))
        actions[t, :2] = pixels * METRES_PER_PIXEL
        actions[t, 2:6] = rng.normal(0.0, 1e-3, 4)
        actions[t, 6] = 1.0 if t < num_steps // 2 else 0.0
        position = position + pixels
    return frames, actions, f"move the {colour} square {direction}"


def write_square_dataset(
    root: Path, lengths: tuple[int, ...] = (9, 12, 7), seed: int = 0, action_rate_hz: float = 10.0
) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    writer = EpisodeWriter(root)
    for index, length in enumerate(lengths):
        colour = list(COLOURS)[index % len(COLOURS)]
        direction = list(DIRECTIONS)[index % len(DIRECTIONS)]
        frames, actions, instruction = square_episode(colour, direction, length, rng)
        writer.write(frames, actions, instruction, action_rate_hz)
    return EpisodeDataset(root)


@pytest.fixture
def episodes(tmp_path: Path) -> EpisodeDataset:
    return write_square_dataset(tmp_path / "data")


def test_windows_cover_every_step_with_documented_shapes(episodes):
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    dataset = EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=2)
    assert len(dataset) == 9 + 12 + 7
    assert dataset.windows[:2] == [(0, 0), (0, 1)]
    assert dataset.windows[9] == (1, 0)
    sample = dataset[3]
    frames, height, width = TINY.train_num_frames, TINY.image_height, TINY.image_width
    assert sample.observation.shape == (3, height, width)
    assert sample.video.shape == (3, frames, height, width)
    assert sample.actions.shape == (TINY.chunk_rows, len(TINY.action_dim_names))
    assert sample.action_mask.shape == (TINY.chunk_rows,) and sample.action_mask.dtype == torch.bool
    assert sample.observation.dtype == sample.video.dtype == sample.actions.dtype == torch.float32
    assert sample.instruction == "move the red square right"
    assert sample.embodiment_id == 0
    assert sample.video.min() >= -1.0 and sample.video.max() <= 1.0
    assert torch.equal(sample.observation, sample.video[:, 0])


def test_video_frames_follow_the_stride_and_repeat_the_last_frame(episodes):
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    dataset = EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=2)
    raw = episodes[0].frames  # 9 steps
    step = 4  # clip frames 4, 6, 8, 8 (clamped), 8 (clamped)
    sample = dataset[step]
    for i, source in enumerate([4, 6, 8, 8, 8]):
        expected = to_model_range(prepare_image(np.asarray(raw[source]), TINY.image_size)).transpose(2, 0, 1)
        np.testing.assert_array_equal(sample.video[:, i].numpy(), expected)
    # The square moves, so different source frames give different clip frames.
    assert not torch.equal(sample.video[:, 0], sample.video[:, 1])


def test_actions_are_normalised_and_padded_past_the_episode_end(episodes):
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    dataset = EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=1)
    raw = np.asarray(episodes[0].actions)  # 9 steps
    inside = dataset[1]
    np.testing.assert_array_equal(inside.actions.numpy(), normalizer.normalize(raw[1:7]))
    assert inside.action_mask.all()
    near_end = dataset[6]  # rows 6, 7, 8 recorded; 3 padded
    assert near_end.action_mask.tolist() == [True, True, True, False, False, False]
    expected = normalizer.normalize(np.concatenate([raw[6:9], np.repeat(raw[8:9], 3, axis=0)]))
    np.testing.assert_array_equal(near_end.actions.numpy(), expected)
    assert near_end.actions.abs().max() <= 1.0
    # The gripper (0 closed .. 1 open) maps to exactly -1 / +1.
    gripper = TINY.action_dim_names.index("gripper")
    assert set(inside.actions[:, gripper].tolist()) <= {-1.0, 1.0}


def test_action_statistics_are_percentiles_over_all_steps(episodes):
    normalizer = compute_action_statistics(episodes, DEFAULT_ACTION_DIM_NAMES)
    everything = np.concatenate([np.asarray(e.actions, np.float64) for e in episodes])
    np.testing.assert_allclose(normalizer.low[:6], np.percentile(everything[:, :6], 1, axis=0))
    np.testing.assert_allclose(normalizer.high[:6], np.percentile(everything[:, :6], 99, axis=0))
    assert normalizer.gripper_dims == (6,)
    assert (normalizer.low[6], normalizer.high[6]) == (0.0, 1.0)


def test_collate_builds_a_training_batch(episodes):
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    dataset = EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=1)
    sampler = StepBatchSampler(len(dataset), batch_size=3, num_steps=2, seed=0)
    batches = list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples))
    assert len(batches) == 2
    batch = batches[0]
    assert isinstance(batch, TrainingBatch)
    assert len(batch) == 3
    assert batch.observation.shape == (3, 3, 64, 64)
    assert batch.video.shape == (3, 3, TINY.train_num_frames, 64, 64)
    assert batch.actions.shape == (3, TINY.chunk_rows, 7)
    assert batch.action_mask.shape == (3, TINY.chunk_rows)
    assert batch.embodiment_ids.dtype == torch.int64 and batch.embodiment_ids.tolist() == [0, 0, 0]
    assert all(text.startswith("move the ") for text in batch.instructions)


def test_sampler_is_a_pure_function_of_seed_step_and_rank():
    full = list(StepBatchSampler(10, batch_size=4, num_steps=6, seed=3))
    resumed = list(StepBatchSampler(10, batch_size=4, num_steps=6, seed=3, start_step=4))
    assert resumed == full[4:]
    assert full != list(StepBatchSampler(10, batch_size=4, num_steps=6, seed=4))
    # 24 positions over 10 samples: epochs 0 and 1 are full permutations.
    stream = [index for batch in full for index in batch]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    # Two processes split each global batch of 2 x 3 without overlap.
    ranks = [list(StepBatchSampler(12, 3, 4, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    single = list(StepBatchSampler(12, 6, 4, seed=1))
    for step in range(4):
        assert ranks[0][step] + ranks[1][step] == single[step]
        assert not set(ranks[0][step]) & set(ranks[1][step])


def test_frame_stride_follows_the_video_frame_period():
    assert frame_stride_for(TINY, 10.0) == round(TINY.video_frame_period * 10.0)
    assert frame_stride_for(dataclasses.replace(TINY, video_frame_period=0.2), 10.0) == 2
    with pytest.raises(DatasetError, match=r"not a whole number of steps at the dataset's 15.0 Hz"):
        frame_stride_for(TINY, 15.0)


def test_mismatched_action_dims_name_the_episode(tmp_path):
    write_square_dataset(tmp_path / "data", lengths=(5,))
    frames, actions, _ = square_episode("red", "left", 5, np.random.default_rng(1))
    names = ("dx", "dy", "dz", "rx", "ry", "rz", "gripper")
    bad = EpisodeWriter(tmp_path / "data").write(frames, actions, "odd one", 10.0, action_dim_names=names)
    episodes = EpisodeDataset(tmp_path / "data")
    with pytest.raises(DatasetError, match=rf"{bad.name}: action_dim_names .* do not match"):
        compute_action_statistics(episodes, TINY.action_dim_names)
    normalizer = compute_action_statistics(write_square_dataset(tmp_path / "ok"), TINY.action_dim_names)
    with pytest.raises(DatasetError, match=rf"{bad.name}: .*missing \['droll', 'dpitch', 'dyaw'\], unexpected"):
        EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=1)


def test_reordered_action_dims_are_rejected_not_silently_permuted(tmp_path):
    frames, actions, _ = square_episode("red", "left", 5, np.random.default_rng(1))
    names = ("droll", "dpitch", "dyaw", "dx", "dy", "dz", "gripper")
    folder = EpisodeWriter(tmp_path / "data").write(frames, actions, "rotation first", 10.0, action_dim_names=names)
    episodes = EpisodeDataset(tmp_path / "data")
    rotation_first = compute_action_statistics(episodes, names)
    with pytest.raises(DatasetError, match="normalizer dim_names"):
        EpisodeWindowDataset(episodes, TINY, rotation_first, frame_stride=1)
    translation_first = ActionNormalizer.identity(TINY.action_dim_names, gripper_dims=(6,))
    with pytest.raises(DatasetError, match=rf"{folder.name}: .*same names in a different order"):
        EpisodeWindowDataset(episodes, TINY, translation_first, frame_stride=1)
    # A model whose config uses the episode's order accepts it.
    model_config = dataclasses.replace(TINY, action_dim_names=names)
    assert len(EpisodeWindowDataset(episodes, model_config, rotation_first, frame_stride=1)) == 5


def test_embodiment_out_of_range_and_mixed_rates_are_rejected(tmp_path):
    writer = EpisodeWriter(tmp_path / "data")
    frames, actions, text = square_episode("red", "left", 5, np.random.default_rng(1))
    writer.write(frames, actions, text, 10.0)
    robot = writer.write(frames, actions, text, 10.0, embodiment_id=2)
    episodes = EpisodeDataset(tmp_path / "data")
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    with pytest.raises(DatasetError, match=rf"{robot.name}: embodiment_id must be in \[0, num_embodiments=1\), got 2"):
        EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=1)
    EpisodeWindowDataset(episodes, dataclasses.replace(TINY, num_embodiments=3), normalizer, frame_stride=1)

    writer.write(frames, actions, text, 20.0)
    with pytest.raises(DatasetError, match=r"share one action_rate_hz .* 10.0 Hz .* 20.0 Hz"):
        dataset_action_rate(EpisodeDataset(tmp_path / "data"))


def test_action_rate_must_match_the_model_time_step(tmp_path):
    episodes = write_square_dataset(tmp_path / "data", lengths=(5,), action_rate_hz=20.0)
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    with pytest.raises(DatasetError, match=r"recorded at 20.0 Hz \(one action row every 0.05 s\) but the model's"):
        EpisodeWindowDataset(episodes, dataclasses.replace(TINY, time_step=0.1), normalizer, frame_stride=1)
    assert len(EpisodeWindowDataset(episodes, dataclasses.replace(TINY, time_step=0.05), normalizer, 1)) == 5


def test_empty_and_corrupt_datasets_are_rejected(tmp_path):
    empty = EpisodeDataset(EpisodeWriter(tmp_path / "empty").root)
    with pytest.raises(DatasetError, match="has no episodes"):
        dataset_action_rate(empty)
    with pytest.raises(DatasetError, match="no episodes to compute action statistics"):
        compute_action_statistics(empty, TINY.action_dim_names)
    episodes = write_square_dataset(tmp_path / "data", lengths=(5,))
    meta = episodes.episode_dirs[0] / "episode.json"
    raw = json.loads(meta.read_text())
    raw["num_steps"] = 6
    meta.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"episode_000000: episode.json says num_steps=6, arrays have 5"):
        compute_action_statistics(EpisodeDataset(tmp_path / "data"), TINY.action_dim_names)


def test_bad_frame_stride_is_rejected(episodes):
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    with pytest.raises(ValueError, match="frame_stride must be an int >= 1, got 0"):
        EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride=0)
