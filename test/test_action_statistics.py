"""Action normalisation statistics come from actions.npy alone: the frames are never opened."""

from __future__ import annotations

import numpy as np
import pytest

from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.data import compute_action_statistics
from videovla_model.episodes import EpisodeDataset, EpisodeWriter
from videovla_model.normalization import ActionNormalizer


def test_statistics_read_the_actions_only(tmp_path):
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(tmp_path)
    actions = []
    for length in (4, 7, 5):
        rows = rng.normal(0.0, 0.01, (length, 7)).astype(np.float32)
        rows[:, 6] = rng.integers(0, 2, length)
        writer.write(np.zeros((length, 8, 8, 3), np.uint8), rows, "pick", 10.0)
        actions.append(rows)
    episodes = EpisodeDataset(tmp_path)
    # Unreadable frames: anything that opened them would fail.
    for folder in episodes.episode_dirs:
        (folder / "frames.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError):
        episodes[0]
    expected = ActionNormalizer.fit(np.concatenate(actions), DEFAULT_ACTION_DIM_NAMES)
    assert compute_action_statistics(episodes, DEFAULT_ACTION_DIM_NAMES) == expected
    assert isinstance(episodes.actions(1), np.memmap) and episodes.actions(1).shape == (7, 7)
