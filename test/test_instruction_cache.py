"""The instruction cache: T5 runs once per distinct instruction, then never during training steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_data import write_square_dataset

from videovla_model.configuration import VideoVLAConfig
from videovla_model.data import EpisodeWindowDataset, collate_samples
from videovla_model.episodes import EpisodeDataset
from videovla_model.instruction_cache import InstructionTable
from videovla_model.modeling import VideoVLAModel
from videovla_model.text import UNCONDITIONAL_PROMPT
from videovla_model.training_setup import install_instruction_table

TINY = VideoVLAConfig.preset("tiny")


class T5CalledError(AssertionError):
    pass


def _forbid_t5(model: VideoVLAModel) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise T5CalledError("T5 ran")

    model.text_encoder.forward = refuse  # type: ignore[method-assign]


@pytest.fixture
def episodes(tmp_path: Path) -> EpisodeDataset:
    return write_square_dataset(tmp_path / "data", lengths=(9, 12, 7))


def test_training_loss_runs_without_t5_once_the_table_is_installed(episodes, tmp_path):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    instructions = [episode.metadata.instruction for episode in episodes]
    expected = model.raw_prompt_embeddings([*instructions, UNCONDITIONAL_PROMPT]).clone()
    table = install_instruction_table(model, instructions, tmp_path / "cache", torch.device("cpu"), build=True)
    assert table is not None and len(table) == len(set(instructions)) + 1
    _forbid_t5(model)
    torch.testing.assert_close(model.raw_prompt_embeddings([*instructions, UNCONDITIONAL_PROMPT]), expected)
    dataset = EpisodeWindowDataset(episodes, model.config, model.normalizer, frame_stride=1)
    batch = collate_samples([dataset[0], dataset[len(dataset) - 1]])
    loss = model.compute_loss(batch, generator=torch.Generator().manual_seed(0)).loss
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(KeyError, match="1 instruction\\(s\\) not in the instruction cache \\('stack the cups'\\)"):
        model.raw_prompt_embeddings(["stack the cups"])


def test_a_matching_cache_is_reused_and_another_encoder_rebuilds_it(episodes, tmp_path):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY)
    instructions = [episode.metadata.instruction for episode in episodes]
    folder = tmp_path / "cache"
    install_instruction_table(model, instructions, folder, torch.device("cpu"), build=True)
    _forbid_t5(model)
    reopened = install_instruction_table(model, instructions, folder, torch.device("cpu"), build=False)
    assert isinstance(reopened, InstructionTable) and reopened.instructions == sorted({*instructions, ""})
    other = VideoVLAModel(TINY)  # other random T5 weights: the cache no longer matches
    assert install_instruction_table(other, instructions, folder, torch.device("cpu"), build=False) is None
