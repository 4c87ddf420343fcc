"""The episode dataset format: what demonstrations are stored as, and how they are written and read.

A dataset is a folder::

    <root>/dataset.json                  {"format": "videovla-episodes", "version": 1}
    <root>/episode_000000/episode.json   metadata (instruction, embodiment, action rate, dim names, ...)
    <root>/episode_000000/frames.npy     (T, H, W, 3) uint8 RGB camera frames
    <root>/episode_000000/actions.npy    (T, D) float32 actions in robot units

Step t pairs the frame observed at t with the action taken after it; the action moves the robot towards
the state seen in frame t + 1. Plain `.npy` arrays and JSON only: no pickle, readable without this code.
Episodes are written to a temporary folder and renamed into place, so an interrupted recording never
leaves a half episode behind and never touches the episodes already recorded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES

DATASET_FORMAT = "videovla-episodes"
DATASET_VERSION = 1
_EPISODE_PREFIX = "episode_"


@dataclass(frozen=True)
class EpisodeMetadata:
    """What `episode.json` holds."""

    instruction: str
    num_steps: int
    action_rate_hz: float
    """Actions (and frames) per second."""
    embodiment_id: int = 0
    action_dim_names: tuple[str, ...] = DEFAULT_ACTION_DIM_NAMES
    success: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the recorder knows (task name, seed, object placement, ...); JSON-serialisable."""


@dataclass(frozen=True)
class Episode:
    metadata: EpisodeMetadata
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB."""
    actions: np.ndarray
    """(T, D) float32, robot units, columns named by metadata.action_dim_names."""


def _check_episode_arrays(frames: np.ndarray, actions: np.ndarray, action_dim_names: Sequence[str]) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got shape {frames.shape} dtype {frames.dtype}")
    if actions.ndim != 2 or actions.shape[1] != len(action_dim_names):
        raise ValueError(
            f"actions must be (T, {len(action_dim_names)}) for dims {tuple(action_dim_names)}, got {actions.shape}"
        )
    if frames.shape[0] != actions.shape[0]:
        raise ValueError(
            f"frames and actions must have the same length T, got {frames.shape[0]} and {actions.shape[0]}"
        )
    if frames.shape[0] == 0:
        raise ValueError("an episode needs at least one step, got T = 0")
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions contain NaN or infinite values")


class EpisodeWriter:
    """Appends episodes to a dataset folder (creating it); safe to use on a dataset that already has some."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "dataset.json"
        if marker.exists():
            _check_dataset_marker(marker)
        else:
            marker.write_text(json.dumps({"format": DATASET_FORMAT, "version": DATASET_VERSION}, indent=2) + "\n")

    def write(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        instruction: str,
        action_rate_hz: float,
        *,
        embodiment_id: int = 0,
        action_dim_names: Sequence[str] = DEFAULT_ACTION_DIM_NAMES,
        success: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Stores one episode and returns its folder."""
        actions = np.asarray(actions, dtype=np.float32)
        _check_episode_arrays(frames, actions, action_dim_names)
        if not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        if not (math.isfinite(action_rate_hz) and action_rate_hz > 0):
            raise ValueError(f"action_rate_hz must be a positive number, got {action_rate_hz}")
        metadata = EpisodeMetadata(
            instruction=instruction,
            num_steps=int(actions.shape[0]),
            action_rate_hz=float(action_rate_hz),
            embodiment_id=int(embodiment_id),
            action_dim_names=tuple(action_dim_names),
            success=success,
            extra=dict(extra or {}),
        )
        staging = Path(tempfile.mkdtemp(prefix=".incoming_", dir=self.root))
        try:
            np.save(staging / "frames.npy", frames, allow_pickle=False)
            np.save(staging / "actions.npy", actions, allow_pickle=False)
            (staging / "episode.json").write_text(json.dumps(asdict(metadata), indent=2) + "\n")
            # Renaming is atomic; retrying on a name clash makes concurrent writers safe.
            while True:
                destination = self.root / episode_folder_name(_next_index(self.root))
                try:
                    staging.rename(destination)
                    return destination
                except OSError:
                    if not destination.exists():
                        raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def episode_folder_name(index: int) -> str:
    """The folder name of a dataset's episode `index` (`episode_000042`)."""
    return f"{_EPISODE_PREFIX}{index:06d}"


def _next_index(root: Path) -> int:
    indices = [int(p.name[len(_EPISODE_PREFIX) :]) for p in root.glob(f"{_EPISODE_PREFIX}*") if p.name[-6:].isdigit()]
    return max(indices, default=-1) + 1


def _check_dataset_marker(marker: Path) -> None:
    info = json.loads(marker.read_text())
    if info.get("format") != DATASET_FORMAT or info.get("version") != DATASET_VERSION:
        raise ValueError(
            f"{marker} describes format {info.get('format')!r} version {info.get('version')!r}; "
            f"expected {DATASET_FORMAT!r} version {DATASET_VERSION}"
        )


class EpisodeDataset(Sequence[Episode]):
    """Random access to the episodes of a dataset folder (arrays are memory-mapped, loaded on access)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        marker = self.root / "dataset.json"
        if not marker.exists():
            raise FileNotFoundError(f"{self.root} is not an episode dataset: {marker} is missing")
        _check_dataset_marker(marker)
        self.episode_dirs = sorted(p for p in self.root.glob(f"{_EPISODE_PREFIX}*") if p.is_dir())

    def __len__(self) -> int:
        return len(self.episode_dirs)

    def metadata(self, index: int) -> EpisodeMetadata:
        """The episode's episode.json alone."""
        raw = json.loads((self.episode_dirs[index] / "episode.json").read_text())
        raw["action_dim_names"] = tuple(raw["action_dim_names"])
        return EpisodeMetadata(**raw)

    def actions(self, index: int) -> np.ndarray:
        """(T, D) float32 actions, memory-mapped from actions.npy; the frames are never opened."""
        folder = self.episode_dirs[index]
        metadata = self.metadata(index)
        actions = np.load(folder / "actions.npy", mmap_mode="r", allow_pickle=False)
        if actions.ndim != 2 or actions.shape[1] != len(metadata.action_dim_names):
            raise ValueError(
                f"{folder}: actions must be (T, {len(metadata.action_dim_names)}) for dims "
                f"{metadata.action_dim_names}, got {actions.shape}"
            )
        if metadata.num_steps != actions.shape[0]:
            raise ValueError(
                f"{folder}: episode.json says num_steps={metadata.num_steps}, arrays have {actions.shape[0]}"
            )
        return actions

    def __getitem__(self, index: int) -> Episode:  # type: ignore[override]
        folder = self.episode_dirs[index]
        metadata = self.metadata(index)
        frames = np.load(folder / "frames.npy", mmap_mode="r", allow_pickle=False)
        actions = np.load(folder / "actions.npy", allow_pickle=False)
        try:
            _check_episode_arrays(frames, actions, metadata.action_dim_names)
        except ValueError as error:
            raise ValueError(f"{folder}: {error}") from error
        if metadata.num_steps != actions.shape[0]:
            raise ValueError(
                f"{folder}: episode.json says num_steps={metadata.num_steps}, arrays have {actions.shape[0]}"
            )
        return Episode(metadata=metadata, frames=frames, actions=actions)

    def __iter__(self) -> Iterator[Episode]:
        for index in range(len(self)):
            yield self[index]
