"""LoRA fine-tuning of the VideoVLA transformer (`peft`) and its adapter files; `videovla-merge-lora`.

LoRA adapts the q, k, v and output projections of every DiT block (`memory.LORA_TARGET_MODULES`); the layers
VideoVLA adds to CogVideoX (action embedding, chunk positions, embodiment table, action head and any conditioning
MLPs) do not exist in the pre-trained backbone, so they are trained in full. Everything else is frozen.

Adapter folder (what a LoRA run writes for each checkpoint and for `final/`)::

    adapter.safetensors     the trained tensors only: LoRA A/B matrices and the action layers, transformer names
    adapter_config.json     rank, alpha, target modules, and the base: how to rebuild it (init_from checkpoint or
                            init_cogvideox folder + conditioning layers added) and its fingerprint
    config.json             the VideoVLAConfig of the fine-tuned model (time step, frame period, loss of this run)
    normalization.json ...  the statistics fitted to the run's data (as `VideoVLAModel.save_pretrained` writes them)

The base fingerprint hashes every frozen tensor's name and shape and a sample of its values (its first and last
`FINGERPRINT_SAMPLE` values), so an adapter applied to another base is refused before any work starts.

    videovla-merge-lora runs/rm65-lora/final checkpoints/rm65     # a plain checkpoint for load_policy
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn

from videovla_model.cli import parse
from videovla_model.condition_normalization import (
    CONDITION_NORMALIZATION_NAME,
    TEXT_NORMALIZATION_NAME,
    ConditionNormalizer,
)
from videovla_model.configuration import VideoVLAConfig
from videovla_model.latent_cache import sampled_weights_hash
from videovla_model.memory import LORA_TARGET_MODULES
from videovla_model.modeling import VideoVLAModel, resolve_dtype
from videovla_model.normalization import NORMALIZATION_NAME, ActionNormalizer
from videovla_model.transformer import VideoVLATransformer

logger = logging.getLogger("videovla.lora")

ADAPTER_WEIGHTS_NAME = "adapter.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_FORMAT_VERSION = 1
FINGERPRINT_SAMPLE = 64


class AdapterMismatchError(ValueError):
    """An adapter that does not belong to the base it is applied to (or to its own settings)."""


@dataclass(frozen=True)
class LoraSettings:
    """rank: LoRA rank r; alpha: scale numerator (the update is B A x * alpha / r), default r."""

    rank: int
    alpha: float | None = None
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"lora rank must be an int >= 1, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"lora alpha must be a positive number, got {self.alpha!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def scale_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank, lora_alpha=self.scale_alpha, target_modules=list(self.target_modules), init_lora_weights=True
        )


@dataclass(frozen=True)
class BaseReference:
    """Where the adapted weights come from: a videovla checkpoint (`init_from`) or a diffusers CogVideoX folder
    (`init_cogvideox`), grown by `add_conditioning`; `fingerprint` identifies its frozen tensors."""

    init_from: str | None = None
    init_cogvideox: str | None = None
    add_conditioning: tuple[str, ...] = ()
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if (self.init_from is None) == (self.init_cogvideox is None):
            raise ValueError(
                "LoRA adapts pre-trained weights: give exactly one of --init-from (a videovla checkpoint) or "
                "--init-cogvideox (a diffusers CogVideoX folder)"
            )
        object.__setattr__(self, "add_conditioning", tuple(self.add_conditioning))


@dataclass(frozen=True)
class AdapterConfig:
    lora: LoraSettings
    base: BaseReference
    trained_tensors: tuple[str, ...] = field(default_factory=tuple)

    def save(self, folder: Path) -> None:
        data = {"format_version": ADAPTER_FORMAT_VERSION, **asdict(self)}
        (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> AdapterConfig:
        path = folder / ADAPTER_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a LoRA adapter folder: no {ADAPTER_CONFIG_NAME}")
        data = json.loads(path.read_text())
        version = data.pop("format_version", None)
        if version != ADAPTER_FORMAT_VERSION:
            raise AdapterMismatchError(
                f"{path}: format_version {version!r}, this videovla reads {ADAPTER_FORMAT_VERSION}"
            )
        return cls(
            lora=LoraSettings(**data["lora"]),
            base=BaseReference(**data["base"]),
            trained_tensors=tuple(data["trained_tensors"]),
        )


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG_NAME).is_file()


# Building ----------------------------------------------------------------------------------------------------


def fully_trained_modules(transformer: VideoVLATransformer) -> list[nn.Module]:
    """The action layers (and conditioning MLPs): new to the backbone, so trained in full."""
    return transformer.added_layers()


def fully_trained_names(transformer: VideoVLATransformer) -> set[str]:
    """State-dict names of every tensor `fully_trained_modules` hold, plus the chunk position embedding."""
    owned = {id(p) for module in fully_trained_modules(transformer) for p in module.parameters()}
    owned.add(id(transformer.action_pos_embed))
    return {name for name, p in transformer.named_parameters() if id(p) in owned}


def base_fingerprint(transformer: VideoVLATransformer) -> str:
    """Hash of the frozen tensors' names, shapes and sampled values (see the module docstring)."""
    trained = frozenset(fully_trained_names(transformer))
    return sampled_weights_hash(transformer, skip=trained, sample=FINGERPRINT_SAMPLE)


def add_lora(transformer: VideoVLATransformer, settings: LoraSettings) -> None:
    """Injects LoRA into the backbone's attention projections and freezes everything but LoRA and the action
    layers (in place)."""
    transformer.requires_grad_(False)
    inject_adapter_in_model(settings.peft_config(), transformer.backbone)
    for module in transformer.backbone.modules():
        if isinstance(module, BaseTunerLayer):
            for name, parameter in module.named_parameters():
                parameter.requires_grad_(name.startswith(("lora_A.", "lora_B.")))
    for module in fully_trained_modules(transformer):
        module.requires_grad_(True)
    transformer.action_pos_embed.requires_grad_(True)


def trained_state_dict(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor that trains (requires_grad), under its transformer state-dict name, on the CPU in float32."""
    return {
        name: p.detach().to("cpu", torch.float32).contiguous()
        for name, p in transformer.named_parameters()
        if p.requires_grad
    }


@torch.no_grad()
def merge_lora(transformer: VideoVLATransformer) -> None:
    """Folds every LoRA update into its base weight and puts the plain layer back (in place)."""
    for name, module in list(transformer.backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = transformer.backbone.get_submodule(parent_name) if parent_name else transformer.backbone
            setattr(parent, child, module.get_base_layer())
    transformer.requires_grad_(True)


# Files -------------------------------------------------------------------------------------------------------


def save_adapter(model: VideoVLAModel, folder: str | Path, settings: LoraSettings, base: BaseReference) -> Path:
    """Writes the adapter folder of the module docstring for `model` (LoRA applied with `settings`)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    tensors = trained_state_dict(model.transformer)
    save_file(tensors, str(root / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    AdapterConfig(lora=settings, base=base, trained_tensors=tuple(sorted(tensors))).save(root)
    model.config.save(root)
    model.normalizer.save(root / NORMALIZATION_NAME)
    if model.config.normalize_condition:
        model.condition_normalizer.save(root / CONDITION_NORMALIZATION_NAME)
    if model.config.normalize_text:
        model.text_normalizer.save(root / TEXT_NORMALIZATION_NAME)
    return root


def build_base(base: BaseReference, config: VideoVLAConfig) -> VideoVLAModel:
    """The float32 base model `base` names, before LoRA (no fingerprint check)."""
    if base.init_from is not None:
        model = VideoVLAModel.from_pretrained(base.init_from)
        if base.add_conditioning:
            model = model.with_added_conditioning(base.add_conditioning)
        return model
    assert base.init_cogvideox is not None  # BaseReference checks one is set
    return VideoVLAModel.from_cogvideox(base.init_cogvideox, config)


def check_base(model: VideoVLAModel, base: BaseReference, where: str) -> None:
    """Raises AdapterMismatchError (one line) when `model` is not the base the adapter was trained on."""
    found = base_fingerprint(model.transformer)
    if found != base.fingerprint:
        source = base.init_from or base.init_cogvideox
        raise AdapterMismatchError(
            f"{where} was trained on another base: its base {source} had fingerprint {base.fingerprint[:16]}, the "
            f"weights found there now have {found[:16]}"
        )


def load_adapter_model(folder: str | Path) -> tuple[VideoVLAModel, AdapterConfig]:
    """The base the adapter in `folder` names, checked, with its statistics and LoRA applied (not merged)."""
    root = Path(folder)
    adapter = AdapterConfig.load(root)
    config = VideoVLAConfig.load(root)
    model = build_base(adapter.base, config)
    check_base(model, adapter.base, str(root))
    model.config = config
    model.set_normalizer(ActionNormalizer.load(root / NORMALIZATION_NAME))
    if config.normalize_condition:
        model.set_condition_normalizer(ConditionNormalizer.load(root / CONDITION_NORMALIZATION_NAME))
    if config.normalize_text:
        model.set_text_normalizer(ConditionNormalizer.load(root / TEXT_NORMALIZATION_NAME))
    add_lora(model.transformer, adapter.lora)
    load_trained_tensors(model.transformer, load_file(str(root / ADAPTER_WEIGHTS_NAME)), str(root))
    return model, adapter


@torch.no_grad()
def load_trained_tensors(transformer: VideoVLATransformer, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copies an adapter's tensors into `transformer` (LoRA applied); names and shapes must match exactly."""
    parameters = {name: p for name, p in transformer.named_parameters() if p.requires_grad}
    missing = sorted(set(parameters) - set(tensors))
    unexpected = sorted(set(tensors) - set(parameters))
    wrong = [
        f"{name} {tuple(tensors[name].shape)} vs {tuple(p.shape)}"
        for name, p in parameters.items()
        if name in tensors and tensors[name].shape != p.shape
    ]
    if missing or unexpected or wrong:
        raise AdapterMismatchError(
            f"{where}: adapter tensors do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape (adapter vs model) {wrong[:5]}"
        )
    for name, p in parameters.items():
        p.copy_(tensors[name].to(device=p.device, dtype=p.dtype))


def load_merged_model(folder: str | Path, device: str = "cpu", dtype: str = "float32") -> VideoVLAModel:
    """The adapter's base with the adapter merged in, on `device` in `dtype`, in eval mode."""
    model, _ = load_adapter_model(folder)
    merge_lora(model.transformer)
    return model.to(device=device, dtype=resolve_dtype(dtype)).eval()


def merge_adapter(adapter_folder: str | Path, output: str | Path) -> Path:
    """Writes the adapter's base with the adapter merged in as a plain checkpoint (`VideoVLAModel` layout)."""
    return load_merged_model(adapter_folder).save_pretrained(output)


@dataclass(frozen=True)
class MergeCommand:
    """What `videovla-merge-lora` merges, and where it writes the result."""

    adapter: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="ADAPTER")]
    """adapter folder (a LoRA run's final/ or checkpoint-<step>/)"""
    output: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]
    """folder for the merged checkpoint"""


def main(argv: Sequence[str] | None = None) -> int:
    description = (
        "Merge a LoRA adapter written by `videovla-train --lora-rank` into its base and write a plain VideoVLA "
        "checkpoint (what load_policy and --init-from open)."
    )
    command = parse(MergeCommand, argv, prog="videovla-merge-lora", description=description)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        written = merge_adapter(command.adapter, command.output)
    except (ValueError, FileNotFoundError) as error:
        print(f"videovla-merge-lora: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    logger.info("wrote the merged checkpoint to %s", written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
