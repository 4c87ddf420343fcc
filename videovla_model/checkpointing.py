"""Checkpoint I/O for `VideoVLAModel` (`CheckpointMixin`): save / load, initialisation from a diffusers CogVideoX
image-to-video directory, and growing a trained model by conditioning layers.

Checkpoint layout (`save_pretrained` / `from_pretrained`; safetensors and JSON only, never pickle):

    config.json             VideoVLAConfig
    model.safetensors       the transformer (CogVideoX backbone under "backbone." + the action layers)
    normalization.json      ActionNormalizer statistics, with the action dimension names
    condition_normalization.safetensors
                            observation-latent statistics (only with config.normalize_condition)
    text_normalization.safetensors
                            instruction-embedding statistics (only with config.normalize_text)
    vae/                    AutoencoderKLCogVideoX (diffusers save_pretrained)
    text_encoder/           T5EncoderModel (transformers save_pretrained)
    tokenizer/              the T5 tokenizer
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKLCogVideoX
from safetensors.torch import save_file
from torch import nn
from transformers import T5EncoderModel

from videovla_model.condition_normalization import (
    CONDITION_NORMALIZATION_NAME,
    TEXT_NORMALIZATION_NAME,
    ConditionNormalizer,
)
from videovla_model.configuration import ADDABLE_CONDITIONING, VideoVLAConfig
from videovla_model.normalization import NORMALIZATION_NAME, ActionNormalizer
from videovla_model.text import build_tokenizer
from videovla_model.transformer import VideoVLATransformer, cogvideox_transformer_kwargs, positional_table_length
from videovla_model.weights import assert_materialized, check_state_dict, load_safetensors

if TYPE_CHECKING:
    from videovla_model.modeling import VideoVLAModel

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "text_encoder"
TOKENIZER_DIR = "tokenizer"

# Stock CogVideoX config fields that must agree with the VideoVLA config for the weights to mean the same thing
# (sample_height / sample_width set the base grid of the rotary positions the backbone was trained with).
_BACKBONE_FIELDS = (
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "time_embed_dim",
    "text_embed_dim",
    "num_layers",
    "attention_bias",
    "patch_size",
    "activation_fn",
    "timestep_activation_fn",
    "norm_eps",
    "sample_height",
    "sample_width",
)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "float32" / "bfloat16" / "float16" (or a torch.dtype) -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


class CheckpointMixin:
    """`save_pretrained`, `from_pretrained`, `from_cogvideox` and `with_added_conditioning` for `VideoVLAModel`."""

    def save_pretrained(self: VideoVLAModel, directory: str | Path) -> Path:
        """Writes the checkpoint layout in the module doc; returns the directory."""
        if self.tokenizer is None:
            raise RuntimeError("cannot save a model without a tokenizer (config.text.tokenizer='t5' needs one)")
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.config.save(root)
        state = {name: tensor.detach().contiguous() for name, tensor in self.transformer.state_dict().items()}
        save_file(state, str(root / WEIGHTS_NAME), metadata={"format": "pt", "config_name": self.config.name})
        self.vae.save_pretrained(str(root / VAE_DIR), safe_serialization=True)
        self.text_encoder.save_pretrained(str(root / TEXT_ENCODER_DIR))
        self.tokenizer.save_pretrained(str(root / TOKENIZER_DIR))
        self.normalizer.save(root / NORMALIZATION_NAME)
        if self.config.normalize_condition:
            self.condition_normalizer.save(root / CONDITION_NORMALIZATION_NAME)
        if self.config.normalize_text:
            self.text_normalizer.save(root / TEXT_NORMALIZATION_NAME)
        return root

    @classmethod
    def from_pretrained(
        cls: type[VideoVLAModel],
        directory: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> VideoVLAModel:
        """Loads a checkpoint written by `save_pretrained`, in eval mode on `device` in `dtype`.

        Raises CheckpointMismatchError naming tensors when the weights do not fit the saved config.
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"no VideoVLA checkpoint directory at {root}")
        config = VideoVLAConfig.load(root)
        torch_dtype = resolve_dtype(dtype)
        tokenizer = build_tokenizer(config.text, root / TOKENIZER_DIR)
        text_encoder = T5EncoderModel.from_pretrained(str(root / TEXT_ENCODER_DIR), dtype=torch_dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(str(root / VAE_DIR), torch_dtype=torch_dtype)
        transformer = load_transformer(config, root / WEIGHTS_NAME)
        normalizer = ActionNormalizer.load(root / NORMALIZATION_NAME)
        model = cls(
            config,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            normalizer=normalizer,
            condition_normalizer=_load_statistics(
                root,
                config.normalize_condition,
                "normalize_condition",
                CONDITION_NORMALIZATION_NAME,
                "observation latent",
            ),
            text_normalizer=_load_statistics(
                root, config.normalize_text, "normalize_text", TEXT_NORMALIZATION_NAME, "instruction embedding"
            ),
        )
        return model.to(device=device, dtype=torch_dtype).eval()

    def with_added_conditioning(self: VideoVLAModel, flags: Sequence[str]) -> VideoVLAModel:
        """This model with the conditioning layers `flags` names (any of `ADDABLE_CONDITIONING`, each off now)
        switched on. The new layers' outputs start at zero, so the new model samples exactly as this one until it
        is trained; it shares every other module and statistic with this one."""
        unknown = [flag for flag in flags if flag not in ADDABLE_CONDITIONING]
        if unknown:
            raise ValueError(
                f"cannot add {unknown}: the conditioning layers that can be added are {ADDABLE_CONDITIONING}"
            )
        already = [flag for flag in flags if getattr(self.config, flag)]
        if already:
            raise ValueError(f"cannot add {already}: this model has them already")
        config = dataclasses.replace(self.config, **dict.fromkeys(flags, True))
        with torch.device("meta"):
            transformer = VideoVLATransformer(config)
        # Every added layer gets its initialisation; the ones this model has are then replaced by copies of its own.
        initialise_added_layers(transformer)
        trained = {name: tensor.detach().clone() for name, tensor in self.transformer.state_dict().items()}
        missing, unexpected = transformer.load_state_dict(trained, strict=False, assign=True)
        added = {name for name in transformer.state_dict() if name not in trained}
        assert not unexpected and set(missing) == added, (missing, unexpected)
        assert_materialized(transformer, f"VideoVLA transformer grown by {list(flags)}")
        transformer = transformer.to(device=self.device, dtype=self.dtype)
        return type(self)(
            config,
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=transformer,
            normalizer=self.normalizer,
            condition_normalizer=self.condition_normalizer if config.normalize_condition else None,
            text_normalizer=self.text_normalizer if config.normalize_text else None,
        ).train(self.training)

    @classmethod
    def from_cogvideox(
        cls: type[VideoVLAModel],
        cogvideox_dir: str | Path,
        config: VideoVLAConfig,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> VideoVLAModel:
        """A VideoVLA model whose backbone, VAE, T5 and tokenizer come from a local diffusers-format CogVideoX
        image-to-video directory (transformer/, vae/, text_encoder/, tokenizer/); the action layers are new.

        The I2V checkpoint's learned positional table (480 x 720 frames) is kept when
        `config.transformer.learned_positional_embeddings` is on, cut to the config's grid (`fit_positional_table`);
        otherwise it is dropped and positions are 3D rotary only.
        """
        root = Path(cogvideox_dir)
        for sub in ("transformer", VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root} is not a diffusers CogVideoX directory: {sub}/ is missing")
        _check_backbone_config(root / "transformer", config)
        torch_dtype = resolve_dtype(dtype)
        tokenizer = build_tokenizer(config.text, root / TOKENIZER_DIR)
        text_encoder = T5EncoderModel.from_pretrained(str(root / TEXT_ENCODER_DIR), dtype=torch_dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(str(root / VAE_DIR), torch_dtype=torch_dtype)

        stock = load_safetensors(root / "transformer")
        stock_table = stock.pop("patch_embed.pos_embedding", None)
        with torch.device("meta"):
            transformer = VideoVLATransformer(config)
        added_names = [name for name in transformer.state_dict() if not name.startswith("backbone.")]
        state = {f"backbone.{name}": tensor for name, tensor in stock.items()}
        if transformer.positional_embedding is not None:
            state["positional_embedding"] = _positional_table_from(stock_table, root / "transformer", config)
        elif stock_table is not None:
            logger.info("from_cogvideox: dropped the I2V learned positional table; positions are 3D rotary only")
        check_state_dict(transformer, state, f"CogVideoX transformer weights in {root / 'transformer'}", added_names)
        transformer.load_state_dict(state, strict=False, assign=True)
        initialise_added_layers(transformer)  # they were never loaded
        assert_materialized(transformer, "VideoVLA transformer from CogVideoX")
        model = cls(config, tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer)
        return model.to(device=device, dtype=torch_dtype)


def _positional_table_from(
    stock_table: torch.Tensor | None, transformer_dir: Path, config: VideoVLAConfig
) -> torch.Tensor:
    """The config's positional table from a stock CogVideoX one, or zeros (with a warning) when it has none."""
    if stock_table is not None:
        stock_config = json.loads((transformer_dir / "config.json").read_text())
        return fit_positional_table(stock_table, stock_config, config)
    logger.warning(
        "%s has no learned positional table (patch_embed.pos_embedding) but the config asks for one: it starts at "
        "zero and is learned in fine-tuning",
        transformer_dir,
    )
    return torch.zeros(1, positional_table_length(config), config.transformer.width)


def fit_positional_table(table: torch.Tensor, stock_config: dict[str, Any], config: VideoVLAConfig) -> torch.Tensor:
    """A stock CogVideoX positional table (1, L + T0 * H0 * W0, width) cut to the config's grid
    (1, L + T * H * W, width): the text rows as they are, then the first T frames, H rows and W columns of the
    stock video grid, i.e. the positions 0..N-1 the integer rotary grid also uses."""
    t = config.transformer
    patch = t.patch_size
    stock_frames = (stock_config.get("sample_frames", 49) - 1) // stock_config.get("temporal_compression_ratio", 4) + 1
    stock_grid = (
        stock_frames,
        stock_config.get("sample_height", t.sample_height) // patch,
        stock_config.get("sample_width", t.sample_width) // patch,
    )
    grid = (config.train_latent_frames, config.latent_height // patch, config.latent_width // patch)
    text = config.text.max_length
    expected_rows = text + stock_grid[0] * stock_grid[1] * stock_grid[2]
    if tuple(table.shape) != (1, expected_rows, t.width):
        raise ValueError(
            f"CogVideoX positional table has shape {list(table.shape)}, expected {[1, expected_rows, t.width]} "
            f"(text {text} + frames x rows x columns {list(stock_grid)} from its config.json)"
        )
    if any(want > have for want, have in zip(grid, stock_grid, strict=True)):
        raise ValueError(
            f"the config's latent grid (frames, rows, columns) {list(grid)} exceeds the CogVideoX positional table's "
            f"{list(stock_grid)}: lower train_num_frames or the image size"
        )
    video = table[0, text:].reshape(*stock_grid, t.width)[: grid[0], : grid[1], : grid[2]]
    return torch.cat([table[0, :text], video.reshape(-1, t.width)]).unsqueeze(0).contiguous()


def initialise_added_layers(transformer: VideoVLATransformer) -> None:
    """Gives a transformer built on the meta device real (CPU) storage for the layers VideoVLA adds to CogVideoX,
    then their initialisation; the backbone is left as it is."""
    for module in transformer.added_layers():
        module.to_empty(device="cpu")
    transformer.action_pos_embed = nn.Parameter(torch.empty(transformer.action_pos_embed.shape))
    transformer.init_added_layers()


def _load_statistics(root: Path, enabled: bool, flag: str, file_name: str, what: str) -> ConditionNormalizer | None:
    """The standardisation statistics a checkpoint saved for `flag`; None (with a warning when the flag is on but
    the file is missing, e.g. a first-stage VAE checkpoint) leaves the model's identity map in place."""
    if not enabled:
        return None
    path = root / file_name
    if path.is_file():
        return ConditionNormalizer.load(path)
    logger.warning(
        "%s has %s on but no %s: the %s stays unstandardised until videovla-train fits the statistics",
        root,
        flag,
        file_name,
        what,
    )
    return None


def load_transformer(config: VideoVLAConfig, weights: Path) -> VideoVLATransformer:
    """The transformer for `config` with the tensors in `weights`; nothing is allocated twice (meta init)."""
    if not weights.is_file():
        raise FileNotFoundError(f"no transformer weights at {weights}")
    state = load_safetensors(weights)
    with torch.device("meta"):
        transformer = VideoVLATransformer(config)
    check_state_dict(transformer, state, str(weights))
    transformer.load_state_dict(state, strict=True, assign=True)
    assert_materialized(transformer, f"VideoVLA transformer from {weights}")
    return transformer


def _check_backbone_config(transformer_dir: Path, config: VideoVLAConfig) -> None:
    """Raises ValueError naming each stock CogVideoX setting that disagrees with `config`."""
    path = transformer_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no CogVideoX transformer config at {path}")
    stock = json.loads(path.read_text())
    expected = cogvideox_transformer_kwargs(config)
    mismatches = [
        f"{name}: checkpoint {stock.get(name)!r} vs config {expected[name]!r}"
        for name in _BACKBONE_FIELDS
        if stock.get(name, expected[name]) != expected[name]
    ]
    if stock.get("patch_size_t") is not None:
        mismatches.append(f"patch_size_t: checkpoint {stock['patch_size_t']!r} vs None (CogVideoX 1.0 layout)")
    if stock.get("ofs_embed_dim"):
        mismatches.append(f"ofs_embed_dim: checkpoint {stock['ofs_embed_dim']!r} vs None (CogVideoX 1.0 layout)")
    if not stock.get("use_rotary_positional_embeddings", False):
        mismatches.append("use_rotary_positional_embeddings: checkpoint False vs True")
    if mismatches:
        raise ValueError(f"CogVideoX checkpoint {transformer_dir} does not match the config: " + "; ".join(mismatches))
