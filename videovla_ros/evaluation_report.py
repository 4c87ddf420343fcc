"""Pure pieces of the closed-loop evaluation (`videovla-eval`): statistics, the report, instruction checks and the
imagined-vs-actual video. No rclpy, no torch: the ROS harness in `videovla_ros.evaluate` feeds these.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from videovla_sim.tasks import InstructionError, parse_instruction

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial success rate; (0, 1) when there are no trials."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got successes={successes}, trials={trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def instruction_problem(instruction: str) -> str | None:
    """Why the simulated scene cannot contain what `instruction` names (unknown colour, object or form), else None.

    The policy is still given such an instruction: a language model conditions on any text, and a user must be
    able to see what it does; the message only says that the scene cannot judge it.
    """
    try:
        parse_instruction(instruction)
    except InstructionError as error:
        return str(error)
    return None


def named_object(instruction: str) -> str:
    """The scene name of the object an instruction asks to move (e.g. "red_cube"), "" when the sim cannot parse it."""
    try:
        return parse_instruction(instruction).target.name
    except InstructionError:
        return ""


FAILURE_KINDS: tuple[str, ...] = ("held the named object", "held only other objects", "held nothing")
"""How a failed episode ended, by what the gripper held off the table at some point during it."""


@dataclass(frozen=True)
class EpisodeResult:
    """One closed-loop episode."""

    task: str
    seed: int
    instruction: str
    success: bool
    seconds: float
    """Wall time from enabling the bridge to success or the time limit [s]."""
    chunks: int
    """Action chunks that reached the evaluator during the episode."""
    inference_times: tuple[float, ...]
    """ActionChunk.inference_time of each of those chunks [s]."""
    chunk_intervals: tuple[float, ...]
    """Wall time between consecutive chunk arrivals [s] (the control cycle)."""
    idle_fraction: float
    """The bridge's share of streaming ticks in which the commanded pose did not move."""
    video: str = ""
    """Path of the episode's imagined-vs-actual GIF, or "" when none was recorded."""
    named_object: str = ""
    """Scene name of the object the instruction names, e.g. "red_cube" ("" when the sim cannot parse it)."""
    grasped_objects: tuple[str, ...] = ()
    """Objects the gripper held off the table at some point during the episode."""
    sim_seconds: float = float("nan")
    """`seconds` in the simulated arm's time (its ee_pose stamps: /clock in simulated-time mode) [s]."""

    @property
    def failure_kind(self) -> str | None:
        """One of FAILURE_KINDS for a failed episode; None for a success."""
        if self.success:
            return None
        if self.named_object and self.named_object in self.grasped_objects:
            return FAILURE_KINDS[0]
        return FAILURE_KINDS[1] if self.grasped_objects else FAILURE_KINDS[2]


@dataclass(frozen=True)
class TaskSummary:
    task: str
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    seconds_per_episode: float
    failures: dict[str, int] = field(default_factory=dict)
    """Failed episodes by FAILURE_KINDS."""


@dataclass(frozen=True)
class Summary:
    """Everything `videovla-eval` reports; `to_json` is what report.json holds."""

    checkpoint: str
    mode: str
    tasks: tuple[TaskSummary, ...]
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_inference_time: float
    seconds_per_chunk: float
    seconds_per_episode: float
    idle_fraction: float
    videos: tuple[str, ...] = field(default=())
    sim_time: bool = False
    """Whether the simulated arm kept the time (/clock, use_sim_time) rather than the wall clock."""
    sim_seconds_per_episode: float = float("nan")

    def to_json(self) -> dict[str, object]:
        return json.loads(json.dumps(asdict(self)))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def summarize(results: Sequence[EpisodeResult], checkpoint: str, mode: str, sim_time: bool = False) -> Summary:
    """Per-task and overall success rates (Wilson 95% intervals) and the timing means over all episodes."""
    tasks = []
    for task in dict.fromkeys(r.task for r in results):
        mine = [r for r in results if r.task == task]
        wins = sum(r.success for r in mine)
        tasks.append(
            TaskSummary(
                task=task,
                episodes=len(mine),
                successes=wins,
                success_rate=wins / len(mine),
                ci95=wilson_interval(wins, len(mine)),
                seconds_per_episode=_mean([r.seconds for r in mine]),
                failures={kind: sum(r.failure_kind == kind for r in mine) for kind in FAILURE_KINDS},
            )
        )
    successes = sum(r.success for r in results)
    return Summary(
        checkpoint=checkpoint,
        mode=mode,
        tasks=tuple(tasks),
        episodes=len(results),
        successes=successes,
        success_rate=successes / len(results) if results else float("nan"),
        ci95=wilson_interval(successes, len(results)),
        mean_inference_time=_mean([t for r in results for t in r.inference_times]),
        seconds_per_chunk=_mean([t for r in results for t in r.chunk_intervals]),
        seconds_per_episode=_mean([r.seconds for r in results]),
        idle_fraction=_mean([r.idle_fraction for r in results]),
        videos=tuple(r.video for r in results if r.video),
        sim_time=sim_time,
        sim_seconds_per_episode=_mean([r.sim_seconds for r in results]),
    )


def format_summary(summary: Summary) -> str:
    """The human-readable report (what `videovla-eval` prints at the end)."""
    clock = "simulated time" if summary.sim_time else "wall-clock time"
    lines = [f"checkpoint {summary.checkpoint} (bridge mode {summary.mode}, {clock})"]
    for task in summary.tasks:
        low, high = task.ci95
        lines.append(
            f"  {task.task}: {task.successes}/{task.episodes} = {task.success_rate:.1%} "
            f"(95% CI {low:.1%}..{high:.1%}), {task.seconds_per_episode:.1f} s/episode"
        )
        if any(task.failures.values()):
            lines.append("    failures: " + ", ".join(f"{count} {kind}" for kind, count in task.failures.items()))
    low, high = summary.ci95
    lines += [
        f"  all: {summary.successes}/{summary.episodes} = {summary.success_rate:.1%} (95% CI {low:.1%}..{high:.1%})",
        f"  mean inference time {summary.mean_inference_time:.3f} s, {summary.seconds_per_chunk:.3f} s/chunk, "
        f"{summary.seconds_per_episode:.1f} s/episode ({summary.sim_seconds_per_episode:.1f} simulated), arm idle "
        f"fraction {summary.idle_fraction:.1%}",
    ]
    lines += [f"  video: {path}" for path in summary.videos]
    return "\n".join(lines)


def write_report(folder: Path, summary: Summary, results: Sequence[EpisodeResult]) -> Path:
    """Writes report.json (summary + every episode) and report.txt into `folder`; returns report.json's path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"summary": summary.to_json(), "episodes": [asdict(r) for r in results]}
    path = folder / "report.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    (folder / "report.txt").write_text(format_summary(summary) + "\n")
    return path


# The imagined-vs-actual video -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImaginedClip:
    """One decoded imagination. frames: (T, H, W, 3) uint8; frame k shows the scene k * period after `start_ns`."""

    start_ns: int
    period: float
    frames: np.ndarray


class FrameTimeline:
    """Camera frames by stamp, for looking up the frame nearest to a time."""

    def __init__(self) -> None:
        self._stamps: list[int] = []
        self._frames: list[np.ndarray] = []

    def add(self, stamp_ns: int, frame: np.ndarray) -> None:
        """Frames may arrive out of order; each (H, W, 3) uint8 frame is kept sorted by stamp."""
        index = bisect.bisect(self._stamps, stamp_ns)
        self._stamps.insert(index, stamp_ns)
        self._frames.insert(index, frame)

    def __len__(self) -> int:
        return len(self._stamps)

    def nearest(self, t_ns: int) -> np.ndarray | None:
        if not self._stamps:
            return None
        index = bisect.bisect(self._stamps, t_ns)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(self._stamps)]
        best = min(candidates, key=lambda i: abs(self._stamps[i] - t_ns))
        return self._frames[best]


def _labelled(frame: np.ndarray, label: str, scale: int) -> np.ndarray:
    big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    banner = np.full((14, big.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, label, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([banner, big], axis=0)


def side_by_side(clips: Sequence[ImaginedClip], camera: FrameTimeline, scale: int = 3) -> list[np.ndarray]:
    """One panel per imagined frame: the imagined frame on the left, the camera frame nearest to the time it
    imagines on the right, each enlarged `scale` times (nearest neighbour) under a label.

    Returns a list of (14 + scale * H, 2 * scale * W + 4, 3) uint8 panels, clips in the given order.
    """
    panels = []
    for clip in clips:
        for k, imagined in enumerate(clip.frames):
            actual = camera.nearest(clip.start_ns + round(k * clip.period * 1e9))
            if actual is None:
                continue
            if actual.shape != imagined.shape:
                actual = cv2.resize(actual, (imagined.shape[1], imagined.shape[0]), interpolation=cv2.INTER_AREA)
            gap = np.full((14 + imagined.shape[0] * scale, 4, 3), 255, np.uint8)
            panels.append(
                np.concatenate(
                    [
                        _labelled(imagined, f"imagined +{k * clip.period:.1f}s", scale),
                        gap,
                        _labelled(actual, "actual", scale),
                    ],
                    axis=1,
                )
            )
    return panels


def write_gif(path: Path, frames: Sequence[np.ndarray], frame_period: float) -> Path:
    """Writes (H, W, 3) uint8 frames as a looping GIF shown at `frame_period` seconds per frame."""
    if not frames:
        raise ValueError(f"write_gif needs at least one frame for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Pillow's default RGB -> palette conversion spends its 256 colours on the large grey areas and washes out the
    # small coloured objects the task is about; an octree palette per frame keeps them.
    images = [
        PILImage.fromarray(np.ascontiguousarray(f)).quantize(
            256, method=PILImage.Quantize.FASTOCTREE, dither=PILImage.Dither.NONE
        )
        for f in frames
    ]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(frame_period * 1000)), loop=0)
    return path
