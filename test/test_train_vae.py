"""`videovla-train-vae`: the first stage trains a preset's VAE and writes a checkpoint for `videovla-train`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from videovla_model.configuration import VideoVLAConfig
from videovla_model.episodes import EpisodeDataset, EpisodeWriter
from videovla_model.modeling import VideoVLAModel, vae_kwargs
from videovla_model.train_vae import METRICS_NAME, VAETrainingConfig, detail_weights, main, train_vae


def _moving_square_episode(rng: np.random.Generator, steps: int = 12) -> np.ndarray:
    """(steps, 64, 64, 3) uint8: a coloured square sliding over a grey table (structure a VAE can learn)."""
    frames = np.full((steps, 64, 64, 3), 120, np.uint8)
    colour = rng.integers(0, 256, size=3)
    x, y = rng.integers(4, 40, size=2)
    for t in range(steps):
        frames[t, y : y + 12, x + t : x + t + 12] = colour
    return frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> EpisodeDataset:
    root = tmp_path_factory.mktemp("squares")
    writer = EpisodeWriter(root)
    rng = np.random.default_rng(0)
    for _ in range(3):
        frames = _moving_square_episode(rng)
        actions = rng.uniform(-0.01, 0.01, size=(len(frames), 7)).astype(np.float32)
        writer.write(frames, actions, "pick up the red cube", 10.0)
    return EpisodeDataset(root)


def test_trained_vae_reconstructs_better_and_loads_into_videovla(dataset, tmp_path):
    torch.manual_seed(0)
    preset = VideoVLAConfig.preset("tiny")
    output = tmp_path / "vae"
    train_vae(dataset, preset, VAETrainingConfig(steps=40, batch_size=2, lr=2e-3, log_every=10, clip_frames=1), output)

    with (output / METRICS_NAME).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert float(rows[-1]["l1"]) < 0.7 * float(rows[0]["l1"])

    model = VideoVLAModel.from_pretrained(output)
    assert model.config.vae.scaling_factor == model.vae.config.scaling_factor
    assert model.config.vae.scaling_factor != preset.vae.scaling_factor  # fitted to the latents' spread
    assert model.config.time_step == pytest.approx(0.1)  # the dataset's action rate
    fresh = VideoVLAModel(preset).vae.state_dict()
    trained = model.vae.state_dict()
    assert any(not torch.equal(fresh[name], trained[name]) for name in fresh)
    assert set(fresh) == set(trained)
    assert vae_kwargs(model.config)["latent_channels"] == preset.vae.latent_channels


def test_detail_weights_emphasise_small_objects_only():
    flat = torch.zeros(1, 3, 1, 16, 16)
    assert torch.equal(detail_weights(flat, 2.0), torch.ones(1, 1, 1, 16, 16))
    dot = flat.clone()
    dot[0, :, 0, 8, 8] = 1.0
    weights = detail_weights(dot, 2.0)
    assert weights.shape == (1, 1, 1, 16, 16)
    assert weights[0, 0, 0, 8, 8] == weights.max() > 10.0
    assert weights[0, 0, 0, 0, 0] == 1.0  # far from the dot


def test_continuing_a_vae_with_frames_and_detail_weighting(dataset, tmp_path):
    preset = VideoVLAConfig.preset("tiny")
    first = train_vae(dataset, preset, VAETrainingConfig(steps=2, batch_size=1, clip_frames=1), tmp_path / "a")
    config = VAETrainingConfig(steps=2, batch_size=1, clip_frames=1, frame_batch=2, detail_weight=2.0)
    second = train_vae(dataset, preset, config, tmp_path / "b", init_vae=first.vae)
    assert second.vae is first.vae  # continued, not rebuilt
    assert VideoVLAModel.from_pretrained(tmp_path / "b").config.vae.scaling_factor == second.config.vae.scaling_factor


def test_max_minutes_stops_early_and_still_saves(dataset, tmp_path):
    output = tmp_path / "vae"
    config = VAETrainingConfig(steps=10_000, batch_size=1, max_minutes=0.002, log_every=1000)
    train_vae(dataset, VideoVLAConfig.preset("tiny"), config, output)
    with (output / METRICS_NAME).open() as handle:
        last = list(csv.DictReader(handle))[-1]
    assert int(last["step"]) < 10_000
    assert (output / "vae" / "config.json").is_file()


def test_bad_settings_are_refused_with_the_field_named(dataset, capsys):
    with pytest.raises(ValueError, match="kl_weight must be a number >= 0"):
        VAETrainingConfig(kl_weight=-1.0)
    with pytest.raises(ValueError, match="detail_weight must be a number >= 0"):
        VAETrainingConfig(detail_weight=-0.5)
    with pytest.raises(ValueError, match="clip_frames must be 8k"):
        VAETrainingConfig(clip_frames=5)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        VAETrainingConfig(steps=0)
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(dataset.root), "--output", "x", "--preset", "tiny", "--max-minutes", "-1"])
    assert exit_info.value.code == 2
    assert "max_minutes must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", str(dataset.root), "--output", "x"])
    assert "videovla-train-vae: error: exactly one of preset, config" in capsys.readouterr().err
    assert main(["--dataset", "/nonexistent/data", "--output", "x", "--preset", "tiny"]) == 2
    assert main(["--dataset", str(dataset.root), "--output", "x", "--preset", "tiny", "--init-vae", "/nope"]) == 2
    assert "--init-vae /nope: no diffusers VAE" in capsys.readouterr().err
