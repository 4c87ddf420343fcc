"""`videovla-train-vae`: the first stage for models without pre-trained CogVideoX weights.

The small presets build a randomly initialised `AutoencoderKLCogVideoX`, which VideoVLA keeps frozen, so its
latents carry little of the scene and its decoded imagination is noise. This command trains that VAE as an
autoencoder on the recorded frames (reconstruction L1 + MSE, plus a small KL term that keeps the posterior
close to N(0, 1)), for a bounded number of steps or minutes, and writes a complete VideoVLA checkpoint around
it: the trained VAE, a freshly initialised transformer and text encoder, and identity action statistics. The
second stage starts from it::

    videovla-train-vae --dataset outputs/demos --output outputs/vae --preset small --max-minutes 10
    videovla-train --dataset outputs/demos --output runs/sim --init-from outputs/vae --steps 3000

The saved VAE's `scaling_factor` is set to 1 / (std of its latents on the data), the Stable Diffusion recipe,
so the diffusion sees unit-variance latents; the checkpoint's config.json carries the same value.

Output folder: a `VideoVLAModel.save_pretrained` checkpoint plus `vae_metrics.csv` (step, loss, l1, mse, kl,
seconds).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import AutoencoderKLCogVideoX

from videovla_model.configuration import PRESETS, VideoVLAConfig
from videovla_model.data import EpisodeWindowDataset, dataset_action_rate, frame_stride_for
from videovla_model.episodes import EpisodeDataset
from videovla_model.modeling import VideoVLAModel, vae_kwargs

logger = logging.getLogger("videovla.train_vae")

METRICS_NAME = "vae_metrics.csv"


@dataclasses.dataclass(frozen=True)
class VAETrainingConfig:
    """One VAE run. `max_minutes` ends it early (the newest weights are kept); 0 means no time limit."""

    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-3
    kl_weight: float = 1e-4
    max_minutes: float = 0.0
    seed: int = 0
    log_every: int = 20
    clip_frames: int = 9
    """Frames per training clip: 8k + 1, so the causal VAE makes an odd number of latents (2k + 1) and decodes
    them back to exactly the clip's length (an even count decodes to 4 frames per latent)."""

    def __post_init__(self) -> None:
        if not isinstance(self.clip_frames, int) or self.clip_frames < 1 or (self.clip_frames - 1) % 8:
            raise ValueError(f"clip_frames must be 8k + 1 (1, 9, 17, ...), got {self.clip_frames!r}")
        for name in ("steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight must be a number >= 0, got {self.kl_weight!r}")
        if not self.max_minutes >= 0:
            raise ValueError(f"max_minutes must be >= 0 (0 = no limit), got {self.max_minutes!r}")


def vae_loss(
    vae: AutoencoderKLCogVideoX, video: torch.Tensor, generator: torch.Generator, kl_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction + KL loss of one clip batch.

    video: (B, 3, F, H, W) in [-1, 1] with F = 4k + 1. Returns (loss with grad, {"l1", "mse", "kl"} floats).
    """
    posterior = vae.encode(video).latent_dist
    latents = posterior.sample(generator=generator)
    reconstruction = vae.decode(latents).sample
    l1 = F.l1_loss(reconstruction, video)
    mse = F.mse_loss(reconstruction, video)
    # Mean over latent elements, so the weight does not depend on the clip or image size.
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    loss = l1 + mse + kl_weight * kl
    return loss, {"l1": float(l1.detach()), "mse": float(mse.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def latent_std(vae: AutoencoderKLCogVideoX, clips: torch.Tensor) -> float:
    """Standard deviation of the posterior means of `clips` (B, 3, F, H, W): what 1 / scaling_factor should be."""
    return float(vae.encode(clips).latent_dist.mean.std())


def train_vae(
    episodes: EpisodeDataset, model_config: VideoVLAConfig, config: VAETrainingConfig, output: Path
) -> VideoVLAModel:
    """Trains the VAE of `model_config` on `episodes`' clips and saves the checkpoint described in the module doc.

    Returns the saved model (the trained VAE, fresh transformer and text encoder, identity action statistics).
    """
    torch.manual_seed(config.seed)
    action_rate = dataset_action_rate(episodes)
    model_config = dataclasses.replace(model_config, time_step=1.0 / action_rate)
    stride = frame_stride_for(model_config, action_rate)
    normalizer = VideoVLAModel.default_normalizer(model_config)
    clip_config = dataclasses.replace(model_config, train_num_frames=config.clip_frames)
    windows = EpisodeWindowDataset(episodes, clip_config, normalizer, stride)
    vae = AutoencoderKLCogVideoX(**vae_kwargs(model_config))
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
            loss, parts = vae_loss(vae, video, generator, config.kl_weight)
            optimizer.zero_grad(set_to_none=True)
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


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = VAETrainingConfig()
    parser = argparse.ArgumentParser(
        prog="videovla-train-vae",
        description="Train a VideoVLA preset's CogVideoX VAE as an autoencoder on recorded frames and write a "
        "VideoVLA checkpoint around it (for `videovla-train --init-from`).",
    )
    parser.add_argument("--dataset", required=True, help="episode dataset folder")
    parser.add_argument("--output", required=True, help="checkpoint folder to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a VideoVLAConfig preset")
    source.add_argument("--config", dest="model_config", help="a VideoVLAConfig JSON file")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"optimizer steps (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="clips per step")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="AdamW learning rate")
    parser.add_argument("--kl-weight", type=float, default=defaults.kl_weight, help="weight of the KL term")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long (0 = no limit)")
    parser.add_argument("--clip-frames", type=int, default=defaults.clip_frames, help="frames per clip (8k + 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, clip choice and noise")
    parser.add_argument("--log-every", type=int, default=defaults.log_every, help="steps between metrics rows")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 for bad arguments or data)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = VAETrainingConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            kl_weight=args.kl_weight,
            max_minutes=args.max_minutes,
            seed=args.seed,
            log_every=args.log_every,
            clip_frames=args.clip_frames,
        )
        model_config = (
            VideoVLAConfig.preset(args.preset) if args.preset is not None else VideoVLAConfig.load(args.model_config)
        )
        episodes = EpisodeDataset(args.dataset)
    except (ValueError, FileNotFoundError) as error:
        print(f"videovla-train-vae: {error}", file=sys.stderr)
        return 2
    train_vae(episodes, model_config, config, Path(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
