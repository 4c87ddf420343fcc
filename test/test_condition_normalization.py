"""Observation-latent standardisation: the statistics, how the model applies and saves them, how training fits them
(training fits the instruction-embedding statistics in the same pass; the rest of their tests are in
test_text_conditioning.py)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from videovla_model.condition_normalization import CONDITION_NORMALIZATION_NAME, ConditionNormalizer
from videovla_model.configuration import VideoVLAConfig
from videovla_model.data import EpisodeWindowDataset, frame_stride_for
from videovla_model.episodes import EpisodeDataset
from videovla_model.modeling import VideoVLAModel
from videovla_model.train import main

TINY = VideoVLAConfig.preset("tiny")
TINY_NORMALIZED = dataclasses.replace(TINY, normalize_condition=True)
LATENT_SHAPE = (TINY.vae.latent_channels, TINY.latent_height, TINY.latent_width)


def random_statistics(seed: int = 0) -> ConditionNormalizer:
    generator = torch.Generator().manual_seed(seed)
    return ConditionNormalizer(
        torch.randn(LATENT_SHAPE, generator=generator), torch.rand(LATENT_SHAPE, generator=generator) + 0.5
    )


def observations(size: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, 3, *TINY.image_size, generator=generator) * 2 - 1


def test_fit_standardises_what_varies_and_floors_what_does_not():
    generator = torch.Generator().manual_seed(0)
    scene = torch.randn(4, 8, 8, generator=generator) * 3  # the same in every observation
    latents = scene + torch.randn(500, 4, 8, 8, generator=generator) * torch.linspace(0.5, 2.0, 8)
    latents[:, 0, 0, 0] = 7.0  # a latent pixel that never changes
    statistics = ConditionNormalizer.fit(latents, std_floor=0.1)
    standardised = statistics.apply(latents.unsqueeze(1))[:, 0]
    varying = torch.ones(4, 8, 8, dtype=torch.bool)
    varying[0, 0, 0] = False
    assert standardised.mean(dim=0)[varying].abs().max() < 1e-4
    assert torch.allclose(standardised.std(dim=0, correction=0)[varying], torch.ones(()), atol=1e-4)
    assert statistics.std[0, 0, 0] == pytest.approx(0.1)
    assert statistics.mean[0, 0, 0] == pytest.approx(7.0)
    assert torch.all(standardised[:, 0, 0, 0] == 0)
    assert not statistics.is_identity


def test_identity_leaves_latents_unchanged_and_bad_statistics_are_refused():
    identity = ConditionNormalizer.identity(*LATENT_SHAPE)
    latents = torch.randn(2, 1, *LATENT_SHAPE)
    assert identity.is_identity
    assert torch.equal(identity.apply(latents), latents)
    with pytest.raises(ValueError, match=r"values of shape \(2, 1, 8, 8, 8\) .* expected \(\.\.\., 4, 8, 8\)"):
        identity.apply(torch.zeros(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="two tensors of one shape, got mean \\(4, 8, 8\\) and std \\(4, 8, 4\\)"):
        ConditionNormalizer(torch.zeros(4, 8, 8), torch.ones(4, 8, 4))
    with pytest.raises(ValueError, match="std > 0 everywhere"):
        ConditionNormalizer(torch.zeros(4, 8, 8), torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="must be finite"):
        ConditionNormalizer(torch.full((4, 8, 8), float("nan")), torch.ones(4, 8, 8))
    with pytest.raises(ValueError, match=r"fitting needs \(N >= 1, \.\.\.\) samples, got shape \(4,\)"):
        ConditionNormalizer.fit(torch.zeros(4))
    with pytest.raises(ValueError, match=r"std_floor must be > 0, got 0\.0"):
        ConditionNormalizer.fit(torch.zeros(3, 4, 8, 8), std_floor=0.0)


def test_save_and_load_round_trip_and_incomplete_files_are_named(tmp_path):
    statistics = random_statistics()
    loaded = ConditionNormalizer.load(statistics.save(tmp_path / CONDITION_NORMALIZATION_NAME))
    assert torch.equal(loaded.mean, statistics.mean)
    assert torch.equal(loaded.std, statistics.std)
    save_file({"mean": torch.zeros(LATENT_SHAPE)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial.safetensors lacks the tensors \['std'\]"):
        ConditionNormalizer.load(tmp_path / "partial.safetensors")


def test_model_standardises_the_observation_only_when_the_config_says_so():
    torch.manual_seed(0)
    normalized = VideoVLAModel(TINY_NORMALIZED, condition_normalizer=random_statistics()).eval()
    torch.manual_seed(0)
    raw = VideoVLAModel(TINY, condition_normalizer=random_statistics()).eval()
    images = observations()
    raw_latents = raw.encode_observation(images, torch.Generator().manual_seed(1))
    normalized_latents = normalized.encode_observation(images, torch.Generator().manual_seed(1))
    statistics = random_statistics()
    assert torch.allclose(normalized_latents, (raw_latents - statistics.mean) / statistics.std, atol=1e-6)
    assert not torch.allclose(normalized_latents, raw_latents)


def test_statistics_of_the_wrong_shape_and_switching_the_flag_on_a_built_model_are_refused():
    model = VideoVLAModel(TINY_NORMALIZED)
    with pytest.raises(ValueError, match=r"\(latent_channels, latent_height, latent_width\) = \(4, 8, 8\)"):
        model.set_condition_normalizer(ConditionNormalizer.identity(8, 8, 8))
    with pytest.raises(ValueError, match=r"cannot change \['normalize_condition'\]"):
        model.config = TINY


def test_checkpoint_keeps_the_statistics_and_samples_identically(tmp_path):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY_NORMALIZED, condition_normalizer=random_statistics()).eval()
    folder = model.save_pretrained(tmp_path / "checkpoint")
    assert (folder / CONDITION_NORMALIZATION_NAME).is_file()
    loaded = VideoVLAModel.from_pretrained(folder)
    assert torch.equal(loaded.condition_normalizer.mean, model.condition_normalizer.mean)
    assert torch.equal(loaded.condition_normalizer.std, model.condition_normalizer.std)
    images = observations(size=1)
    first = model.sample(images, ["pick up the red cube"], generator=torch.Generator().manual_seed(3))
    second = loaded.sample(images, ["pick up the red cube"], generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.actions, second.actions)


def test_a_checkpoint_without_statistics_loads_unstandardised_with_a_warning(tmp_path, caplog):
    folder = VideoVLAModel(TINY_NORMALIZED).save_pretrained(tmp_path / "checkpoint")
    (folder / CONDITION_NORMALIZATION_NAME).unlink()
    caplog.set_level(logging.WARNING, logger="videovla_model.checkpointing")
    loaded = VideoVLAModel.from_pretrained(folder)
    assert loaded.condition_normalizer.is_identity
    assert f"has normalize_condition on but no {CONDITION_NORMALIZATION_NAME}" in caplog.text
    # A model without the flag writes no statistics at all.
    plain = VideoVLAModel(TINY).save_pretrained(tmp_path / "plain")
    assert not (plain / CONDITION_NORMALIZATION_NAME).exists()


def test_training_fits_the_statistics_of_the_observations_and_instructions_once_and_keeps_them(
    dataset_dir, tmp_path, caplog
):
    config_file = dataclasses.replace(TINY_NORMALIZED, normalize_text=True).save(tmp_path / "config")
    common = ["--dataset", str(dataset_dir), "--batch-size", "2", "--num-workers", "0", "--steps", "2"]
    caplog.set_level(logging.INFO, logger="videovla.train")
    assert main([*common, "--config", str(config_file), "--output", str(tmp_path / "first")]) == 0
    assert "observation-latent statistics: fitted to" in caplog.text
    final = VideoVLAModel.from_pretrained(tmp_path / "first" / "final")

    # Independently: every window's observation, encoded on its own by the checkpoint's VAE (posterior mean).
    windows = EpisodeWindowDataset(
        EpisodeDataset(dataset_dir), final.config, final.normalizer, frame_stride_for(final.config, 10.0)
    )
    images = torch.stack([windows.observation(i) for i in range(len(windows))])
    with torch.no_grad():
        means = final.vae.encode(images.unsqueeze(2)).latent_dist.mean[:, :, 0]
    expected = ConditionNormalizer.fit(final.scale_latents(means))
    assert torch.allclose(final.condition_normalizer.mean, expected.mean, atol=1e-5)
    assert torch.allclose(final.condition_normalizer.std, expected.std, atol=1e-5)
    assert not final.condition_normalizer.is_identity

    assert "instruction-embedding statistics: fitted to the instructions of 3 episodes (3 distinct)" in caplog.text
    instructions = [episode.metadata.instruction for episode in EpisodeDataset(dataset_dir)]
    expected_text = ConditionNormalizer.fit(final.raw_prompt_embeddings(instructions))
    torch.testing.assert_close(final.text_normalizer.mean, expected_text.mean)
    torch.testing.assert_close(final.text_normalizer.std, expected_text.std)
    assert not final.text_normalizer.is_identity

    caplog.clear()
    second = tmp_path / "second"
    assert main([*common, "--init-from", str(tmp_path / "first" / "final"), "--output", str(second)]) == 0
    assert f"observation-latent statistics: from --init-from {tmp_path / 'first' / 'final'}" in caplog.text
    kept = VideoVLAModel.from_pretrained(second / "final").condition_normalizer
    assert torch.equal(kept.mean, final.condition_normalizer.mean)
    assert np.array_equal(kept.std.numpy(), final.condition_normalizer.std.numpy())
    assert f"instruction-embedding statistics: from --init-from {tmp_path / 'first' / 'final'}" in caplog.text
    kept_text = VideoVLAModel.from_pretrained(second / "final").text_normalizer
    assert torch.equal(kept_text.mean, final.text_normalizer.mean)
    assert torch.equal(kept_text.std, final.text_normalizer.std)
