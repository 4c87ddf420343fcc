"""Action normalisation to the model's [-1, 1] range and back (numpy + JSON, no torch).

Continuous dimensions use per-dimension 1st / 99th percentiles of the training actions as low / high
(robust to outliers; values beyond them are clipped to [-1, 1]). Gripper dimensions are not fitted: the gripper
is always 0 = closed .. 1 = open, mapped linearly to [-1, 1], and on output thresholded back to exactly 0 or 1.
A dimension that never moves in the data (high == low) normalises to 0 and un-normalises to its constant value.

Rotation convention: rotation deltas are extrinsic XYZ Euler angles in radians (see
`videovla_model.configuration.ROTATION_CONVENTION`). Per-step deltas are small (far from +-pi), so each angle is
normalised independently like any other dimension; there is no wrap-around handling because none is needed at
these magnitudes, and the dimension order is stored with the statistics so it is never implicit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORMALIZATION_NAME = "normalization.json"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ActionNormalizer:
    """Affine per-dimension map between robot-unit actions (..., D) and normalised actions in [-1, 1].

    low / high: (D,) robot-unit values that map to -1 / +1 (for gripper dims always 0 / 1).
    gripper_dims: indices of gripper dimensions (thresholded at `gripper_threshold` on un-normalise).
    """

    dim_names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    gripper_dims: tuple[int, ...] = ()
    gripper_threshold: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_names", tuple(self.dim_names))
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        object.__setattr__(self, "gripper_dims", tuple(int(i) for i in self.gripper_dims))
        dims = len(self.dim_names)
        if dims == 0:
            raise ValueError("ActionNormalizer.dim_names must name at least one dimension")
        if len(self.low) != dims or len(self.high) != dims:
            raise ValueError(
                f"ActionNormalizer.low/high must have {dims} values (one per dim_names entry), "
                f"got {len(self.low)} and {len(self.high)}"
            )
        for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise ValueError(
                    f"ActionNormalizer low/high for dimension {self.dim_names[i]!r} must be finite with "
                    f"high >= low, got low={lo}, high={hi}"
                )
        for i in self.gripper_dims:
            if not 0 <= i < dims:
                raise ValueError(f"ActionNormalizer.gripper_dims must be indices in [0, {dims}), got {i}")
        if not 0.0 < self.gripper_threshold < 1.0:
            raise ValueError(f"ActionNormalizer.gripper_threshold must be in (0, 1), got {self.gripper_threshold}")

    # Construction -------------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        actions: np.ndarray,
        dim_names: Sequence[str],
        gripper_dims: Sequence[int] | None = None,
        gripper_threshold: float = 0.5,
        lower_percentile: float = 1.0,
        upper_percentile: float = 99.0,
    ) -> ActionNormalizer:
        """Statistics from training actions (N, D) in robot units.

        gripper_dims: None picks the dimensions whose name contains "gripper".
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != len(dim_names):
            raise ValueError(
                f"actions must have shape (N, {len(dim_names)}) to match dim_names {tuple(dim_names)}, "
                f"got {actions.shape}"
            )
        if actions.shape[0] == 0:
            raise ValueError("actions must contain at least one row to fit an ActionNormalizer")
        if not np.all(np.isfinite(actions)):
            bad = sorted({dim_names[j] for j in np.nonzero(~np.isfinite(actions))[1]})
            raise ValueError(f"actions contain NaN or infinite values in dimensions {bad}")
        if gripper_dims is None:
            gripper_dims = [i for i, name in enumerate(dim_names) if "gripper" in name.lower()]
        low = np.percentile(actions, lower_percentile, axis=0)
        high = np.percentile(actions, upper_percentile, axis=0)
        for i in gripper_dims:
            low[i], high[i] = 0.0, 1.0
        return cls(tuple(dim_names), tuple(low), tuple(high), tuple(gripper_dims), gripper_threshold)

    @classmethod
    def identity(
        cls, dim_names: Sequence[str], gripper_dims: Sequence[int] = (), gripper_threshold: float = 0.5
    ) -> ActionNormalizer:
        """The map of an untrained model: continuous dims already in [-1, 1], gripper 0..1."""
        low = [0.0 if i in gripper_dims else -1.0 for i in range(len(dim_names))]
        high = [1.0] * len(dim_names)
        return cls(tuple(dim_names), tuple(low), tuple(high), tuple(gripper_dims), gripper_threshold)

    # Mapping ------------------------------------------------------------------------------------------------

    @property
    def action_dims(self) -> int:
        return len(self.dim_names)

    def _check(self, actions: np.ndarray, name: str) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.ndim < 1 or actions.shape[-1] != self.action_dims:
            raise ValueError(
                f"{name} must have last dimension {self.action_dims} ({self.dim_names}), got shape {actions.shape}"
            )
        return actions.astype(np.float64)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) robot units -> (..., D) float32 in [-1, 1] (clipped)."""
        actions = self._check(actions, "actions")
        low = np.asarray(self.low)
        span = np.asarray(self.high) - low
        degenerate = span <= 0
        # Degenerate dims carry no information; mapping them to 0 avoids dividing by zero.
        scaled = np.where(degenerate, 0.0, (actions - low) / np.where(degenerate, 1.0, span) * 2.0 - 1.0)
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def unnormalize(self, normalized: np.ndarray, threshold_gripper: bool = True) -> np.ndarray:
        """(..., D) normalised -> (..., D) float32 robot units; gripper dims become exactly 0 or 1 when asked."""
        normalized = np.clip(self._check(normalized, "normalized actions"), -1.0, 1.0)
        low = np.asarray(self.low)
        span = np.asarray(self.high) - low
        actions = (normalized + 1.0) / 2.0 * span + low
        if threshold_gripper and self.gripper_dims:
            grip = list(self.gripper_dims)
            actions[..., grip] = (actions[..., grip] >= self.gripper_threshold).astype(np.float64)
        return actions.astype(np.float32)

    # Persistence --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        return {
            "format_version": _FORMAT_VERSION,
            "dim_names": list(self.dim_names),
            "low": list(self.low),
            "high": list(self.high),
            "gripper_dims": list(self.gripper_dims),
            "gripper_threshold": self.gripper_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ActionNormalizer:
        version = data.get("format_version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"normalization format_version must be {_FORMAT_VERSION}, got {version!r}")
        missing = sorted({"dim_names", "low", "high"} - set(data))
        if missing:
            raise ValueError(f"normalization statistics are missing keys {missing}")
        return cls(
            dim_names=tuple(data["dim_names"]),  # type: ignore[arg-type]
            low=tuple(data["low"]),  # type: ignore[arg-type]
            high=tuple(data["high"]),  # type: ignore[arg-type]
            gripper_dims=tuple(data.get("gripper_dims", ())),  # type: ignore[arg-type]
            gripper_threshold=float(data.get("gripper_threshold", 0.5)),  # type: ignore[arg-type]
        )

    def save(self, path: str | Path) -> Path:
        """Writes JSON to `path` (a directory gets `normalization.json`); returns the file's path."""
        path = Path(path)
        if path.is_dir():
            path = path / NORMALIZATION_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ActionNormalizer:
        """Reads JSON written by `save` (a directory means its `normalization.json`)."""
        path = Path(path)
        if path.is_dir():
            path = path / NORMALIZATION_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no action normalisation statistics at {path}")
        return cls.from_dict(json.loads(path.read_text()))
