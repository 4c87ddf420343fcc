"""The frozen VAE's posterior of every training window, computed once so training steps skip the VAE encoder.

The VAE does not train with the transformer, so q(z | clip) of a window never changes during a run. Encoding
each window once and drawing z = mean + std * noise at every step gives the same training distribution as
encoding the clip at every step; on CPU the encoder is most of a small model's step time (the `small` preset:
about 0.3 s of 0.5 s per batch of 8 on one core). CogVideoX fine-tuning scripts precompute latents for the same
reason. The observation frame is still encoded at every step, because it is noised in pixel space first.

Cache folder::

    latent_mean.npy   (N, C, F', h, w) float32, memory-mapped; N windows in `EpisodeWindowDataset` order
    latent_std.npy    (N, C, F', h, w) float32
    cache.json        the fingerprint the arrays were computed for (written last: marks the cache complete)

A cache is reused only when its fingerprint equals the current one: every episode's folder name and length,
the frames per clip, the frame stride, the image size and a hash of the VAE weights. Anything else rebuilds it,
with a log line naming what changed, so a stale cache can never train a model on other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger("videovla.latent_cache")

MEAN_NAME = "latent_mean.npy"
STD_NAME = "latent_std.npy"
FINGERPRINT_NAME = "cache.json"
FORMAT_VERSION = 1


def vae_weights_hash(vae: AutoencoderKLCogVideoX) -> str:
    """sha256 over the VAE's parameter names, shapes and values: equal hashes encode alike."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def sampled_weights_hash(module: torch.nn.Module, skip: frozenset[str] = frozenset(), sample: int = 64) -> str:
    """sha256 over a module's tensor names, shapes and the first and last `sample` values of each: tells models
    with other weights apart in milliseconds where hashing every value of a 5B model would take minutes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name in skip:
            continue
        flat = tensor.detach().reshape(-1)
        values = torch.cat([flat[:sample], flat[-sample:]]).to("cpu", torch.float32)
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_fingerprint(
    episode_lengths: list[tuple[str, int]],
    num_frames: int,
    frame_stride: int,
    image_size: tuple[int, int],
    vae_hash: str,
) -> dict[str, Any]:
    """What a cache's arrays depend on, as a JSON-ready dict (compared key by key on reuse)."""
    return {
        "format_version": FORMAT_VERSION,
        "episodes": [[name, length] for name, length in episode_lengths],
        "num_frames": num_frames,
        "frame_stride": frame_stride,
        "image_size": list(image_size),
        "vae_sha256": vae_hash,
    }


def read_matching_fingerprint(folder: Path, fingerprint: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The fingerprint saved in `folder` if it equals `fingerprint`; else None, with the reason logged."""
    marker = folder / FINGERPRINT_NAME
    if not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text())
    except json.JSONDecodeError:
        logger.info("%s %s: unreadable %s, rebuilding it", what, folder, FINGERPRINT_NAME)
        return None
    if changed := _differences(saved, fingerprint):
        logger.info("%s %s was built for other inputs (%s), rebuilding it", what, folder, ", ".join(changed))
        return None
    return saved


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    changed = []
    for key in keys:
        if saved.get(key) != wanted.get(key):
            shown = "the episode list" if key == "episodes" else f"{saved.get(key)!r} -> {wanted.get(key)!r}"
            changed.append(f"{key} ({shown})")
    return changed


class LatentCache:
    """The posterior arrays of one cache folder; `mean[i]`, `std[i]` belong to dataset window i."""

    def __init__(self, folder: Path, mean: np.ndarray, std: np.ndarray) -> None:
        if mean.shape != std.shape:
            raise ValueError(f"{folder}: {MEAN_NAME} {mean.shape} and {STD_NAME} {std.shape} differ in shape")
        self.folder = folder
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def posterior(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of window `index`, each (C, F', h, w) float32."""
        return torch.from_numpy(np.array(self.mean[index])), torch.from_numpy(np.array(self.std[index]))

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict[str, Any]) -> LatentCache | None:
        """The cache in `folder` if it is complete and was built for `fingerprint`, else None (logged why)."""
        folder = Path(folder)
        if read_matching_fingerprint(folder, fingerprint, "latent cache") is None:
            return None
        return cls(folder, np.load(folder / MEAN_NAME, mmap_mode="r"), np.load(folder / STD_NAME, mmap_mode="r"))

    @classmethod
    def build(
        cls,
        folder: str | Path,
        fingerprint: dict[str, Any],
        clips: Dataset[torch.Tensor],
        vae: AutoencoderKLCogVideoX,
        batch_size: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> LatentCache:
        """Encodes every clip of `clips` ((3, F, H, W) in [-1, 1] each) with `vae` into `folder`.

        Anything already in `folder` is replaced. `progress(n)` is called after each batch of n clips.
        """
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        loader = DataLoader(clips, batch_size=batch_size, shuffle=False)
        device = next(vae.parameters()).device
        dtype = next(vae.parameters()).dtype
        mean_file: np.ndarray | None = None
        std_file: np.ndarray | None = None
        written = 0
        with torch.no_grad():
            for video in loader:
                posterior = vae.encode(video.to(device=device, dtype=dtype)).latent_dist
                mean = posterior.mean.float().cpu().numpy()
                std = posterior.std.float().cpu().numpy()
                if mean_file is None:
                    shape = (len(clips), *mean.shape[1:])
                    mean_file = np.lib.format.open_memmap(folder / MEAN_NAME, "w+", np.float32, shape)
                    std_file = np.lib.format.open_memmap(folder / STD_NAME, "w+", np.float32, shape)
                assert std_file is not None  # opened together with mean_file
                mean_file[written : written + len(mean)] = mean
                std_file[written : written + len(std)] = std
                written += len(mean)
                if progress is not None:
                    progress(len(mean))
        if mean_file is None or std_file is None:
            raise ValueError(f"latent cache {folder}: there are no clips to encode")
        mean_file.flush()
        std_file.flush()
        del mean_file, std_file
        (folder / FINGERPRINT_NAME).write_text(json.dumps(fingerprint) + "\n")
        return cls(folder, np.load(folder / MEAN_NAME, mmap_mode="r"), np.load(folder / STD_NAME, mmap_mode="r"))
