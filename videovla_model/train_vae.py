"""`videovla-train-vae`: the first stage for models without pre-trained CogVideoX weights.

The small presets build a randomly initialised `AutoencoderKLCogVideoX`, which VideoVLA keeps frozen, so its
latents carry little of the scene and its decoded imagination is noise. This command trains that VAE as an
autoencoder on the recorded frames (reconstruction L1 + MSE, plus a small KL term that keeps the posterior
close to N(0, 1)), for a bounded number of steps or minutes, and writes a complete VideoVLA checkpoint around
it: the trained VAE, a freshly initialised transformer and text encoder, and identity action statistics. The
second stage starts from it::

    videovla-train-vae --dataset outputs/demos --output outputs/vae --preset small --max-minutes 10
    videovla-train --dataset outputs/demos --output runs/sim --init-from outputs/vae --steps 3000

Detail weighting: in a tabletop scene the objects a task names cover a few pixels each, so a plain
reconstruction loss is minimised by painting the table over them, and a frozen VAE that drops them leaves the
policy blind. Every pixel's loss is therefore weighted by 1 + detail_weight * (its local contrast, normalised
to mean 1 per image), which emphasises small objects and edges without knowing anything about the scene.
Each step trains on `batch_size` clips (the video path) plus `frame_batch` single frames (the observation
path: VideoVLA encodes the current camera frame alone).

The saved VAE's `scaling_factor` is set to 1 / (std of its latents on the data), the Stable Diffusion recipe,
so the diffusion sees unit-variance latents; the checkpoint's config.json carries the same value.

Output folder: a `VideoVLAModel.save_pretrained` checkpoint plus `vae_metrics.csv` (step, loss, l1, mse, kl,
seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
import tyro
from diffusers import AutoencoderKLCogVideoX

from videovla_model.cli import checked, choices, parse, unchecked
from videovla_model.configuration import PRESETS, VideoVLAConfig
from videovla_model.data import EpisodeWindowDataset, dataset_action_rate, frame_stride_for
from videovla_model.episodes import EpisodeDataset
from videovla_model.modeling import VideoVLAModel, vae_kwargs

logger = logging.getLogger("videovla.train_vae")

METRICS_NAME = "vae_metrics.csv"


@dataclasses.dataclass(frozen=True)
class VAETrainingConfig:
    """One VAE run's settings (each a `videovla-train-vae` flag).

    `clip_frames` is 8k + 1 so the causal VAE makes an odd number of latents (2k + 1) and decodes them back to
    exactly the clip's length (an even count decodes to 4 frames per latent).
    """

    steps: int = 2000
    """optimizer steps"""
    batch_size: int = 4
    """clips per step"""
    lr: float = 1e-3
    """AdamW learning rate"""
    kl_weight: float = 1e-4
    """weight of the KL term"""
    max_minutes: float = 0.0
    """stop after this long, keeping the newest weights (0: no limit)"""
    seed: int = 0
    """seed of weights, clip choice and noise"""
    log_every: int = 20
    """steps between metrics rows"""
    clip_frames: int = 9
    """frames per clip (8k + 1)"""
    frame_batch: int = 0
    """single frames per step besides the clips (the observation path)"""
    detail_weight: float = 0.0
    """extra loss weight of high-contrast pixels (small objects, edges)"""

    def __post_init__(self) -> None:
        if not isinstance(self.clip_frames, int) or self.clip_frames < 1 or (self.clip_frames - 1) % 8:
            raise ValueError(f"clip_frames must be 8k + 1 (1, 9, 17, ...), got {self.clip_frames!r}")
        for name in ("steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.frame_batch, int) or self.frame_batch < 0:
            raise ValueError(f"frame_batch must be an int >= 0, got {self.frame_batch!r}")
        if not self.detail_weight >= 0:
            raise ValueError(f"detail_weight must be a number >= 0, got {self.detail_weight!r}")
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight must be a number >= 0, got {self.kl_weight!r}")
        if not self.max_minutes >= 0:
            raise ValueError(f"max_minutes must be >= 0 (0 = no limit), got {self.max_minutes!r}")


def detail_weights(video: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """(B, 3, F, H, W) video -> (B, 1, F, H, W) per-pixel loss weights 1 + detail_weight * normalised contrast.

    Contrast is the distance of a pixel from its 5 x 5 neighbourhood mean, summed over colour channels and
    divided by its mean over each image, so the weights do not depend on the scene's overall brightness.
    """
    b, c, f, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    local_mean = F.avg_pool2d(frames, 5, stride=1, padding=2, count_include_pad=False)
    contrast = (frames - local_mean).abs().sum(dim=1, keepdim=True)
    contrast = contrast / contrast.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    weights = 1.0 + detail_weight * contrast
    return weights.reshape(b, f, 1, h, w).permute(0, 2, 1, 3, 4)


def vae_loss(
    vae: AutoencoderKLCogVideoX,
    video: torch.Tensor,
    generator: torch.Generator,
    kl_weight: float,
    detail_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction + KL loss of one clip batch.

    video: (B, 3, F, H, W) in [-1, 1] with F = 8k + 1. Returns (loss with grad, {"l1", "mse", "kl"} floats); the
    reported l1 / mse are unweighted, the loss uses `detail_weights`.
    """
    posterior = vae.encode(video).latent_dist
    latents = posterior.sample(generator=generator)
    reconstruction = vae.decode(latents).sample
    error = reconstruction - video
    weights = detail_weights(video, detail_weight) if detail_weight > 0 else torch.ones_like(video[:, :1])
    weighted = (weights * (error.abs() + error.pow(2))).mean() / weights.mean()
    l1 = error.abs().mean()
    mse = error.pow(2).mean()
    # Mean over latent elements, so the weight does not depend on the clip or image size.
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    loss = weighted + kl_weight * kl
    return loss, {"l1": float(l1.detach()), "mse": float(mse.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def latent_std(vae: AutoencoderKLCogVideoX, clips: torch.Tensor) -> float:
    """Standard deviation of the posterior means of `clips` (B, 3, F, H, W): what 1 / scaling_factor should be."""
    return float(vae.encode(clips).latent_dist.mean.std())


def train_vae(
    episodes: EpisodeDataset,
    model_config: VideoVLAConfig,
    config: VAETrainingConfig,
    output: Path,
    init_vae: AutoencoderKLCogVideoX | None = None,
) -> VideoVLAModel:
    """Trains the VAE of `model_config` (or continues `init_vae`) on `episodes`' clips and saves the checkpoint
    described in the module doc.

    Returns the saved model (the trained VAE, fresh transformer and text encoder, identity action statistics).
    """
    torch.manual_seed(config.seed)
    action_rate = dataset_action_rate(episodes)
    model_config = dataclasses.replace(model_config, time_step=1.0 / action_rate)
    stride = frame_stride_for(model_config, action_rate)
    normalizer = VideoVLAModel.default_normalizer(model_config)
    clip_config = dataclasses.replace(model_config, train_num_frames=config.clip_frames)
    windows = EpisodeWindowDataset(episodes, clip_config, normalizer, stride)
    frames = EpisodeWindowDataset(episodes, dataclasses.replace(model_config, train_num_frames=1), normalizer, stride)
    vae = init_vae if init_vae is not None else AutoencoderKLCogVideoX(**vae_kwargs(model_config))
    vae.requires_grad_(True)  # a VAE taken from a VideoVLAModel comes frozen
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline = started + 60.0 * config.max_minutes if config.max_minutes > 0 else float("inf")
    sums = np.zeros(4)
    interval = 0
    with (output / METRICS_NAME).open("w", newline="") as handle:
        metrics = csv.writer(handle)
        metrics.writerow(("step", "loss", "l1", "mse", "kl", "seconds"))
        for step in range(1, config.steps + 1):
            indices = rng.integers(0, len(windows), size=config.batch_size)
            video = torch.stack([windows[int(i)].video for i in indices])
            optimizer.zero_grad(set_to_none=True)
            loss, parts = vae_loss(vae, video, generator, config.kl_weight, config.detail_weight)
            if config.frame_batch > 0:
                singles = rng.integers(0, len(frames), size=config.frame_batch)
                image = torch.stack([frames[int(i)].video for i in singles])
                frame_loss, _ = vae_loss(vae, image, generator, config.kl_weight, config.detail_weight)
                loss = loss + frame_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            sums += (float(loss.detach()), parts["l1"], parts["mse"], parts["kl"])
            interval += 1
            out_of_time = time.perf_counter() >= deadline
            if step % config.log_every == 0 or step == config.steps or out_of_time:
                means = sums / interval
                seconds = time.perf_counter() - started
                metrics.writerow((step, *(f"{v:.6f}" for v in means), f"{seconds:.1f}"))
                handle.flush()
                logger.info("step %d: loss %.4f l1 %.4f mse %.4f kl %.3f (%.0f s)", step, *means, seconds)
                sums[:] = 0.0
                interval = 0
            if out_of_time:
                logger.info("stopping at step %d: --max-minutes %.1f reached", step, config.max_minutes)
                break
    vae.eval()
    probe_indices = rng.integers(0, len(windows), size=16)
    std = latent_std(vae, torch.stack([windows[int(i)].video for i in probe_indices]))
    scaling_factor = round(1.0 / max(std, 1e-3), 4)
    logger.info("latent std %.4f -> scaling_factor %.4f", std, scaling_factor)
    scaled_config = dataclasses.replace(
        model_config, vae=dataclasses.replace(model_config.vae, scaling_factor=scaling_factor)
    )
    vae.register_to_config(scaling_factor=scaling_factor)
    model = VideoVLAModel(scaled_config, vae=vae)
    model.save_pretrained(output)
    logger.info("saved the VideoVLA checkpoint with the trained VAE to %s", output)
    return model


_VAESettings = unchecked(VAETrainingConfig)


class VAECommand(NamedTuple):
    """What `videovla-train-vae` was asked to do (parsed, nothing loaded yet)."""

    training: VAETrainingConfig
    dataset: str
    output: str
    preset: str | None
    model_config: str | None
    init_vae: str | None


def videovla_train_vae(
    dataset: str,
    output: str,
    training: Annotated[_VAESettings, tyro.conf.OmitArgPrefixes],
    preset: Annotated[str | None, choices(sorted(PRESETS))] = None,
    model_config: Annotated[str | None, tyro.conf.arg(name="config")] = None,
    init_vae: str | None = None,
) -> VAECommand:
    """Train a VideoVLA preset's CogVideoX VAE as an autoencoder on recorded frames and write a VideoVLA checkpoint
    around it (for `videovla-train --init-from`).

    Args:
        dataset: episode dataset folder
        output: checkpoint folder to write
        training: the run's settings
        preset: a VideoVLAConfig preset (or config)
        model_config: a VideoVLAConfig JSON file (or preset)
        init_vae: continue training this diffusers VAE folder (e.g. a checkpoint's vae/)
    """
    if (preset is None) == (model_config is None):
        raise ValueError(
            f"exactly one of preset, config must name the model, got preset={preset}, config={model_config}"
        )
    return VAECommand(checked(training), dataset, output, preset, model_config, init_vae)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 for missing data or model files; SystemExit 2 for bad flags)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        command = parse(videovla_train_vae, argv, prog="videovla-train-vae")
        if command.preset is not None:
            model_config = VideoVLAConfig.preset(command.preset)
        else:
            model_config = VideoVLAConfig.load(command.model_config)
        episodes = EpisodeDataset(command.dataset)
        init_vae = None
        if command.init_vae is not None:
            if not (Path(command.init_vae) / "config.json").is_file():
                raise FileNotFoundError(f"--init-vae {command.init_vae}: no diffusers VAE (config.json) there")
            init_vae = AutoencoderKLCogVideoX.from_pretrained(command.init_vae)
    except (ValueError, FileNotFoundError) as error:
        print(f"videovla-train-vae: {error}", file=sys.stderr)
        return 2
    train_vae(episodes, model_config, command.training, Path(command.output), init_vae)
    return 0


if __name__ == "__main__":
    sys.exit(main())
