"""Can a VideoVLA transformer learn to bind a colour word to an object's position? Trains one on synthetic scenes.

Each scene is a grey 64 x 64 table with three squares of different colours (of red, green, blue, yellow) at random
places; the instruction names one ("pick up the blue cube"); every action row is the unit direction from the image
centre to that square. Where the squares are comes from the image, which one from the words: only a model that
binds the two beats chance (1/3). Nothing else about the simulator (arm, gripper, lighting, physics) is involved,
so this separates "cannot bind at this size and budget" from "the sim task is too hard to see". The control
`--always-name red` names the same colour every time, so it needs the image alone: it shows the pipeline can learn
a direction from the squares at all.

The VAE, text encoder, tokenizer and observation statistics come from `--checkpoint`; the transformer is fresh
(or the checkpoint's with `--fine-tune`); the instruction statistics are fitted to the four instructions. Every
`--eval-every` steps it samples the first chunk for 60 held-out scenes and prints how often it heads for the named
square and the mean cosine to it.

    scripts/with_env.sh python benchmarks/binding_capacity.py --steps 3000
    python benchmarks/binding_capacity.py --device cuda --steps 20000 --batch-size 64
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from videovla_model.batch import TrainingBatch
from videovla_model.condition_normalization import ConditionNormalizer
from videovla_model.configuration import VideoVLAConfig
from videovla_model.modeling import VideoVLAModel
from videovla_model.processing import to_model_range

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 40),
}
SQUARES = 3
HALF_SIDE = 4  # px: 8 x 8 squares, one latent cell of the 8x-compressing VAE
TABLE_GREY = 120
EVAL_SCENES = 60
EVAL_SEED = 12345


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    instruction: str
    directions: np.ndarray  # (SQUARES, 2) unit vectors from the image centre, in (row, column) pixels
    target: int


def make_scene(rng: np.random.Generator, size: int, always_named: str | None = None) -> Scene:
    """A random scene; with `always_named`, that colour is always in it and always the one named."""
    image = np.full((size, size, 3), TABLE_GREY, np.uint8)
    if always_named is None:
        names = rng.choice(list(COLOURS), SQUARES, replace=False)
    else:
        others = rng.choice([name for name in COLOURS if name != always_named], SQUARES - 1, replace=False)
        names = rng.permutation([always_named, *others])
    centre = np.array([size / 2, size / 2])
    centres: list[np.ndarray] = []
    while len(centres) < SQUARES:
        candidate = rng.integers(HALF_SIDE + 2, size - HALF_SIDE - 2, 2)
        apart = all(np.abs(candidate - other).max() > 2 * HALF_SIDE + 2 for other in centres)
        # Away from the centre, so every square has a clear direction.
        if apart and np.abs(candidate - centre).max() > HALF_SIDE + 4:
            centres.append(candidate)
    for name, (row, column) in zip(names, centres, strict=True):
        image[row - HALF_SIDE : row + HALF_SIDE, column - HALF_SIDE : column + HALF_SIDE] = COLOURS[name]
    offsets = np.stack(centres) - centre
    target = int(rng.integers(SQUARES)) if always_named is None else list(names).index(always_named)
    return Scene(
        image=image,
        instruction=f"pick up the {names[target]} cube",
        directions=offsets / np.linalg.norm(offsets, axis=1, keepdims=True),
        target=target,
    )


def images_to_tensor(scenes: list[Scene]) -> torch.Tensor:
    """(B, 3, H, W) float32 in [-1, 1]."""
    images = to_model_range(np.stack([scene.image for scene in scenes]))
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def training_batch(c: VideoVLAConfig, scenes: list[Scene], action_scale: float) -> TrainingBatch:
    observation = images_to_tensor(scenes)
    actions = torch.zeros(len(scenes), c.chunk_rows, c.action_dims)
    for row, scene in enumerate(scenes):
        actions[row, :, :2] = torch.from_numpy(action_scale * scene.directions[scene.target]).float()
    return TrainingBatch(
        observation=observation,
        # A still scene: the video is the observation held for the clip.
        video=observation[:, :, None].expand(-1, -1, c.train_num_frames, -1, -1).contiguous(),
        instructions=[scene.instruction for scene in scenes],
        actions=actions,
        action_mask=torch.ones(len(scenes), c.chunk_rows, dtype=torch.bool),
        embodiment_ids=torch.zeros(len(scenes), dtype=torch.int64),
    )


def evaluate(model: VideoVLAModel, scenes: list[Scene], batch_size: int) -> tuple[int, float]:
    """(how many first chunks head for the named square, mean cosine to it) at guidance 1."""
    model.eval()
    named, cosines = 0, []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        actions = model.sample(
            images_to_tensor(chunk).to(model.device),
            [scene.instruction for scene in chunk],
            guidance_scale=1.0,
            generator=torch.Generator(model.device).manual_seed(start),
        ).actions
        for scene, predicted in zip(chunk, actions.cpu().numpy(), strict=True):
            heading = predicted[:, :2].sum(axis=0)
            heading = heading / max(float(np.linalg.norm(heading)), 1e-9)
            alignment = scene.directions @ heading
            named += int(np.argmax(alignment) == scene.target)
            cosines.append(float(alignment[scene.target]))
    model.train()
    return named, float(np.mean(cosines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/videovla-sim-small", help="VAE, T5 and config source")
    parser.add_argument("--fine-tune", action="store_true", help="start from the checkpoint's transformer")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--video-loss", action="store_true", help="also train the video loss (off: action-only)")
    parser.add_argument("--action-scale", type=float, default=0.8, help="normalised size of each action row")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--always-name",
        choices=list(COLOURS),
        help="control: every instruction names this colour, so seeing the squares is enough (no binding needed)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    source = VideoVLAModel.from_pretrained(args.checkpoint)
    config = source.config
    if config.image_height != config.image_width:
        parser.error(
            f"the scenes are square; {args.checkpoint} takes {config.image_height}x{config.image_width} images"
        )
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, use_video_loss=args.video_loss))
    model = VideoVLAModel(
        config,
        tokenizer=source.tokenizer,
        text_encoder=source.text_encoder,
        vae=source.vae,
        transformer=source.transformer if args.fine_tune else None,
        normalizer=source.normalizer,
        condition_normalizer=source.condition_normalizer,
    )
    instructions = [f"pick up the {name} cube" for name in COLOURS]
    model.set_text_normalizer(ConditionNormalizer.fit(model.raw_prompt_embeddings(instructions)))
    model = model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr, weight_decay=0.0)
    size = config.image_height
    rng = np.random.default_rng(args.seed)
    held_out_rng = np.random.default_rng(EVAL_SEED)
    held_out = [make_scene(held_out_rng, size, args.always_name) for _ in range(EVAL_SCENES)]
    print(
        f"{args.checkpoint} ({'its transformer' if args.fine_tune else 'fresh transformer'}), "
        f"{args.steps} steps x {args.batch_size}, lr {args.lr}, chance {1 / SQUARES:.0%}",
        flush=True,
    )
    started = time.monotonic()
    recent_losses: list[float] = []
    for step in range(1, args.steps + 1):
        batch = training_batch(
            config, [make_scene(rng, size, args.always_name) for _ in range(args.batch_size)], args.action_scale
        )
        output = model.compute_loss(batch.to(args.device), torch.Generator(args.device).manual_seed(step))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        recent_losses.append(float(output.action_loss))
        if step % args.log_every == 0:
            print(
                f"step {step}: action loss {np.mean(recent_losses):.4f} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            recent_losses.clear()
        if step % args.eval_every == 0 or step == args.steps:
            named, cosine = evaluate(model, held_out, args.batch_size)
            print(
                f"step {step}: heads for the named square {named}/{EVAL_SCENES} = {named / EVAL_SCENES:.0%} "
                f"(chance {1 / SQUARES:.0%}), cos(named) {cosine:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
