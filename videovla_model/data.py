"""Training samples from recorded episodes: (episode, step) windows of an `EpisodeDataset` -> `TrainingBatch`.

Dataset interface
-----------------
`EpisodeWindowDataset(episodes, config, normalizer, frame_stride)` is a map-style `torch.utils.data.Dataset`
with one sample per recorded step: sample `i` is the window starting at step `t` of episode `e`
(`dataset.windows[i] == (e, t)`, episodes in folder order, steps ascending). With F = `config.train_num_frames`,
R = `config.chunk_rows`, D = `len(config.action_dim_names)`, (H, W) = `config.image_size`, T = episode length
and s = `frame_stride`, `dataset[i]` is a `TrainingSample`:

    observation   (3, H, W) float32 in [-1, 1]   frame t
    video         (3, F, H, W) float32 in [-1, 1] frames t, t+s, ..., t+(F-1)s; indices past T-1 repeat frame T-1
                                                  (the scene stays still after the episode ends); None once a
                                                  latent cache is attached
    latent_mean,  (C, F', h, w) float32           with a latent cache (`use_latent_cache`): the VAE posterior
    latent_std                                    of that clip, read instead of the frames; otherwise None
    instruction   str                             the episode's instruction
    actions       (R, D) float32 in [-1, 1]       rows t..t+R-1 normalised with `normalizer`; rows past the end
                                                  repeat the last recorded row (the LeRobot convention)
    action_mask   (R,) bool                       False exactly for those padded rows (left out of the loss)
    embodiment_id int                             the episode's `embodiment_id`

Every frame goes through `processing.prepare_image` (centre crop + resize to the model's size), the same rule
the policy applies at run time. `collate_samples` stacks samples into a `batch.TrainingBatch`.

Episodes are checked once, at construction: action dimension names must equal the config's (same names, same
order), the embodiment id must be below `config.num_embodiments`, and every episode must share one action rate,
the one `config.time_step` describes (one action row per recorded step). A bad episode raises `DatasetError`
naming its folder and the mismatch. Frames stay memory-mapped on disk; a sample reads at most F of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from videovla_model.batch import TrainingBatch
from videovla_model.configuration import VideoVLAConfig
from videovla_model.episodes import EpisodeDataset, EpisodeMetadata
from videovla_model.latent_cache import LatentCache
from videovla_model.normalization import ActionNormalizer
from videovla_model.processing import prepare_image, to_model_range


class DatasetError(ValueError):
    """An episode dataset that cannot train the configured model; the message names the episode and the field."""


@dataclass(frozen=True)
class TrainingSample:
    """One (episode, step) window; shapes in the module docstring."""

    observation: torch.Tensor
    video: torch.Tensor | None
    instruction: str
    actions: torch.Tensor
    action_mask: torch.Tensor
    embodiment_id: int
    latent_mean: torch.Tensor | None = None
    latent_std: torch.Tensor | None = None


def check_action_dims(folder: Path, names: Sequence[str], expected: Sequence[str]) -> None:
    """Raises DatasetError when an episode's action dimension names differ from `expected` (order included)."""
    got, expected = tuple(names), tuple(expected)
    if got == expected:
        return
    if sorted(expected) == sorted(got):
        detail = "same names in a different order (reorder the columns when recording; never implicitly)"
    else:
        missing = [name for name in expected if name not in got]
        extra = [name for name in got if name not in expected]
        detail = f"missing {missing}, unexpected {extra}"
    raise DatasetError(f"{folder}: action_dim_names {got} do not match the model's {expected}: {detail}")


def check_episode(folder: Path, metadata: EpisodeMetadata, config: VideoVLAConfig) -> None:
    """Raises DatasetError when the episode in `folder` cannot train a model with `config`."""
    check_action_dims(folder, metadata.action_dim_names, config.action_dim_names)
    if not 0 <= metadata.embodiment_id < config.num_embodiments:
        raise DatasetError(
            f"{folder}: embodiment_id must be in [0, num_embodiments={config.num_embodiments}), "
            f"got {metadata.embodiment_id}"
        )


def dataset_action_rate(episodes: EpisodeDataset) -> float:
    """The one action rate (Hz) shared by all episodes; DatasetError when the dataset is empty or rates differ."""
    if len(episodes) == 0:
        raise DatasetError(f"{episodes.root}: the dataset has no episodes")
    rates: dict[float, Path] = {}
    for folder, episode in zip(episodes.episode_dirs, episodes, strict=True):
        rates.setdefault(episode.metadata.action_rate_hz, folder)
    if len(rates) > 1:
        examples = ", ".join(f"{rate} Hz ({folder.name})" for rate, folder in sorted(rates.items()))
        raise DatasetError(
            f"{episodes.root}: episodes must share one action_rate_hz (the model has one time_step), got {examples}"
        )
    return next(iter(rates))


def frame_stride_for(config: VideoVLAConfig, action_rate_hz: float) -> int:
    """Recorded steps between consecutive video frames so that frames are `config.video_frame_period` apart."""
    stride = config.video_frame_period * action_rate_hz
    if stride < 0.5 or not math.isclose(stride, round(stride), rel_tol=0.0, abs_tol=0.05):
        raise DatasetError(
            f"video_frame_period={config.video_frame_period} s is not a whole number of steps at the dataset's "
            f"{action_rate_hz} Hz ({stride:.3f} steps); pass a frame stride explicitly"
        )
    return round(stride)


def compute_action_statistics(
    episodes: EpisodeDataset, dim_names: Sequence[str], gripper_threshold: float = 0.5
) -> ActionNormalizer:
    """An `ActionNormalizer` fitted to every recorded step (1st / 99th percentiles per continuous dimension).

    Reads only each episode's episode.json and memory-mapped actions.npy, never its frames (seconds for
    thousands of episodes: benchmarks/normalization_stats.py). Episodes whose `action_dim_names` differ from
    `dim_names` raise DatasetError naming the episode.
    """
    dim_names = tuple(dim_names)
    rows = []
    for index, folder in enumerate(episodes.episode_dirs):
        check_action_dims(folder, episodes.metadata(index).action_dim_names, dim_names)
        rows.append(episodes.actions(index))
    if not rows:
        raise DatasetError(f"{episodes.root}: the dataset has no episodes to compute action statistics from")
    return ActionNormalizer.fit(np.concatenate(rows), dim_names, gripper_threshold=gripper_threshold)


class EpisodeWindowDataset(Dataset[TrainingSample]):
    """Every (episode, step) window of an episode dataset as a `TrainingSample` (see the module docstring)."""

    def __init__(
        self,
        episodes: EpisodeDataset,
        config: VideoVLAConfig,
        normalizer: ActionNormalizer,
        frame_stride: int,
    ) -> None:
        if not isinstance(frame_stride, int) or isinstance(frame_stride, bool) or frame_stride < 1:
            raise ValueError(f"frame_stride must be an int >= 1, got {frame_stride!r}")
        if tuple(normalizer.dim_names) != tuple(config.action_dim_names):
            raise DatasetError(
                f"normalizer dim_names {tuple(normalizer.dim_names)} do not match the model's "
                f"{tuple(config.action_dim_names)}"
            )
        action_rate = dataset_action_rate(episodes)
        if not math.isclose(config.time_step * action_rate, 1.0, rel_tol=1e-6):
            raise DatasetError(
                f"{episodes.root}: episodes are recorded at {action_rate} Hz (one action row every "
                f"{1.0 / action_rate:.6g} s) but the model's time_step is {config.time_step} s"
            )
        self.episodes = episodes
        self.config = config
        self.normalizer = normalizer
        self.frame_stride = frame_stride
        self.latent_cache: LatentCache | None = None
        self.windows: list[tuple[int, int]] = []
        for index, (folder, episode) in enumerate(zip(episodes.episode_dirs, episodes, strict=True)):
            check_episode(folder, episode.metadata, config)
            self.windows.extend((index, step) for step in range(episode.metadata.num_steps))

    def __len__(self) -> int:
        return len(self.windows)

    def use_latent_cache(self, cache: LatentCache) -> None:
        """From now on samples carry the cached VAE posterior of their clip instead of the clip's frames."""
        if len(cache) != len(self):
            raise DatasetError(f"latent cache {cache.folder} holds {len(cache)} windows, the dataset {len(self)}")
        self.latent_cache = cache

    def episode_lengths(self) -> list[tuple[str, int]]:
        """(episode folder name, recorded steps) of every episode, in window order."""
        return [
            (folder.name, episode.metadata.num_steps)
            for folder, episode in zip(self.episodes.episode_dirs, self.episodes, strict=True)
        ]

    def clip(self, index: int) -> torch.Tensor:
        """(3, F, H, W) float32 in [-1, 1]: the video of window `index` (see the module docstring)."""
        episode_index, step = self.windows[index]
        episode = self.episodes[episode_index]
        last = episode.metadata.num_steps - 1
        frame_indices = np.minimum(step + self.frame_stride * np.arange(self.config.train_num_frames), last)
        # One decode per distinct index: near the end of an episode many clip frames are the same frame.
        unique, inverse = np.unique(frame_indices, return_inverse=True)
        prepared = np.stack([prepare_image(np.asarray(episode.frames[i]), self.config.image_size) for i in unique])
        clip = to_model_range(prepared[inverse])  # (F, H, W, 3)
        return torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))

    def observation(self, index: int) -> torch.Tensor:
        """(3, H, W) float32 in [-1, 1]: the observation of window `index` (its clip's frame 0)."""
        episode_index, step = self.windows[index]
        frame = np.asarray(self.episodes[episode_index].frames[step])
        prepared = to_model_range(prepare_image(frame, self.config.image_size))
        return torch.from_numpy(np.ascontiguousarray(prepared.transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> TrainingSample:
        episode_index, step = self.windows[index]
        episode = self.episodes[episode_index]
        last = episode.metadata.num_steps - 1
        video: torch.Tensor | None = None
        latent_mean = latent_std = None
        if self.latent_cache is None:
            video = self.clip(index)
            observation = video[:, 0].clone()
        else:
            latent_mean, latent_std = self.latent_cache.posterior(index)
            observation = self.observation(index)

        row_indices = step + np.arange(self.config.chunk_rows)
        mask = row_indices <= last
        actions = self.normalizer.normalize(episode.actions[np.minimum(row_indices, last)])
        return TrainingSample(
            observation=observation,
            video=video,
            instruction=episode.metadata.instruction,
            actions=torch.from_numpy(actions),
            action_mask=torch.from_numpy(mask),
            embodiment_id=int(episode.metadata.embodiment_id),
            latent_mean=latent_mean,
            latent_std=latent_std,
        )


class WindowClips(Dataset[torch.Tensor]):
    """The clips of an `EpisodeWindowDataset` alone, in window order (what a latent cache encodes)."""

    def __init__(self, windows: EpisodeWindowDataset) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.windows.clip(index)


def collate_samples(samples: Sequence[TrainingSample]) -> TrainingBatch:
    """Stacks B samples into a `TrainingBatch` (observation (B, 3, H, W), video (B, 3, F, H, W), ...)."""
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    return TrainingBatch(
        observation=torch.stack([s.observation for s in samples]),
        video=_stack_optional([s.video for s in samples], "video"),
        instructions=[s.instruction for s in samples],
        actions=torch.stack([s.actions for s in samples]),
        action_mask=torch.stack([s.action_mask for s in samples]),
        embodiment_ids=torch.tensor([s.embodiment_id for s in samples], dtype=torch.int64),
        latent_mean=_stack_optional([s.latent_mean for s in samples], "latent_mean"),
        latent_std=_stack_optional([s.latent_std for s in samples], "latent_std"),
    )


def _stack_optional(tensors: Sequence[torch.Tensor | None], name: str) -> torch.Tensor | None:
    present = [t for t in tensors if t is not None]
    if not present:
        return None
    if len(present) != len(tensors):
        raise ValueError(f"collate_samples: {name} is set in {len(present)} of {len(tensors)} samples, not all")
    return torch.stack(present)


class StepBatchSampler(Sampler[list[int]]):
    """The dataset indices of this process's batch for each global step `start_step` .. `num_steps - 1`.

    The sample order is a stream of per-epoch permutations (epoch e shuffled by a generator seeded with
    (seed, e)); global step k takes stream positions [k * G, (k + 1) * G) with G = batch_size * num_replicas,
    and process `rank` takes its `batch_size` consecutive positions of those. A step's batch is thus a pure
    function of (seed, step, rank): resuming at step k needs no sampler state, and no two processes see the
    same sample in one step unless the dataset is smaller than G.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        num_steps: int,
        *,
        seed: int,
        start_step: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= start_step <= num_steps:
            raise ValueError(f"start_step must be in [0, num_steps={num_steps}], got {start_step}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.seed = seed
        self.start_step = start_step
        self.num_replicas = num_replicas
        self.rank = rank

        self._order: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """(num_samples,) int64: the sample order of one epoch."""
        # Shuffling a large dataset takes a while; consecutive steps almost always share the epoch.
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_samples))
        return self._order[1]

    def batch_for_step(self, step: int) -> list[int]:
        """This process's `batch_size` dataset indices for global step `step`."""
        first = (step * self.num_replicas + self.rank) * self.batch_size
        return [
            int(self.permutation(position // self.num_samples)[position % self.num_samples])
            for position in range(first, first + self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return self.num_steps - self.start_step
