"""The ladder of issue 12: where between "learnable at all" and the shipped VideoVLA does instruction binding break?

Every rung trains on the same demonstrations and is scored on the same held-out first frames with the metric of
`benchmarks/instruction_binding.py` (the object the first chunk heads for vs the named one; chance = 1/objects):

    cnn              rung 1: FiLM CNN + learned word embeddings, MSE on every window's next chunk
    cnn-image-only   rung 1's control: the same without the instruction (what the image alone gives)
    dit              rung 2: the `small` DiT and conditioning path as a one-pass regressor (no noise, no diffusion)
    dit-words        rung 2 with learned word embeddings instead of the frozen random T5
    dit-words-pos    dit-words with a learned absolute position table on the text and video tokens (rotary alone
                     puts positions into attention scores, not into the values an action token reads)
    dit-words-pos-mix  dit-words-pos + the instruction mixing the observation latent's channels (FiLM-like)
    dit-pixels       rung 2 with a learned pixel stem instead of the VAE latent
    dit-pixels-pos   dit-pixels + dit-pos's position table (the control of dit-film-pixels-pos: no FiLM)
    dit-film-pixels-pos  dit-pos with rung 1's FiLM conv trunk on the pixels instead of the VAE latent
    dit-film-latent-pos  dit-pos with FiLM convolutions on the VAE latent (residual, starting as the plain latent)
    dit-t0           rung 2 at timestep 0 instead of 999 (the timestep embedding of the clean end)
    diffusion        rung 3: rung 2 with diffusion on the actions only (10 sampling steps, guidance 1)
    diffusion-words-pos  rung 3 on dit-words-pos
    diffusion-film-pixels-pos  rung 3 on dit-film-pixels-pos
    videovla         rung 4: `videovla-train` (the joint video + action model, the shipped design)
    videovla-actions rung 4's ablation: `videovla-train --no-video-loss`

One row per evaluation (a learning curve: every --eval-every steps and at the end), then for the in-process rungs
a probe: the RMS change of the normalised first chunk when the held-out instructions (or images) are shuffled among the
held-out frames, i.e. what the model uses. With --closed-loop N the trained rung (rung 4: its last checkpoint) then
drives the simulated arm for N pick episodes (seeds 0..N-1) in `benchmarks/closed_loop.py`'s loop: does heading
for the named object end in a grasp? The frozen parts (VAE, T5, action and observation statistics) and the `small`
config come from --checkpoint; rung 4 starts from them with a fresh transformer.

    OMP_NUM_THREADS=1 scripts/with_env.sh python benchmarks/ladder.py --dataset runs/demos \\
        --held-out runs/heldout --rungs cnn dit --minutes 5 --eval-every 250
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from closed_loop import evaluate as closed_loop_evaluate
from closed_loop import summary as closed_loop_summary
from instruction_binding import Heading, headings
from ladder_models import DiTDiffusion, DiTRegressor, FilmCNN, WordVocabulary

from videovla_model.contract import Observation, Policy, PolicyMetadata, PolicyOutput
from videovla_model.episodes import EpisodeDataset
from videovla_model.modeling import VideoVLAModel
from videovla_model.processing import prepare_image, to_model_range

IN_PROCESS = (
    "cnn",
    "cnn-image-only",
    "dit",
    "dit-words",
    "dit-words-pos",
    "dit-words-pos-mix",
    "dit-pos",
    "dit-pixels",
    "dit-pixels-pos",
    "dit-film-pixels-pos",
    "dit-film-latent-pos",
    "dit-t0",
    "diffusion",
    "diffusion-words-pos",
    "diffusion-film-pixels-pos",
)
VIDEOVLA_TRAIN = {"videovla": True, "videovla-actions": False}  # rung -> video loss
RUNGS = IN_PROCESS + tuple(VIDEOVLA_TRAIN)


@dataclass
class Windows:
    """Every training window: frame t, its instruction and the next chunk of normalised actions."""

    images: torch.Tensor  # (N, 3, H, W) float32 in [-1, 1]
    instructions: list[str]
    targets: torch.Tensor  # (N, R, D) normalised
    mask: torch.Tensor  # (N, R) True where the episode has that row


def load_windows(dataset: EpisodeDataset, model: VideoVLAModel) -> Windows:
    config = model.config
    rows, size = config.chunk_rows, config.image_size
    images, instructions, targets, masks = [], [], [], []
    for index in range(len(dataset)):
        episode = dataset[index]
        frames, actions = np.asarray(episode.frames), np.asarray(episode.actions)
        normalised = model.normalizer.normalize(actions)
        padded = np.concatenate((normalised, np.zeros((rows, normalised.shape[1]), np.float32)))
        for t in range(len(actions)):
            images.append(to_model_range(prepare_image(frames[t], size)))
            instructions.append(episode.metadata.instruction)
            targets.append(padded[t : t + rows])
            masks.append(np.arange(rows) < len(actions) - t)
    return Windows(
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float(),
        instructions,
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(np.stack(masks)),
    )


class RegressorPolicy:
    """A trained in-process rung behind the numpy policy contract, for instruction_binding's metric and closed loops."""

    def __init__(self, module: nn.Module, model: VideoVLAModel) -> None:
        self.module, self.model = module, model
        c = model.config
        self.metadata = PolicyMetadata(c.action_dim_names, c.chunk_rows, c.execute_rows, c.time_step, c.image_size)

    @torch.no_grad()
    def normalised(self, images: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        self.module.eval()
        return self.module(images, instructions).clamp(-1, 1)

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        del imagine
        image = to_model_range(prepare_image(observation.image, self.model.config.image_size))
        images = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        actions = self.normalised(images, [observation.instruction])[0].numpy()
        return PolicyOutput(actions=self.model.normalizer.unnormalize(actions), timings={"total": 0.0})

    def decode_imagination(self, output: PolicyOutput) -> None:
        del output  # a regressor imagines nothing


def build(
    rung: str,
    model: VideoVLAModel,
    vocabulary: WordVocabulary,
    timestep_beta: float = 1.0,
    pure_noise_fraction: float = 0.0,
    sampling_steps: int = 10,
) -> nn.Module:
    c = model.config
    if rung.startswith("cnn"):
        return FilmCNN(vocabulary, c.chunk_rows, c.action_dims, c.image_size[0], use_text=rung == "cnn")
    observation = next((kind for kind in ("film-pixels", "film-latent", "pixels") if f"-{kind}" in rung), "vae")
    if rung.startswith("diffusion"):
        return DiTDiffusion(
            model,
            vocabulary,
            text="words" if "-words" in rung else "t5",
            observation=observation,
            absolute_positions="-pos" in rung,
            timestep_beta=timestep_beta,
            pure_noise_fraction=pure_noise_fraction,
            steps=sampling_steps,
        )
    return DiTRegressor(
        model,
        vocabulary,
        text="words" if rung.startswith("dit-words") else "t5",
        observation=observation,
        timestep=0 if rung == "dit-t0" else 999,
        absolute_positions="-pos" in rung,
        mix_observation=rung.endswith("-mix"),
    )


def row(rung: str, step: int, seconds: float, loss: float, results: list[Heading]) -> str:
    named = sum(r.named_is_best for r in results)
    return (
        f"{rung:15s} {step:6d} {seconds / 60:6.1f} {loss:8.4f} {named:>4d}/{len(results):<3d} "
        f"{100 * named / len(results):4.0f}% {100 * np.mean([r.chance for r in results]):5.0f}% "
        f"{np.mean([r.cos_named for r in results]):6.2f} {np.mean([r.cos_best for r in results]):6.2f}"
    )


HEADER = (
    f"{'rung':15s} {'step':>6s} {'min':>6s} {'loss':>8s} {'named':>13s} {'chance':>6s} {'cos(n)':>6s} {'cos(b)':>6s}"
)


def train_deterministic(
    rung: str, args: argparse.Namespace, model: VideoVLAModel, data: Windows, held_out: EpisodeDataset
) -> nn.Module:
    """Trains one in-process rung; each row scores the held-out first frames (and, with --train-episodes, the
    first frames of that many training episodes: binding there but not on held-out frames is memorising)."""
    training_firsts = EpisodeDataset(args.dataset) if args.train_episodes else None
    torch.manual_seed(args.seed)
    vocabulary = WordVocabulary(data.instructions)
    module = build(rung, model, vocabulary, args.timestep_beta, args.pure_noise_fraction, args.sampling_steps)
    uses_latents = isinstance(module, DiTRegressor) and module.stem is None and module.observation != "film-pixels"
    latents = cached_latents(module, data, args) if uses_latents else None
    optimiser = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
    policy = RegressorPolicy(module, model)
    generator = torch.Generator().manual_seed(args.seed)
    started, losses, step = time.monotonic(), [], 0

    def report() -> None:
        results = headings(policy, held_out, args.episodes, 1)
        line = row(rung, step, time.monotonic() - started, float(np.mean(losses[-50:])), results)
        if training_firsts is not None:
            seen = headings(policy, training_firsts, args.train_episodes, 1)
            line += f"   train {100 * np.mean([r.named_is_best for r in seen]):4.0f}%"
        print(line, flush=True)

    while step < args.steps and time.monotonic() - started < 60 * args.minutes:
        module.train()
        index = torch.randint(len(data.targets), (args.batch_size,), generator=generator)
        images, instructions = data.images[index], [data.instructions[i] for i in index.tolist()]
        targets = data.targets[index]
        if isinstance(module, DiTRegressor):
            predicted, targets = module.loss(images, instructions, latents[index] if uses_latents else None, targets)
        else:
            predicted = module(images, instructions)
        mask = data.mask[index][..., None].float()
        loss = (((predicted - targets) ** 2) * mask).sum() / (mask.sum() * predicted.shape[-1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        step += 1
        if step % args.eval_every == 0:
            report()
    if step % args.eval_every:
        report()
    return module


def cached_latents(module: DiTRegressor, data: Windows, args: argparse.Namespace) -> torch.Tensor:
    """The VAE latents of every window's frame, computed once per dataset into runs/ (the VAE is frozen)."""
    path = Path(args.dataset) / "ladder_latents.pt"
    if path.is_file():
        latents = torch.load(path)
        if len(latents) == len(data.images):
            return latents
    started = time.monotonic()
    latents = torch.cat([module.vae_latents(chunk) for chunk in data.images.split(64)])
    torch.save(latents, path)
    print(f"# encoded {len(latents)} frames with the VAE in {time.monotonic() - started:.0f} s -> {path}")
    return latents


def probe(rung: str, module: nn.Module, model: VideoVLAModel, held_out: EpisodeDataset, episodes: int) -> str:
    """RMS change of the normalised first chunk when instructions or images are shuffled among held-out frames."""
    policy = RegressorPolicy(module, model)
    size = model.config.image_size
    count = min(episodes, len(held_out))
    firsts = [held_out[i] for i in range(count)]
    images = torch.from_numpy(np.stack([to_model_range(prepare_image(e.frames[0], size)) for e in firsts]))
    images = images.permute(0, 3, 1, 2).float()
    instructions = [e.metadata.instruction for e in firsts]
    order = np.random.default_rng(0).permutation(count).tolist()

    def predict(frames: torch.Tensor, texts: list[str]) -> torch.Tensor:
        torch.manual_seed(0)  # the same sampling noise for all three (rung 3 samples)
        return policy.normalised(frames, texts)

    base = predict(images, instructions)
    text_shuffled = predict(images, [instructions[i] for i in order])
    image_shuffled = predict(images[order], instructions)

    def rms(other: torch.Tensor) -> float:
        return float(((other - base)[..., :2] ** 2).mean().sqrt())

    return (
        f"probe {rung:15s} instructions shuffled: rms {rms(text_shuffled):.3f}   "
        f"images shuffled: rms {rms(image_shuffled):.3f} (normalised dx, dy)"
    )


def train_videovla(rung: str, args: argparse.Namespace, held_out: EpisodeDataset) -> None:
    """Rung 4 (or its ablation) through `videovla-train` from the checkpoint's frozen parts, fresh transformer."""
    from videovla_model import train as videovla_train
    from videovla_model.policy import VideoVLAPolicy
    from videovla_model.transformer import VideoVLATransformer

    root = Path(args.output)
    init = root / "init"
    if not (init / "config.json").is_file():
        frozen = VideoVLAModel.from_pretrained(args.checkpoint)
        transformer = dataclasses.replace(
            frozen.config.transformer, learned_positional_embeddings=args.learned_positions
        )
        config = dataclasses.replace(
            frozen.config,
            transformer=transformer,
            unconditional_text=args.unconditional_text,
            observation_film=args.observation_film,
        )
        torch.manual_seed(args.seed)
        model = VideoVLAModel(
            config,
            tokenizer=frozen.tokenizer,
            text_encoder=frozen.text_encoder,
            vae=frozen.vae,
            transformer=VideoVLATransformer(config),
            normalizer=frozen.normalizer,
        )
        model.save_pretrained(init)
    output = root / rung
    argv = ["--dataset", args.dataset, "--init-from", str(init), "--output", str(output), "--steps", str(args.steps)]
    argv += ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--save-every", str(args.eval_every)]
    argv += ["--num-workers", "0", "--seed", str(args.seed), "--log-every", "50", *args.train_args]
    if not VIDEOVLA_TRAIN[rung]:
        argv.append("--no-video-loss")
    started = time.monotonic()
    videovla_train.main(argv)
    seconds_per_step = (time.monotonic() - started) / args.steps
    metrics = videovla_train.read_metrics(output / "metrics.csv")
    for step, folder in videovla_train.complete_checkpoints(output):
        loss = np.mean([m["action_loss"] for m in metrics if step - 50 < m["step"] <= step] or [float("nan")])
        policy = VideoVLAPolicy.from_pretrained(folder, seed=args.seed)
        print(
            row(rung, step, seconds_per_step * step, float(loss), headings(policy, held_out, args.episodes, 1)),
            flush=True,
        )
    if args.closed_loop:  # the last checkpoint
        print_closed_loop(rung, policy, args.closed_loop)


def print_closed_loop(rung: str, policy: Policy, episodes: int) -> None:
    """Pick episodes with seeds 0..episodes-1 in `closed_loop.py`'s loop: one row per episode, then a summary."""
    started = time.monotonic()
    results = closed_loop_evaluate(lambda _env: policy, "pick", range(episodes), 30.0, 64)
    print("# closed loop " + closed_loop_summary(rung, results, time.monotonic() - started), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="training demonstrations (videovla-collect output)")
    parser.add_argument("--held-out", required=True, help="held-out pick demonstrations (first frames are scored)")
    parser.add_argument("--checkpoint", default="checkpoints/videovla-sim-small", help="frozen parts and config")
    parser.add_argument("--rungs", nargs="+", choices=RUNGS, default=["cnn", "dit"], help="rungs to run, in order")
    parser.add_argument("--steps", type=int, default=100_000, help="optimiser steps per rung (or --minutes)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per in-process rung")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between learning-curve rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--episodes", type=int, default=60, help="held-out episodes scored")
    parser.add_argument(
        "--train-episodes", type=int, default=0, help="also score the first frames of this many training episodes"
    )
    parser.add_argument(
        "--closed-loop",
        type=int,
        default=0,
        help="then this many pick episodes (seeds 0..) in benchmarks/closed_loop.py's loop (rung 4: last checkpoint)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/ladder", help="folder for rungs 3-4's training runs")
    parser.add_argument(
        "--learned-positions",
        action="store_true",
        help="rung 4's fresh transformer gets a learned absolute position table (as the dit-*-pos rungs)",
    )
    parser.add_argument(
        "--timestep-beta", type=float, default=1.0, help="rung 3: training timesteps from Beta(a, 1) (1: uniform)"
    )
    parser.add_argument(
        "--pure-noise-fraction",
        type=float,
        default=0.0,
        help="rung 3: chance a training sample takes the last, pure-noise timestep (as videovla-train's flag)",
    )
    parser.add_argument("--sampling-steps", type=int, default=10, help="rung 3: scheduler steps when sampling")
    parser.add_argument(
        "--observation-film",
        action="store_true",
        help="rung 4's fresh transformer gets the FiLM pixel encoder of the observation (as dit-film-pixels-pos)",
    )
    parser.add_argument(
        "--unconditional-text",
        choices=("empty_prompt", "zeros"),
        default="empty_prompt",
        help="rung 4's unconditional instruction (zeros: the mean standardised instruction, as the public model)",
    )
    parser.add_argument(
        "--train-args", nargs=argparse.REMAINDER, default=[], help="rung 4: further videovla-train flags, last"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    held_out = EpisodeDataset(args.held_out)
    model = VideoVLAModel.from_pretrained(args.checkpoint)
    data = None
    print(HEADER, flush=True)
    for rung in args.rungs:
        if rung in VIDEOVLA_TRAIN:
            train_videovla(rung, args, held_out)
            continue
        if data is None:
            started = time.monotonic()
            data = load_windows(EpisodeDataset(args.dataset), model)
            print(f"# {len(data.targets)} windows loaded in {time.monotonic() - started:.0f} s", flush=True)
        module = train_deterministic(rung, args, model, data, held_out)
        print(probe(rung, module, model, held_out, args.episodes), flush=True)
        if args.closed_loop:
            print_closed_loop(rung, RegressorPolicy(module, model), args.closed_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
