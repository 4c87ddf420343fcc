"""`VideoVLAPolicy`: a VideoVLA checkpoint behind the numpy policy contract (`videovla_model.contract.Policy`).

Importing this module does not import torch; `load_policy` / `VideoVLAPolicy.from_pretrained` do, when a
checkpoint is actually loaded. ROS nodes therefore import it freely and stay torch-free until they hold a model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videovla_model.contract import Observation, PolicyMetadata, PolicyOutput, validate_observation
from videovla_model.processing import from_model_range, prepare_image, to_model_range

if TYPE_CHECKING:
    import torch

    from videovla_model.modeling import VideoVLAModel
    from videovla_model.rtc import ActionPrefix


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
        dtype: str = "float32",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
    ) -> VideoVLAPolicy:
        """Loads a checkpoint directory written by `VideoVLAModel.save_pretrained`."""
        from videovla_model.modeling import VideoVLAModel

        model = VideoVLAModel.from_pretrained(path, device=device, dtype=dtype)
        return cls(model, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def infer(self, observation: Observation, *, decode_video: bool = False) -> PolicyOutput:
        """Observation -> (chunk_rows, dims) float32 actions in robot units (gripper exactly 0 or 1).

        imagined_frames: (T, H, W, 3) uint8 when `decode_video`. Raises ValueError on an unusable observation.
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
                decode_video=decode_video,
                action_prefix=self._action_prefix(observation),
            )
        readout_start = time.perf_counter()
        normalized = sample.actions[0].cpu().numpy()
        actions = self.model.normalizer.unnormalize(normalized, threshold_gripper=True)
        frames = None
        if sample.video is not None:
            frames = from_model_range(sample.video[0].float().permute(1, 2, 3, 0).cpu().numpy())
        timings = dict(sample.timings)
        timings["observation_encoding"] += prepared
        timings["action_readout"] += time.perf_counter() - readout_start
        timings["total"] = time.perf_counter() - start
        return PolicyOutput(
            actions=np.ascontiguousarray(actions, dtype=np.float32), imagined_frames=frames, timings=timings
        )

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
