"""The numpy-in / numpy-out policy contract between the model and everything that runs it.

ROS nodes, the policy server, recorders and evaluation scripts hold a `Policy` and nothing else, so a
VideoVLA checkpoint, a remote policy or a scripted expert can stand in for each other. This module imports
only numpy: holders of a policy never pay for torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# The suite's action layout (see videovla_msgs/msg/ActionChunk.msg). Translation in metres, rotation as
# extrinsic XYZ Euler deltas in radians, gripper 0 = closed .. 1 = open.
DEFAULT_ACTION_DIM_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


@dataclass(frozen=True)
class PolicyMetadata:
    """What a policy produces, so consumers never assume the layout of an action row."""

    action_dim_names: tuple[str, ...]
    chunk_rows: int
    execute_rows: int
    time_step: float
    """Seconds between consecutive action rows."""
    image_size: tuple[int, int]
    """(height, width) the policy works at; other input sizes are resized by `videovla_model.processing`."""
    embodiment_ids: tuple[int, ...] = (0,)
    imagined_frame_period: float = 0.0
    """Seconds between imagined video frames; 0 when the policy does not imagine video."""

    def __post_init__(self) -> None:
        if not self.action_dim_names:
            raise ValueError("PolicyMetadata.action_dim_names must name at least one dimension")
        if len(set(self.action_dim_names)) != len(self.action_dim_names):
            raise ValueError(f"PolicyMetadata.action_dim_names has duplicates: {self.action_dim_names}")
        if self.chunk_rows < 1:
            raise ValueError(f"PolicyMetadata.chunk_rows must be >= 1, got {self.chunk_rows}")
        if not 1 <= self.execute_rows <= self.chunk_rows:
            raise ValueError(
                f"PolicyMetadata.execute_rows must be in [1, chunk_rows={self.chunk_rows}], got {self.execute_rows}"
            )
        if not (math.isfinite(self.time_step) and self.time_step > 0):
            raise ValueError(f"PolicyMetadata.time_step must be a positive number of seconds, got {self.time_step}")

    @property
    def action_dims(self) -> int:
        return len(self.action_dim_names)


@dataclass(frozen=True)
class Observation:
    """One policy input.

    image: (H, W, 3) uint8 RGB camera frame, any size (see `videovla_model.processing.prepare_image`).
    instruction: the language instruction, e.g. "pick up the red cube".
    embodiment_id: which robot the actions are for (one of `PolicyMetadata.embodiment_ids`).
    action_prefix: real-time chunking (videovla_model.rtc): (P, action_dims) rows, P <= chunk_rows, in robot
        units and in the answer's own frame: row i is the per-step delta the arm will execute from the target
        at capture + i * time_step to the one at capture + (i + 1) * time_step, starting from its pose at the
        image's capture time, exactly as row i of the answer would be (see videovla_ros.realtime_chunking).
        The answer's first rows then continue what the arm is doing. None: no constraint. Policies that
        cannot inpaint ignore it.
    inference_delay_rows: how many leading prefix rows will surely have executed when the answer arrives
        (kept exactly); the remaining prefix rows are followed with decaying weight.
    """

    image: np.ndarray
    instruction: str
    embodiment_id: int = 0
    action_prefix: np.ndarray | None = None
    inference_delay_rows: int = 0


@dataclass(frozen=True)
class PolicyOutput:
    """One policy answer.

    actions: (chunk_rows, action_dims) float32 in robot units (un-normalised, gripper thresholded).
    timings: seconds per stage (e.g. "text_encoding", "observation_encoding", "denoising", "total"); every
        policy reports at least "total".
    imagination: an opaque handle on the imagined future (for VideoVLA: its video latents), set when `infer` was
        asked to `imagine`; only the policy that made it can turn it into frames (`Policy.decode_imagination`).
    """

    actions: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    imagination: object | None = None


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an observation into an action chunk.

    Control never waits for the imagined video: `infer` returns the chunk as soon as it exists, and decoding the
    imagination (seconds for a large VAE) is a second call the caller makes after it has used the chunk.
    """

    @property
    def metadata(self) -> PolicyMetadata: ...

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        """Predicts one action chunk; with `imagine`, the output also carries a handle on the imagined video."""
        ...

    def decode_imagination(self, output: PolicyOutput) -> np.ndarray | None:
        """(T, H, W, 3) uint8 RGB frames of `output.imagination`; None when the output has none."""
        ...


def validate_observation(observation: Observation, metadata: PolicyMetadata) -> None:
    """Raises ValueError naming the field and what was expected when an observation is unusable."""
    image = observation.image
    if not isinstance(image, np.ndarray):
        raise ValueError(f"observation.image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"observation.image must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"observation.image must have shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"observation.image must not be empty, got shape {image.shape}")
    if not isinstance(observation.instruction, str) or not observation.instruction.strip():
        raise ValueError(f"observation.instruction must be a non-empty string, got {observation.instruction!r}")
    if observation.embodiment_id not in metadata.embodiment_ids:
        raise ValueError(
            f"observation.embodiment_id must be one of {metadata.embodiment_ids}, got {observation.embodiment_id}"
        )
    _validate_prefix(observation, metadata)


def _validate_prefix(observation: Observation, metadata: PolicyMetadata) -> None:
    prefix = observation.action_prefix
    if prefix is None:
        if observation.inference_delay_rows != 0:
            raise ValueError("observation.inference_delay_rows must be 0 without an action_prefix")
        return
    if not isinstance(prefix, np.ndarray) or prefix.ndim != 2 or prefix.shape[1] != metadata.action_dims:
        shape = getattr(prefix, "shape", type(prefix).__name__)
        raise ValueError(f"observation.action_prefix must be a (rows, {metadata.action_dims}) array, got {shape}")
    if prefix.shape[0] > metadata.chunk_rows:
        raise ValueError(
            f"observation.action_prefix must have at most chunk_rows={metadata.chunk_rows} rows, got {prefix.shape[0]}"
        )
    if not np.issubdtype(prefix.dtype, np.floating) or not np.all(np.isfinite(prefix)):
        raise ValueError("observation.action_prefix must hold finite floating-point values")
    if not 0 <= observation.inference_delay_rows <= prefix.shape[0]:
        raise ValueError(
            f"observation.inference_delay_rows must be in [0, {prefix.shape[0]}] (the prefix rows), "
            f"got {observation.inference_delay_rows}"
        )


def validate_output(output: PolicyOutput, metadata: PolicyMetadata) -> None:
    """Raises ValueError when a policy answer does not match its own metadata (shape, dtype, finiteness)."""
    expected = (metadata.chunk_rows, metadata.action_dims)
    if output.actions.shape != expected:
        raise ValueError(f"policy actions must have shape {expected}, got {output.actions.shape}")
    if not np.all(np.isfinite(output.actions)):
        raise ValueError("policy actions contain NaN or infinite values")


def validate_frames(frames: np.ndarray) -> None:
    """Raises ValueError unless decoded imagination `frames` are (T, H, W, 3) uint8."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"imagined frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
