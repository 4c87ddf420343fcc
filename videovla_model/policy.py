"""`VideoVLAPolicy`: a VideoVLA checkpoint behind the numpy policy contract (`videovla_model.contract.Policy`).

Importing this module does not import torch; `load_policy` / `VideoVLAPolicy.from_pretrained` do, when a
checkpoint is actually loaded. ROS nodes therefore import it freely and stay torch-free until they hold a model.

dtype "auto" (the default) runs bfloat16 on a CUDA device that supports it and float32 elsewhere; bfloat16 asked
for on a GPU without it is refused in one line before the checkpoint is read. A LoRA adapter folder
(`videovla-train --lora-rank`) loads as its base with the adapter merged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videovla_model.contract import Observation, PolicyMetadata, PolicyOutput, validate_observation
from videovla_model.processing import from_model_range, prepare_image, to_model_range

if TYPE_CHECKING:
    import torch

    from videovla_model.modeling import VideoVLAModel
    from videovla_model.rtc import ActionPrefix

POLICY_DTYPES = ("auto", "float32", "bfloat16", "float16")


def choose_dtype(requested: str, device_type: str, bf16_supported: bool) -> str:
    """The dtype a policy runs in: `requested`, or for "auto" bfloat16 on CUDA with bf16 support, else float32.

    Raises ValueError (one line) for an unknown dtype or bfloat16 on a GPU without bf16 support.
    """
    if requested not in POLICY_DTYPES:
        raise ValueError(f"dtype must be one of {list(POLICY_DTYPES)}, got {requested!r}")
    if requested == "auto":
        return "bfloat16" if device_type == "cuda" and bf16_supported else "float32"
    if requested == "bfloat16" and device_type == "cuda" and not bf16_supported:
        raise ValueError(
            "dtype bfloat16 needs a GPU with bfloat16 support (compute capability 8.0+, e.g. A100, L4, H100); this "
            "GPU has none: use dtype float16 or float32"
        )
    return requested


def device_dtype(requested: str, device: str) -> str:
    """`choose_dtype` for a torch device name, asking CUDA whether it runs bfloat16 natively."""
    import torch

    device_type = torch.device(device).type
    supported = device_type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return choose_dtype(requested, device_type, supported)


@dataclass(frozen=True)
class _Imagination:
    """The handle `infer(imagine=True)` returns: the sampled video latents, (1, F, C, h, w) on the model's device."""

    video_latents: torch.Tensor


class VideoVLAPolicy:
    """One action chunk per observation from a `VideoVLAModel`.

    Sampling options left as None come from the checkpoint's config. With `seed` set, the sequence of answers
    is reproducible (one generator drawn from across calls); calls are serialised by a lock, so the policy may be
    shared between executor threads.
    """

    def __init__(
        self,
        model: VideoVLAModel,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
    ) -> None:
        import torch

        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale is not None and not guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables guidance), got {guidance_scale}")
        self.model = model.eval()
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self._generator: torch.Generator | None = None
        if seed is not None:
            self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._lock = threading.Lock()
        config = model.config
        self._metadata = PolicyMetadata(
            action_dim_names=config.action_dim_names,
            chunk_rows=config.chunk_rows,
            execute_rows=config.execute_rows,
            time_step=config.time_step,
            image_size=config.image_size,
            embodiment_ids=tuple(range(config.num_embodiments)),
            imagined_frame_period=config.video_frame_period,
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cpu",
        dtype: str = "auto",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
    ) -> VideoVLAPolicy:
        """Loads a checkpoint directory written by `VideoVLAModel.save_pretrained`, or a LoRA adapter folder."""
        from videovla_model.lora import is_adapter, load_merged_model
        from videovla_model.modeling import VideoVLAModel

        resolved = device_dtype(dtype, device)
        if is_adapter(path):
            model = load_merged_model(path, device=device, dtype=resolved)
        else:
            model = VideoVLAModel.from_pretrained(path, device=device, dtype=resolved)
        return cls(model, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        """Observation -> (chunk_rows, dims) float32 actions in robot units (gripper exactly 0 or 1).

        With `imagine`, the output carries the imagined video's latents for `decode_imagination`; nothing is
        decoded here, so the chunk is ready as soon as denoising ends. Raises ValueError on an unusable observation.
        """
        import torch

        start = time.perf_counter()
        validate_observation(observation, self._metadata)
        image = prepare_image(observation.image, self._metadata.image_size)
        pixels = torch.from_numpy(to_model_range(image)).permute(2, 0, 1)[None]
        prepared = time.perf_counter() - start
        with self._lock:
            sample = self.model.sample(
                pixels,
                [observation.instruction],
                embodiment_ids=[observation.embodiment_id],
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=self._generator,
                decode_video=False,
                action_prefix=self._action_prefix(observation),
            )
        readout_start = time.perf_counter()
        normalized = sample.actions[0].cpu().numpy()
        actions = self.model.normalizer.unnormalize(normalized, threshold_gripper=True)
        timings = dict(sample.timings)
        timings.pop("video_decoding", None)
        timings["observation_encoding"] += prepared
        timings["action_readout"] += time.perf_counter() - readout_start
        timings["total"] = time.perf_counter() - start
        return PolicyOutput(
            actions=np.ascontiguousarray(actions, dtype=np.float32),
            timings=timings,
            imagination=_Imagination(sample.video_latents) if imagine else None,
        )

    def decode_imagination(self, output: PolicyOutput) -> np.ndarray | None:
        """(T, H, W, 3) uint8 frames of the video `infer(imagine=True)` imagined; None when it imagined none."""
        handle = output.imagination
        if handle is None:
            return None
        if not isinstance(handle, _Imagination):
            raise ValueError(f"output.imagination was not made by a VideoVLAPolicy, got {type(handle).__name__}")
        with self._lock:
            video = self.model.decode_latents(handle.video_latents)
        return from_model_range(video[0].float().permute(1, 2, 3, 0).cpu().numpy())

    def _action_prefix(self, observation: Observation) -> ActionPrefix | None:
        """The observation's prefix (robot units) normalised for the sampler, with the soft-mask weights."""
        import torch

        from videovla_model.rtc import ActionPrefix, prefix_weights

        if observation.action_prefix is None or len(observation.action_prefix) == 0:
            return None
        normalized = self.model.normalizer.normalize(observation.action_prefix)
        weights = prefix_weights(len(normalized), observation.inference_delay_rows)
        return ActionPrefix(actions=torch.from_numpy(normalized)[None], weights=torch.from_numpy(weights)[None])


# The ROS nodes' entry point (what `policy_node`'s `checkpoint` parameter goes through).
load_policy = VideoVLAPolicy.from_pretrained
