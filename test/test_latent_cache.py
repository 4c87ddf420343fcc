"""The latent cache: what it stores, when it is reused or rebuilt, and that training from it is the same loss."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_square_dataset

from videovla_model.configuration import VideoVLAConfig
from videovla_model.data import EpisodeWindowDataset, WindowClips, collate_samples, compute_action_statistics
from videovla_model.episodes import EpisodeDataset
from videovla_model.latent_cache import LatentCache, cache_fingerprint, vae_weights_hash
from videovla_model.modeling import VideoVLAModel
from videovla_model.train import main, read_metrics

TINY = VideoVLAConfig.preset("tiny")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("episodes") / "data"
    write_square_dataset(root, lengths=(9, 7))
    return root


@pytest.fixture(scope="module")
def model() -> VideoVLAModel:
    torch.manual_seed(0)
    return VideoVLAModel(TINY)


def windows(dataset_dir: Path, model: VideoVLAModel, frame_stride: int = 1) -> EpisodeWindowDataset:
    episodes = EpisodeDataset(dataset_dir)
    normalizer = compute_action_statistics(episodes, TINY.action_dim_names)
    return EpisodeWindowDataset(episodes, TINY, normalizer, frame_stride)


def fingerprint(dataset: EpisodeWindowDataset, model: VideoVLAModel) -> dict:
    return cache_fingerprint(
        dataset.episode_lengths(),
        TINY.train_num_frames,
        dataset.frame_stride,
        TINY.image_size,
        vae_weights_hash(model.vae),
    )


def test_cache_holds_each_windows_posterior_and_reopens_only_for_the_same_inputs(dataset_dir, model, tmp_path, caplog):
    dataset = windows(dataset_dir, model)
    wanted = fingerprint(dataset, model)
    cache = LatentCache.build(tmp_path / "cache", wanted, WindowClips(dataset), model.vae, batch_size=3)

    assert len(cache) == len(dataset) == 16
    latent_frames = TINY.latent_frames(TINY.train_num_frames)
    assert cache.mean.shape == (16, TINY.vae.latent_channels, latent_frames, TINY.latent_height, TINY.latent_width)
    for index in (0, 8, 15):  # first window, the first of episode 2, the last
        with torch.no_grad():
            posterior = model.vae.encode(dataset.clip(index)[None]).latent_dist
        mean, std = cache.posterior(index)
        torch.testing.assert_close(mean, posterior.mean[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(std, posterior.std[0], rtol=1e-4, atol=1e-5)

    assert LatentCache.open(tmp_path / "cache", wanted) is not None
    caplog.set_level(logging.INFO, logger="videovla.latent_cache")
    other_stride = fingerprint(windows(dataset_dir, model, frame_stride=2), model)
    assert LatentCache.open(tmp_path / "cache", other_stride) is None
    assert "frame_stride (1 -> 2)" in caplog.text
    changed_vae = {**wanted, "vae_sha256": "0" * 64}
    assert LatentCache.open(tmp_path / "cache", changed_vae) is None
    assert LatentCache.open(tmp_path / "missing", wanted) is None


def test_a_cached_batch_gives_the_same_loss_as_encoding_the_clips(dataset_dir, model, tmp_path):
    dataset = windows(dataset_dir, model)
    indices = [0, 5, 9, 14]
    encoded = collate_samples([dataset[i] for i in indices])
    dataset.use_latent_cache(
        LatentCache.build(tmp_path / "cache", fingerprint(dataset, model), WindowClips(dataset), model.vae)
    )
    cached = collate_samples([dataset[i] for i in indices])

    assert cached.video is None and cached.latent_mean is not None
    torch.testing.assert_close(cached.observation, encoded.observation)
    model.eval()  # no dropout: the two losses may differ only by the encoder's float rounding
    with torch.no_grad():
        from_video = model.compute_loss(encoded, generator=torch.Generator().manual_seed(3))
        from_cache = model.compute_loss(cached, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(from_cache.video_loss, from_video.video_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_cache.action_loss, from_video.action_loss, rtol=1e-4, atol=1e-5)


def test_a_cache_of_another_length_is_refused(dataset_dir, model, tmp_path):
    dataset = windows(dataset_dir, model)
    short = LatentCache(tmp_path, np.zeros((3, 4, 2, 8, 8), np.float32), np.ones((3, 4, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="holds 3 windows, the dataset 16"):
        dataset.use_latent_cache(short)


def test_training_builds_the_cache_once_and_later_runs_reuse_it(dataset_dir, tmp_path):
    cache = tmp_path / "latents"
    common = ["--dataset", str(dataset_dir), "--preset", "tiny", "--batch-size", "2", "--num-workers", "0"]
    common += ["--steps", "2", "--log-every", "1", "--latent-cache", str(cache)]
    assert main([*common, "--output", str(tmp_path / "video")]) == 0
    built = (cache / "latent_mean.npy").stat().st_mtime_ns
    assert main([*common, "--output", str(tmp_path / "actions"), "--no-video-loss"]) == 0
    assert (cache / "latent_mean.npy").stat().st_mtime_ns == built
    for run in ("video", "actions"):
        rows = read_metrics(tmp_path / run / "metrics.csv")
        assert [row["step"] for row in rows] == [1, 2]
        assert all(np.isfinite(row["loss"]) for row in rows)
    assert VideoVLAModel.from_pretrained(tmp_path / "video" / "final").config.loss.use_video_loss
