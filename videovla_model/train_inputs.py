"""Inputs `videovla-train` computes once before the first step: the instruction table (T5 kept off the device),
the latent cache, and the observation latents and instruction embeddings the conditioning statistics are
fitted to.

`PrecomputedInputs` is the part of `train.TrainingRun` that builds them; it reads the run's accelerator, config,
output folder, model, episodes, window dataset and frame stride.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from videovla_model.data import EpisodeWindowDataset, WindowClips
from videovla_model.episodes import EpisodeDataset
from videovla_model.latent_cache import LatentCache, cache_fingerprint, vae_weights_hash
from videovla_model.modeling import VideoVLAModel
from videovla_model.training_config import TrainingConfig
from videovla_model.training_setup import INSTRUCTION_CACHE_DIR, install_instruction_table

logger = logging.getLogger("videovla.train")

# Observations the conditioning statistics are fitted to, spread evenly over the dataset's windows.
CONDITION_FIT_SAMPLES = 4096
CONDITION_FIT_BATCH = 64
INSTRUCTION_FIT_BATCH = 64


class PrecomputedInputs:
    """Caches and fitting inputs of a training run (mixed into `train.TrainingRun`, which sets these attributes)."""

    config: TrainingConfig
    output: Path
    accelerator: Accelerator
    model: VideoVLAModel
    episodes: EpisodeDataset
    dataset: EpisodeWindowDataset
    frame_stride: int

    def _install_instruction_table(self) -> None:
        """T5 embeddings of every instruction, from the instruction cache (built first by the main process)."""
        config, accelerator = self.config, self.accelerator
        folder = Path(config.instruction_cache or self.output / INSTRUCTION_CACHE_DIR)
        instructions = [episode.metadata.instruction for episode in self.episodes]
        device = accelerator.device
        if accelerator.is_main_process:
            install_instruction_table(self.model, instructions, folder, device, build=True)
        accelerator.wait_for_everyone()
        if (
            not accelerator.is_main_process
            and install_instruction_table(self.model, instructions, folder, device, build=False) is None
        ):
            raise RuntimeError(f"instruction cache {folder} is missing or incomplete after it was built")

    def _instruction_embeddings(self, instructions: list[str]) -> torch.Tensor:
        """(N, max_length, d_model) raw T5 embeddings of `instructions`, each distinct one encoded once."""
        distinct = sorted(set(instructions))
        encoded = torch.cat(
            [
                self.model.raw_prompt_embeddings(distinct[start : start + INSTRUCTION_FIT_BATCH]).float().cpu()
                for start in range(0, len(distinct), INSTRUCTION_FIT_BATCH)
            ]
        )
        row = {instruction: index for index, instruction in enumerate(distinct)}
        return encoded[[row[instruction] for instruction in instructions]]

    def _observation_latents(self) -> torch.Tensor:
        """(N, C, h, w) scaled VAE posterior means of observations spread evenly over the dataset's windows,
        each encoded on its own exactly as inference encodes it."""
        count = min(CONDITION_FIT_SAMPLES, len(self.dataset))
        indices = np.linspace(0, len(self.dataset) - 1, count).round().astype(int).tolist()
        vae = self.model.vae.to(self.accelerator.device)
        vae_dtype = next(vae.parameters()).dtype
        encoded = []
        with torch.no_grad():
            for start in range(0, count, CONDITION_FIT_BATCH):
                batch_indices = indices[start : start + CONDITION_FIT_BATCH]
                frames = torch.stack([self.dataset.observation(i) for i in batch_indices])
                video = frames.unsqueeze(2).to(device=self.accelerator.device, dtype=vae_dtype)
                encoded.append(vae.encode(video).latent_dist.mean[:, :, 0].float().cpu())
        return self.model.scale_latents(torch.cat(encoded))

    def _latent_cache(self, folder: Path) -> LatentCache:
        """The cache in `folder`, built first (by the main process) unless it matches this run's data and VAE."""
        model_config = self.model.config
        fingerprint = cache_fingerprint(
            self.dataset.episode_lengths(),
            model_config.train_num_frames,
            self.frame_stride,
            model_config.image_size,
            vae_weights_hash(self.model.vae),
        )
        accelerator = self.accelerator
        cache = LatentCache.open(folder, fingerprint) if accelerator.is_main_process else None
        if accelerator.is_main_process and cache is None:
            self.model.vae.to(accelerator.device)
            started = time.perf_counter()
            with tqdm(total=len(self.dataset), desc="latent cache", dynamic_ncols=True) as bar:
                cache = LatentCache.build(
                    folder, fingerprint, WindowClips(self.dataset), self.model.vae, progress=bar.update
                )
            logger.info(
                "latent cache: encoded %d clips into %s in %.0f s",
                len(self.dataset),
                folder,
                time.perf_counter() - started,
            )
        accelerator.wait_for_everyone()
        if cache is None:  # the other processes open what the main process built
            cache = LatentCache.open(folder, fingerprint)
        if cache is None:
            raise RuntimeError(f"latent cache {folder} is missing or incomplete after it was built")
        logger.info("latent cache: training from the VAE posteriors in %s", folder)
        return cache
