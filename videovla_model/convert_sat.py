"""`videovla-convert-sat`: the public VideoVLA checkpoint (SAT / DeepSpeed) -> a VideoVLA checkpoint folder.

    videovla-convert-sat CKPT_DIR OUT --cogvideox-i2v DIR [--normalization FILE] [--config FILE]

CKPT_DIR is a SAT checkpoint folder (with a `latest` file naming the iteration, or the iteration folder itself, or
the `mp_rank_00_model_states.pt` file). Its `module` dict holds the transformer under `model.diffusion_model.`;
the VAE and T5 (`first_stage_model.`, `conditioner.`, when present) are skipped and copied instead from the
diffusers CogVideoX-5B-I2V folder given with --cogvideox-i2v, as is its tokenizer. The transformer is written in
bfloat16 safetensors. The public release has no action normalisation statistics: pass --normalization (a
`normalization.json` in `videovla_model.normalization` format) or get the identity map, with a warning.

The file is a pickle. It is read only with `torch.load(weights_only=True, mmap=True)` and an explicit allow-list
of the non-tensor types DeepSpeed and SAT store beside the weights (`ALLOWED_GLOBALS`); anything else is refused
before it is unpickled, naming its type. Every tensor is checked against the layout the config implies
(`sat_layout`): unknown, missing and mis-shaped keys are refused together, each named with both shapes.

Key mapping (SAT name -> VideoVLA transformer name; per block i; "backbone." is diffusers' CogVideoX):
    transformer.layers.i.input_layernorm / post_attention_layernorm -> blocks.i.norm1.norm / norm2.norm
    transformer.layers.i.attention.query_key_value -> blocks.i.attn1.to_q, to_k, to_v (split in three)
    transformer.layers.i.attention.dense -> blocks.i.attn1.to_out.0
    transformer.layers.i.mlp.dense_h_to_4h / dense_4h_to_h -> blocks.i.ff.net.0.proj / ff.net.2
    mixins.adaln_layer.adaLN_modulations.i.1 -> blocks.i.norm1.linear (chunks 0-2, 6-8 of 12), norm2.linear (3-5, 9-11)
    mixins.adaln_layer.query_layernorm_list.i / key_layernorm_list.i -> blocks.i.attn1.norm_q / norm_k
    transformer.final_layernorm -> norm_final; time_embed.0 / .2 -> time_embedding.linear_1 / linear_2
    mixins.patch_embed.proj / text_proj -> patch_embed.proj / text_proj
    mixins.final_layer.norm_final / linear / adaLN_modulation.1 -> norm_out.norm / proj_out / norm_out.linear
    mixins.pos_embed.pos_embedding -> positional_embedding (VideoVLA's learned text + video table)
    mixins.patch_embed.action_proj -> action_in; mixins.pos_embed.action_pos_embedding (1, R, W) -> action_pos_embed
    mixins.pos_embed.action_robotid_embedding -> embodiment_embed
    mixins.final_layer.action_adaLN_modulation.1 / action_norm_final / action_linear
        -> action_norm_out.linear / action_norm_out.norm / action_proj_out
    mixins.pos_embed.freqs_sin / freqs_cos: the rotary table, recomputed; refused if it differs from the config's.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro
from safetensors.torch import save_file

from videovla_model.checkpointing import TEXT_ENCODER_DIR, TOKENIZER_DIR, VAE_DIR, WEIGHTS_NAME
from videovla_model.cli import parse
from videovla_model.configuration import VideoVLAConfig
from videovla_model.normalization import NORMALIZATION_NAME, ActionNormalizer
from videovla_model.transformer import VideoVLATransformer, positional_table_length, rotary_embedding
from videovla_model.weights import CheckpointMismatchError, check_state_dict

logger = logging.getLogger(__name__)

MODEL_STATES_NAME = "mp_rank_00_model_states.pt"
PREFIX = "model.diffusion_model."
# Parts of the SAT engine that are not the transformer; their weights come from the CogVideoX folder instead.
SKIPPED_PREFIXES = ("first_stage_model.", "conditioner.")
ROTARY_KEYS = ("mixins.pos_embed.freqs_sin", "mixins.pos_embed.freqs_cos")
_MAX_LISTED = 20


def _numpy_dtype_classes() -> list[type]:
    return [
        type(np.dtype(kind)) for kind in (np.bool_, np.uint8, np.uint32, np.int32, np.int64, np.float32, np.float64)
    ]


# Non-tensor types DeepSpeed and SAT store beside the weights: SAT's argparse arguments and numpy RNG state
# (sets, OrderedDicts, torch.Size and plain Python values are allowed by torch itself).
ALLOWED_GLOBALS: list[Callable[..., object] | tuple[Callable[..., object], str]] = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    *_numpy_dtype_classes(),
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # written by numpy 1.x
]


def _allowed_names() -> set[str]:
    names = set()
    for entry in ALLOWED_GLOBALS:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f"{entry.__module__}.{entry.__qualname__}")
    return names


class UnsafeCheckpointError(ValueError):
    """A checkpoint pickle holds objects of a type that is neither a tensor nor allow-listed."""


def find_model_states(path: Path) -> Path:
    """The `mp_rank_00_model_states.pt` of a SAT checkpoint folder (`latest` names the iteration), of an
    iteration folder, or `path` itself when it is a file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no SAT checkpoint at {path}")
    latest = path / "latest"
    folder = path / latest.read_text().strip()[:64] if latest.is_file() else path
    states = folder / MODEL_STATES_NAME
    if not states.is_file():
        raise FileNotFoundError(
            f"no {MODEL_STATES_NAME} in {folder} (a SAT checkpoint holds <iteration>/{MODEL_STATES_NAME})"
        )
    return states


def load_model_states(path: Path) -> dict[str, torch.Tensor]:
    """The `module` dict of a DeepSpeed model-states file, read with weights_only=True and mmap.

    Raises UnsafeCheckpointError naming every type in the pickle that is neither a tensor nor allow-listed.
    """
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except ValueError as error:
        raise ValueError(f"{path} is not a torch.save zip checkpoint ({str(error)[:200]})") from error
    refused = sorted(set(unsafe) - _allowed_names())
    if refused:
        raise UnsafeCheckpointError(
            f"{path} holds objects of types that are neither tensors nor allow-listed, refused before unpickling: "
            f"{refused[:_MAX_LISTED]}; allowed non-tensor types: {sorted(_allowed_names())}"
        )
    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            reason = str(error).strip().splitlines()[-3:]
            raise UnsafeCheckpointError(
                f"{path} could not be read with weights_only=True: {' '.join(reason)[:400]}"
            ) from None
    module = saved.get("module") if isinstance(saved, dict) else None
    if not isinstance(module, dict):
        keys = sorted(saved)[:_MAX_LISTED] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path} has no 'module' dict (a DeepSpeed model-states file); it holds {keys}")
    not_tensors = [f"{name} ({type(value).__name__})" for name, value in module.items() if not torch.is_tensor(value)]
    if not_tensors:
        raise ValueError(f"{path}: 'module' entries that are not tensors: {_listed(not_tensors)}")
    return module


@dataclass(frozen=True)
class SatTensor:
    """One tensor of the SAT layout: its expected shape and how it becomes VideoVLA transformer tensors."""

    shape: tuple[int, ...]
    targets: tuple[str, ...]
    convert: Callable[[torch.Tensor], Sequence[torch.Tensor]] = lambda tensor: (tensor,)


def _pair(sat: str, ours: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, SatTensor]:
    """The tensors (weight, bias) of one SAT module that maps one to one onto a VideoVLA module."""
    return {f"{sat}.{kind}": SatTensor(shapes[kind], (f"{ours}.{kind}",)) for kind in shapes}


def _linear(rows: int, columns: int) -> dict[str, tuple[int, ...]]:
    return {"weight": (rows, columns), "bias": (rows,)}


def _norm(width: int) -> dict[str, tuple[int, ...]]:
    return {"weight": (width,), "bias": (width,)}


def _adaln_halves(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAT's 12-way block modulation (video msa, video mlp, text msa, text mlp; shift, scale, gate each) -> the
    inputs of diffusers' norm1 (attention) and norm2 (feed-forward), each (video, text) shift, scale, gate."""
    chunks = tensor.chunk(12, dim=0)
    return torch.cat(chunks[0:3] + chunks[6:9]), torch.cat(chunks[3:6] + chunks[9:12])


def _block_layout(config: VideoVLAConfig, index: int) -> dict[str, SatTensor]:
    t = config.transformer
    width, head = t.width, t.attention_head_dim
    sat, ours, adaln = f"transformer.layers.{index}", f"backbone.transformer_blocks.{index}", "mixins.adaln_layer"
    layout = {
        **_pair(f"{sat}.input_layernorm", f"{ours}.norm1.norm", _norm(width)),
        **_pair(f"{sat}.post_attention_layernorm", f"{ours}.norm2.norm", _norm(width)),
        **_pair(f"{sat}.attention.dense", f"{ours}.attn1.to_out.0", _linear(width, width)),
        **_pair(f"{sat}.mlp.dense_h_to_4h", f"{ours}.ff.net.0.proj", _linear(4 * width, width)),
        **_pair(f"{sat}.mlp.dense_4h_to_h", f"{ours}.ff.net.2", _linear(width, 4 * width)),
        **_pair(f"{adaln}.query_layernorm_list.{index}", f"{ours}.attn1.norm_q", _norm(head)),
        **_pair(f"{adaln}.key_layernorm_list.{index}", f"{ours}.attn1.norm_k", _norm(head)),
    }
    for kind, shape in _linear(3 * width, width).items():
        targets = tuple(f"{ours}.attn1.to_{name}.{kind}" for name in "qkv")
        layout[f"{sat}.attention.query_key_value.{kind}"] = SatTensor(shape, targets, lambda x: x.chunk(3, dim=0))
    for kind, shape in _linear(12 * width, t.time_embed_dim).items():
        targets = (f"{ours}.norm1.linear.{kind}", f"{ours}.norm2.linear.{kind}")
        layout[f"{adaln}.adaLN_modulations.{index}.1.{kind}"] = SatTensor(shape, targets, _adaln_halves)
    return layout


def sat_layout(config: VideoVLAConfig) -> dict[str, SatTensor]:
    """Every tensor a SAT VideoVLA checkpoint of `config` holds (names after `model.diffusion_model.`)."""
    t = config.transformer
    width, time_width, patch = t.width, t.time_embed_dim, t.patch_size
    channels, dims = config.vae.latent_channels, config.action_dims
    layout: dict[str, SatTensor] = {}
    for index in range(t.num_layers):
        layout.update(_block_layout(config, index))
    final, embed = "mixins.final_layer", "mixins.patch_embed"
    layout.update(
        {
            **_pair("transformer.final_layernorm", "backbone.norm_final", _norm(width)),
            **_pair("time_embed.0", "backbone.time_embedding.linear_1", _linear(time_width, width)),
            **_pair("time_embed.2", "backbone.time_embedding.linear_2", _linear(time_width, time_width)),
            **_pair(
                f"{embed}.proj",
                "backbone.patch_embed.proj",
                {"weight": (width, 2 * channels, patch, patch), "bias": (width,)},
            ),
            **_pair(f"{embed}.text_proj", "backbone.patch_embed.text_proj", _linear(width, config.text.d_model)),
            **_pair(f"{final}.norm_final", "backbone.norm_out.norm", _norm(width)),
            **_pair(f"{final}.linear", "backbone.proj_out", _linear(patch * patch * channels, width)),
            **_pair(f"{final}.adaLN_modulation.1", "backbone.norm_out.linear", _linear(2 * width, time_width)),
            **_pair(f"{embed}.action_proj", "action_in", _linear(width, dims)),
            **_pair(f"{final}.action_adaLN_modulation.1", "action_norm_out.linear", _linear(2 * width, time_width)),
            **_pair(f"{final}.action_norm_final", "action_norm_out.norm", _norm(width)),
            **_pair(f"{final}.action_linear", "action_proj_out", _linear(dims, width)),
        }
    )
    positions = "mixins.pos_embed"
    layout[f"{positions}.pos_embedding"] = SatTensor(
        (1, positional_table_length(config), width), ("positional_embedding",)
    )
    layout[f"{positions}.action_pos_embedding"] = SatTensor(
        (1, config.chunk_rows, width), ("action_pos_embed",), lambda x: (x[0],)
    )
    layout[f"{positions}.action_robotid_embedding.weight"] = SatTensor(
        (config.num_embodiments, width), ("embodiment_embed.weight",)
    )
    return layout


# Settings the public VideoVLA model has; a config without them would describe another model.
_REQUIRED_SETTINGS = {
    "transformer.learned_positional_embeddings": True,
    "transformer.rotary_grid": "integer",
    "transformer.action_final_norm": True,
    "transformer.action_norm_eps": 1e-6,
    "unconditional_text": "zeros",
    "text_modulation": False,
    "instruction_mixes_observation": False,
    "observation_film": False,
    "normalize_condition": False,
    "normalize_text": False,
}


def check_config(config: VideoVLAConfig) -> None:
    """Raises ValueError naming each setting where `config` differs from the public VideoVLA model."""
    wrong = []
    for name, want in _REQUIRED_SETTINGS.items():
        holder = config.transformer if name.startswith("transformer.") else config
        got = getattr(holder, name.removeprefix("transformer."))
        if got != want:
            wrong.append(f"{name}: {got!r} (the public VideoVLA: {want!r})")
    if wrong:
        raise ValueError("the config does not describe the public VideoVLA model: " + "; ".join(wrong))


def _listed(items: list[str]) -> str:
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def check_layout(module: dict[str, torch.Tensor], config: VideoVLAConfig, source: str) -> None:
    """Raises CheckpointMismatchError naming every unknown, missing and mis-shaped tensor of a SAT `module` dict
    (full key names; the VAE and T5 parts are ignored)."""
    patch = config.transformer.patch_size
    rotary_rows = config.train_latent_frames * (config.latent_height // patch) * (config.latent_width // patch)
    expected = {PREFIX + name: entry.shape for name, entry in sat_layout(config).items()}
    optional = {PREFIX + name: (rotary_rows, config.transformer.attention_head_dim) for name in ROTARY_KEYS}
    found = {name: tuple(tensor.shape) for name, tensor in module.items() if not name.startswith(SKIPPED_PREFIXES)}
    known = expected | optional
    mismatched = [
        f"{name} (checkpoint {list(found[name])}, expected {list(known[name])})"
        for name in sorted(found)
        if name in known and found[name] != known[name]
    ]
    missing = [f"{name} {list(expected[name])}" for name in sorted(set(expected) - set(found))]
    unknown = [f"{name} {list(found[name])}" for name in sorted(set(found) - set(known))]
    parts = [
        f"{label}: {_listed(items)}"
        for label, items in (("shape mismatches", mismatched), ("missing", missing), ("unknown", unknown))
        if items
    ]
    if parts:
        raise CheckpointMismatchError(
            f"{source} does not match the SAT VideoVLA layout of config {config.name!r}; " + "; ".join(parts)
        )


def check_rotary_table(module: dict[str, torch.Tensor], config: VideoVLAConfig, source: str) -> None:
    """Raises ValueError when the checkpoint's stored rotary table (if any) is not the one `config` computes."""
    frames = config.train_latent_frames
    cos, sin = rotary_embedding(config, frames, config.latent_height, config.latent_width, torch.device("cpu"))
    for key, ours in zip(ROTARY_KEYS, (sin, cos), strict=True):
        stored = module.get(PREFIX + key)
        if stored is None:
            continue
        difference = float((stored.float() - ours).abs().max())
        # bfloat16 storage rounds values near 1 by up to 4e-3; another grid differs by up to 2.
        if difference > 2e-2:
            raise ValueError(
                f"{source}: {PREFIX + key} differs from the rotary table of transformer.rotary_grid="
                f"{config.transformer.rotary_grid!r} by up to {difference:.3f}; the positions would mean something else"
            )


def convert_transformer(
    module: dict[str, torch.Tensor], config: VideoVLAConfig, source: str
) -> dict[str, torch.Tensor]:
    """A SAT `module` dict -> the VideoVLA transformer's state dict for `config`, in bfloat16."""
    check_layout(module, config, source)
    check_rotary_table(module, config, source)
    skipped = sorted({name.split(".")[0] for name in module if name.startswith(SKIPPED_PREFIXES)})
    if skipped:
        logger.info("%s: skipped %s (the VAE and T5 come from the CogVideoX folder)", source, skipped)
    state: dict[str, torch.Tensor] = {}
    for name, entry in sat_layout(config).items():
        tensors = entry.convert(module[PREFIX + name])
        for target, tensor in zip(entry.targets, tensors, strict=True):
            state[target] = tensor.to(torch.bfloat16).contiguous()
    with torch.device("meta"):
        transformer = VideoVLATransformer(config)
    check_state_dict(transformer, state, f"{source} after conversion")
    return state


def _normalizer(path: Path | None, config: VideoVLAConfig) -> ActionNormalizer:
    """The action statistics from `path`, or the identity map with a warning (the public release has none)."""
    if path is None:
        logger.warning(
            "NO ACTION NORMALISATION STATISTICS: the public VideoVLA release does not include them, so the converted "
            "checkpoint un-normalises actions with the identity map (model range [-1, 1] = robot units). Its actions "
            "are NOT in your robot's units: pass --normalization FILE, or fit statistics by fine-tuning "
            "(videovla-train --init-from), before running it on a robot."
        )
        return ActionNormalizer.identity(config.action_dim_names, config.gripper_dims, config.gripper_threshold)
    normalizer = ActionNormalizer.load(path)
    if normalizer.dim_names != config.action_dim_names:
        raise ValueError(
            f"{path}: dim_names {list(normalizer.dim_names)} must equal the config's action_dim_names "
            f"{list(config.action_dim_names)}"
        )
    if normalizer.gripper_threshold != config.gripper_threshold:
        raise ValueError(
            f"{path}: gripper_threshold {normalizer.gripper_threshold} must equal the config's "
            f"{config.gripper_threshold}"
        )
    return normalizer


def convert(
    checkpoint: Path,
    output: Path,
    cogvideox_dir: Path,
    config: VideoVLAConfig,
    normalization: Path | None = None,
) -> Path:
    """Writes the VideoVLA checkpoint folder `output` from the SAT checkpoint `checkpoint`; returns `output`.

    Everything that can be checked cheaply (config, folders, statistics) is checked before the weights are read.
    """
    check_config(config)
    for sub in (VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR):
        if not (cogvideox_dir / sub).is_dir():
            raise FileNotFoundError(f"{cogvideox_dir} is not a diffusers CogVideoX folder: {sub}/ is missing")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} exists and is not empty; choose a new folder")
    normalizer = _normalizer(normalization, config)
    states = find_model_states(checkpoint)
    state = convert_transformer(load_model_states(states), config, str(states))
    output.mkdir(parents=True, exist_ok=True)
    config.save(output)
    save_file(state, str(output / WEIGHTS_NAME), metadata={"format": "pt", "config_name": config.name})
    normalizer.save(output / NORMALIZATION_NAME)
    for sub in (VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR):
        shutil.copytree(cogvideox_dir / sub, output / sub)
    return output


@dataclass(frozen=True)
class ConvertCommand:
    """What `videovla-convert-sat` converts, and with which companion files."""

    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")]
    """SAT checkpoint folder (with `latest`), iteration folder or .pt"""
    output: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]
    """new VideoVLA checkpoint folder"""
    cogvideox_i2v: Path
    """diffusers CogVideoX-5B-I2V folder (VAE, T5, tokenizer)"""
    normalization: Path | None = None
    """normalization.json with your action statistics"""
    config: Path | None = None
    """VideoVLAConfig JSON (None: the cogvideox-5b preset)"""


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    description = "Convert the public VideoVLA checkpoint (SAT / DeepSpeed) into a VideoVLA checkpoint folder."
    command = parse(ConvertCommand, argv, prog="videovla-convert-sat", description=description)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = VideoVLAConfig.load(command.config) if command.config else VideoVLAConfig.preset("cogvideox-5b")
        output = convert(command.checkpoint, command.output, command.cogvideox_i2v, config, command.normalization)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"videovla-convert-sat: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
