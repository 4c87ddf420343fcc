"""The VideoVLA model configuration: frozen dataclasses, saved as `config.json` beside the weights.

Only model, inference and loss settings live here (the transformer, VAE, text, diffusion and loss parts in
`component_configs`); optimiser and schedule settings belong to training.
Every field is validated in `__post_init__`, and every error names the field, the value and what is allowed,
so a bad YAML or JSON file fails at load time instead of deep inside a forward pass.

Presets (`VideoVLAConfig.preset(name)`):
    "cogvideox-5b": the paper's model (CogVideoX-5B image-to-video DiT, T5-v1.1-XXL, the CogVideoX VAE), with the
        public VideoVLA code's positional table, rotary grid, action head, zero unconditional text, 100 embodiments
        and dynamic guidance.
    "small": a CPU-trainable model for the simulated arm's default checkpoint (a few MB).
    "tiny": trains and samples on 2 CPU cores in seconds; for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videovla_model.component_configs import (
    DiffusionConfig,
    LossConfig,
    TextConfig,
    TransformerConfig,
    VAEConfig,
    require,
    require_positive_int,
)
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES

CONFIG_NAME = "config.json"

ROTATION_CONVENTION = (
    "rotation deltas are extrinsic XYZ Euler angles in radians (roll about x, then pitch about y, then yaw "
    "about z, all about the fixed base frame), applied to the end-effector orientation at capture time"
)

AttentionMode = Literal["bidirectional", "causal"]
UnconditionalText = Literal["empty_prompt", "zeros"]

# Conditioning layers a trained model can grow (`VideoVLAModel.with_added_conditioning`): each starts with a zero
# output, so the grown model acts exactly as the trained one until it is trained further.
ADDABLE_CONDITIONING = ("text_modulation", "instruction_mixes_observation", "observation_film")


@dataclass(frozen=True)
class VideoVLAConfig:
    """Everything needed to build, train and run one VideoVLA model.

    image_height / image_width: the frames the model sees (divisible by VAE compression * patch size).
    train_num_frames / sample_num_frames: video frames (4k + 1, the causal VAE's rule) in a training clip and in
        the imagined clip at inference; frame 0 is the observation itself.
    video_frame_period: seconds between consecutive video frames of a clip.
    chunk_rows / action_dim_names: the action chunk (rows x dims), in the checkpoint's dimension order.
    execute_rows: rows a controller executes before re-planning.
    time_step: seconds between consecutive action rows.
    attention_mode: "bidirectional" (the paper) or "causal" (video tokens cannot attend to action tokens).
    normalize_condition: standardise the observation latent per channel and latent pixel with training-set
        statistics before it conditions the transformer (`condition_normalization`); for models trained from
        scratch on one fixed camera, off for pre-trained CogVideoX backbones.
    normalize_text: standardise the instruction's T5 embedding per token position and channel with the statistics
        of the training instructions (`condition_normalization`); for a T5 that was not trained on language (the
        `small` preset's), off for pre-trained ones.
    text_modulation: the mean-pooled instruction embedding also modulates every token, through a small learned MLP
        whose output is added to the timestep embedding (as SD3 adds its pooled text vector), so the instruction
        can re-weight image features in every block instead of only being attended to; its output starts at zero.
    unconditional_text: what the transformer sees for a dropped instruction (training) and in the unconditional
        pass of guidance: "empty_prompt" is T5("") as in diffusers' CogVideoX pipelines, "zeros" a zero embedding
        as in the public VideoVLA.
    instruction_mixes_observation: the mean-pooled instruction embedding also generates a per-instruction 1 x 1
        mixing of the observation latent's channels (latent += M(instruction) @ latent at every latent pixel, M from
        a small MLP whose output starts at zero), as RT-1 conditions its image encoder on language: the named
        object's colour can then stand out in the tokens the blocks attend to, so finding it needs no
        instruction-dependent attention pattern.
    observation_film: a FiLM convolutional encoder of the observation pixels (stride-2 convolutions down to the
        latent's resolution, each scaled and shifted per channel by the mean-pooled instruction embedding, as RT-1
        conditions its image encoder on language) adds its output to the observation latent; the output layer
        starts at zero. The VAE latent alone keeps colours but not which object is named; this path gives the
        tokens "the named object is here" features before the first block.
    """

    name: str = "custom"
    image_height: int = 256
    image_width: int = 256
    train_num_frames: int = 49
    sample_num_frames: int = 13
    video_frame_period: float = 0.1
    chunk_rows: int = 6
    action_dim_names: tuple[str, ...] = DEFAULT_ACTION_DIM_NAMES
    execute_rows: int = 3
    time_step: float = 0.1
    gripper_threshold: float = 0.5
    num_embodiments: int = 1
    attention_mode: AttentionMode = "bidirectional"
    normalize_condition: bool = False
    normalize_text: bool = False
    text_modulation: bool = False
    instruction_mixes_observation: bool = False
    observation_film: bool = False
    unconditional_text: UnconditionalText = "empty_prompt"
    rotation_convention: str = ROTATION_CONVENTION
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_dim_names", tuple(self.action_dim_names))
        require_positive_int("image_height", self.image_height)
        require_positive_int("image_width", self.image_width)
        multiple = self.vae.spatial_compression * self.transformer.patch_size
        for name in ("image_height", "image_width"):
            value = getattr(self, name)
            require(
                value % multiple == 0,
                name,
                value,
                f"divisible by vae spatial compression * patch size = {self.vae.spatial_compression} * "
                f"{self.transformer.patch_size} = {multiple}",
            )
        for name in ("train_num_frames", "sample_num_frames"):
            value = getattr(self, name)
            require_positive_int(name, value)
            require(
                (value - 1) % self.vae.temporal_compression_ratio == 0,
                name,
                value,
                f"{self.vae.temporal_compression_ratio}k + 1 video frames (the causal VAE's rule), e.g. 5, 13, 49",
            )
        require(
            math.isfinite(self.video_frame_period) and self.video_frame_period > 0,
            "video_frame_period",
            self.video_frame_period,
            "a positive number of seconds",
        )
        require_positive_int("chunk_rows", self.chunk_rows)
        require(
            len(self.action_dim_names) >= 1 and all(isinstance(n, str) and n for n in self.action_dim_names),
            "action_dim_names",
            self.action_dim_names,
            "a non-empty tuple of non-empty strings",
        )
        require(
            len(set(self.action_dim_names)) == len(self.action_dim_names),
            "action_dim_names",
            self.action_dim_names,
            "unique names",
        )
        require_positive_int("execute_rows", self.execute_rows)
        require(
            self.execute_rows <= self.chunk_rows,
            "execute_rows",
            self.execute_rows,
            f"<= chunk_rows={self.chunk_rows}",
        )
        require(math.isfinite(self.time_step) and self.time_step > 0, "time_step", self.time_step, "a positive number")
        require(0.0 < self.gripper_threshold < 1.0, "gripper_threshold", self.gripper_threshold, "in (0, 1)")
        require_positive_int("num_embodiments", self.num_embodiments)
        require(
            self.attention_mode in ("bidirectional", "causal"),
            "attention_mode",
            self.attention_mode,
            "'bidirectional' or 'causal'",
        )
        for name in ("normalize_condition", "normalize_text", *ADDABLE_CONDITIONING):
            require(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")
        require(
            self.unconditional_text in ("empty_prompt", "zeros"),
            "unconditional_text",
            self.unconditional_text,
            "'empty_prompt' or 'zeros'",
        )

    # Derived sizes -------------------------------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the frames the model sees."""
        return (self.image_height, self.image_width)

    @property
    def action_dims(self) -> int:
        return len(self.action_dim_names)

    @property
    def latent_height(self) -> int:
        return self.image_height // self.vae.spatial_compression

    @property
    def latent_width(self) -> int:
        return self.image_width // self.vae.spatial_compression

    @property
    def train_latent_frames(self) -> int:
        return self.latent_frames(self.train_num_frames)

    @property
    def sample_latent_frames(self) -> int:
        return self.latent_frames(self.sample_num_frames)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames the causal VAE makes of `num_frames` (4k + 1) video frames."""
        return (num_frames - 1) // self.vae.temporal_compression_ratio + 1

    @property
    def gripper_dims(self) -> tuple[int, ...]:
        """Indices of action dimensions whose name contains "gripper" (0 = closed .. 1 = open)."""
        return tuple(i for i, name in enumerate(self.action_dim_names) if "gripper" in name.lower())

    # Presets and serialisation -------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> VideoVLAConfig:
        """One of `PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown VideoVLAConfig preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoVLAConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them (a typo must not be ignored)."""
        nested = {
            "transformer": TransformerConfig,
            "vae": VAEConfig,
            "text": TextConfig,
            "diffusion": DiffusionConfig,
            "loss": LossConfig,
        }
        _check_keys("VideoVLAConfig", data, cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in nested:
                if not isinstance(value, dict):
                    raise ValueError(f"config field {key!r} must be a JSON object, got {type(value).__name__}")
                _check_keys(key, value, nested[key])
                sub = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                kwargs[key] = nested[key](**sub)
            else:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def save(self, path_dir: str | Path) -> Path:
        """Writes `config.json` into `path_dir` (created if needed); returns the file's path."""
        directory = Path(path_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path_dir: str | Path) -> VideoVLAConfig:
        """Reads `config.json` from `path_dir` (or the file itself when given one)."""
        path = Path(path_dir)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no VideoVLA config at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(data)


def _check_keys(where: str, data: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} config keys {unknown}; allowed: {sorted(known)}")


PRESETS: dict[str, VideoVLAConfig] = {
    # The public VideoVLA (SAT code and videovla_config.yaml) where it differs from diffusers' CogVideoX.
    "cogvideox-5b": VideoVLAConfig(
        name="cogvideox-5b",
        num_embodiments=100,
        unconditional_text="zeros",
        transformer=TransformerConfig(
            learned_positional_embeddings=True, rotary_grid="integer", action_final_norm=True, action_norm_eps=1e-6
        ),
        diffusion=DiffusionConfig(dynamic_guidance=True),
    ),
    "small": VideoVLAConfig(
        name="small",
        image_height=64,
        image_width=64,
        train_num_frames=9,
        # An odd number of latents decodes to whole frame periods (an even one stretches the first latent).
        sample_num_frames=9,
        normalize_condition=True,
        normalize_text=True,
        text_modulation=True,
        transformer=TransformerConfig(
            num_layers=4,
            num_attention_heads=4,
            attention_head_dim=32,
            time_embed_dim=128,
            sample_height=8,
            sample_width=8,
        ),
        vae=VAEConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=1, latent_channels=8, norm_num_groups=8),
        text=TextConfig(
            tokenizer="byt5", max_length=48, d_model=64, num_layers=2, num_heads=4, d_kv=16, d_ff=128, vocab_size=384
        ),
        diffusion=DiffusionConfig(num_inference_steps=10, guidance_scale=3.0),
    ),
    "tiny": VideoVLAConfig(
        name="tiny",
        image_height=64,
        image_width=64,
        train_num_frames=5,
        sample_num_frames=5,
        transformer=TransformerConfig(
            num_layers=2,
            num_attention_heads=2,
            attention_head_dim=16,
            time_embed_dim=32,
            sample_height=8,
            sample_width=8,
        ),
        vae=VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4),
        text=TextConfig(
            tokenizer="byt5", max_length=32, d_model=32, num_layers=2, num_heads=4, d_kv=8, d_ff=64, vocab_size=384
        ),
        diffusion=DiffusionConfig(num_inference_steps=4, guidance_scale=2.0),
    ),
}
