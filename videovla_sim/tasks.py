"""Language-conditioned tabletop tasks: instructions, seeded episode layouts and success checks.

Three task families, each with one instruction form:

- pick:  "pick up the <colour> <shape>"                      lift it 5 cm off the table and hold it
- place: "put the <colour> <shape> on the <colour> plate"     leave it resting on the plate
- stack: "stack the <colour> <shape> on the <colour> <shape>" leave it resting on top of the other one

Shapes are those of `scene.SHAPES` (cube, cylinder), colours those of `scene.COLOURS`. An episode is fully
determined by (task, seed): the named objects plus random distractors are placed without overlap in the
reachable part of the table, every object with a random yaw. Success is read from the simulator state only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from videovla_sim.scene import COLOURS, RECEPTACLES, SHAPES, ObjectSpec, Scene

TASK_FAMILIES: tuple[str, ...] = ("pick", "place", "stack")

_FORMS = (
    "'pick up the <colour> <shape>'",
    "'put the <colour> <shape> on the <colour> plate'",
    "'stack the <colour> <shape> on the <colour> <shape>'",
)
_PATTERNS: dict[str, re.Pattern[str]] = {
    "pick": re.compile(r"(?:pick up|lift) the (\w+) (\w+)"),
    "place": re.compile(r"(?:put|place) the (\w+) (\w+) (?:on|onto|in|into) the (\w+) (\w+)"),
    "stack": re.compile(r"stack the (\w+) (\w+) on(?:to| top of)? the (\w+) (\w+)"),
}

LIFT_HEIGHT = 0.05
"""A picked object counts as picked up once its bottom is this far above the table [m]."""

GRASP_HEIGHT = 0.01
"""An object pinched by both finger pads counts as grasped once its bottom is this far above the table [m]."""


class InstructionError(ValueError):
    """An instruction (or task name) the simulator cannot turn into a task; the message says why."""


@dataclass(frozen=True)
class ObjectRef:
    """An object named by an instruction: colour + kind (a shape or a receptacle)."""

    colour: str
    kind: str

    @property
    def name(self) -> str:
        """The scene body name, e.g. "red_cube"."""
        return f"{self.colour}_{self.kind}"

    @property
    def words(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class TaskSpec:
    family: str
    target: ObjectRef
    """The object to move."""
    destination: ObjectRef | None = None
    """Where to put it (place: a receptacle; stack: another shape); None for pick."""

    @property
    def instruction(self) -> str:
        if self.family == "pick":
            return f"pick up the {self.target.words}"
        assert self.destination is not None
        verb = "put" if self.family == "place" else "stack"
        return f"{verb} the {self.target.words} on the {self.destination.words}"


def _object_ref(colour: str, kind: str, allowed_kinds: Sequence[str], role: str, text: str) -> ObjectRef:
    if colour not in COLOURS:
        raise InstructionError(f"unknown colour {colour!r} in {text!r}; known colours: {', '.join(sorted(COLOURS))}")
    if kind not in allowed_kinds:
        raise InstructionError(f"unknown {role} {kind!r} in {text!r}; known {role}s: {', '.join(allowed_kinds)}")
    return ObjectRef(colour, kind)


def parse_instruction(text: str) -> TaskSpec:
    """Turns an instruction into a TaskSpec; raises InstructionError naming the unknown word or form."""
    normalised = " ".join(text.lower().replace(",", " ").split()).rstrip(".!")
    shapes = tuple(sorted(SHAPES))
    for family, pattern in _PATTERNS.items():
        match = pattern.fullmatch(normalised)
        if match is None:
            continue
        words = match.groups()
        target = _object_ref(words[0], words[1], shapes, "object", text)
        if family == "pick":
            return TaskSpec(family, target)
        destination_kinds = tuple(sorted(RECEPTACLES)) if family == "place" else shapes
        role = "receptacle" if family == "place" else "object"
        destination = _object_ref(words[2], words[3], destination_kinds, role, text)
        if destination == target:
            raise InstructionError(f"{text!r} names the same object twice; the destination must be another one")
        return TaskSpec(family, target, destination)
    raise InstructionError(f"cannot understand {text!r}; supported instructions: {', '.join(_FORMS)}")


@dataclass(frozen=True)
class PlacementConfig:
    """Where objects may go: a reachable band of the table in front of the arm (base_link, metres)."""

    x: tuple[float, float] = (0.22, 0.42)
    y: tuple[float, float] = (-0.22, 0.22)
    max_radius: float = 0.43
    """Largest distance from the arm base: top-down grasps further out are beyond the RM65's reach."""
    clearance: float = 0.045
    """Free space between object footprints, so open fingers (4 cm + pad) fit beside a grasped object."""
    distractors: tuple[int, int] = (2, 3)
    """Inclusive range of the number of distractor objects."""

    def __post_init__(self) -> None:
        if not (self.x[0] < self.x[1] and self.y[0] < self.y[1]):
            raise ValueError(f"PlacementConfig.x and .y must be (low, high) ranges, got {self.x} {self.y}")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(
                f"PlacementConfig.distractors must be (low, high) with 0 <= low <= high, got {self.distractors}"
            )


@dataclass(frozen=True)
class EpisodeSetup:
    """One episode: the task and where every object starts. Fully determined by (task, seed)."""

    task: TaskSpec
    objects: tuple[ObjectSpec, ...]
    seed: int

    @property
    def instruction(self) -> str:
        return self.task.instruction

    def spec(self, ref: ObjectRef) -> ObjectSpec:
        """The placed object an ObjectRef names."""
        for spec in self.objects:
            if spec.name == ref.name:
                return spec
        raise KeyError(f"{ref.name} is not in this episode's objects {[s.name for s in self.objects]}")

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable description (what recorders store in an episode's `extra`)."""
        return {
            "task": self.task.family,
            "instruction": self.instruction,
            "seed": self.seed,
            "objects": [asdict(spec) for spec in self.objects],
        }


def _random_task(family: str, rng: np.random.Generator) -> TaskSpec:
    colours, shapes = sorted(COLOURS), sorted(SHAPES)
    target = ObjectRef(str(rng.choice(colours)), str(rng.choice(shapes)))
    if family == "pick":
        return TaskSpec(family, target)
    if family == "place":
        return TaskSpec(family, target, ObjectRef(str(rng.choice(colours)), str(rng.choice(sorted(RECEPTACLES)))))
    other = [c for c in colours if c != target.colour]
    # A cube underneath gives the flattest, widest top to stack on.
    return TaskSpec(family, target, ObjectRef(str(rng.choice(other)), "cube"))


def with_target(setup: EpisodeSetup, target: ObjectRef) -> EpisodeSetup:
    """The same pick layout with another of its objects named: only the instruction changes, not the scene.

    Raises InstructionError for a task other than pick, or an object the scene does not hold.
    """
    if setup.task.family != "pick":
        raise InstructionError(f"only pick episodes can name another object, got a {setup.task.family} episode")
    if target.name not in {spec.name for spec in setup.objects}:
        raise InstructionError(f"the scene holds no {target.words}: {[spec.name for spec in setup.objects]}")
    return replace(setup, task=TaskSpec("pick", target))


def sample_episode(task: str, seed: int, config: PlacementConfig | None = None) -> EpisodeSetup:
    """An episode of `task` (a family from TASK_FAMILIES, or a full instruction), reproducible from `seed`.

    Raises InstructionError when `task` is neither a family name nor an understood instruction.
    """
    config = config or PlacementConfig()
    rng = np.random.default_rng(seed)
    spec = _random_task(task, rng) if task in TASK_FAMILIES else parse_instruction(task)
    named = [spec.target] if spec.destination is None else [spec.target, spec.destination]
    taken = {ref.name for ref in named}
    candidates = [ObjectRef(c, k) for c in sorted(COLOURS) for k in sorted(SHAPES) if f"{c}_{k}" not in taken]
    count = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    # Distractors never share a colour-and-kind with a named object, so every instruction stays unambiguous.
    refs = named + [candidates[int(i)] for i in picks]
    if spec.family == "place":
        # A second plate in another colour makes the destination's colour matter.
        assert spec.destination is not None
        plate_colours = [c for c in sorted(COLOURS) if c != spec.destination.colour]
        refs.append(ObjectRef(str(rng.choice(plate_colours)), spec.destination.kind))
    for _attempt in range(100):
        objects = _place(refs, rng, config)
        if objects is not None:
            return EpisodeSetup(task=spec, objects=objects, seed=seed)
    raise RuntimeError(f"could not place {len(refs)} objects without overlap in {config}")


def _place(
    refs: Sequence[ObjectRef], rng: np.random.Generator, config: PlacementConfig
) -> tuple[ObjectSpec, ...] | None:
    placed: list[ObjectSpec] = []
    # The largest footprints go first: they are the hardest to fit.
    order = sorted(range(len(refs)), key=lambda i: refs[i].kind not in RECEPTACLES)
    by_index: dict[int, ObjectSpec] = {}
    for index in order:
        ref = refs[index]
        for _try in range(200):
            x, y = rng.uniform(*config.x), rng.uniform(*config.y)
            if math.hypot(x, y) > config.max_radius:
                continue
            candidate = ObjectSpec(ref.colour, ref.kind, float(x), float(y), float(rng.uniform(-math.pi, math.pi)))
            if all(
                math.hypot(x - other.x, y - other.y)
                >= candidate.footprint_radius + other.footprint_radius + config.clearance
                for other in placed
            ):
                placed.append(candidate)
                by_index[index] = candidate
                break
        else:
            return None
    return tuple(by_index[i] for i in range(len(refs)))


def _yaw(quaternion: np.ndarray) -> float:
    w, x, y, z = quaternion
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _is_upright(quaternion: np.ndarray, tolerance: float = 0.2) -> bool:
    """Whether the body's z axis points up within `tolerance` rad."""
    _, x, y, _ = quaternion
    return 1 - 2 * (x * x + y * y) > math.cos(tolerance)


def _pinched_above(spec: ObjectSpec, scene: Scene, height: float) -> bool:
    position, _ = scene.object_pose(spec.name)
    return bool(position[2] - spec.half_height > height and scene.fingers_touch(spec.name))


def grasped_objects(setup: EpisodeSetup, scene: Scene) -> tuple[str, ...]:
    """Names of the objects pinched between the fingers and off the table (a diagnostic: what the arm holds)."""
    return tuple(
        spec.name for spec in setup.objects if spec.kind in SHAPES and _pinched_above(spec, scene, GRASP_HEIGHT)
    )


def check_success(setup: EpisodeSetup, scene: Scene) -> bool:
    """Whether the scene's state fulfils the episode's task (see the module doc for each family)."""
    task = setup.task
    target = setup.spec(task.target)
    if task.family == "pick":
        return _pinched_above(target, scene, LIFT_HEIGHT)
    position, quaternion = scene.object_pose(target.name)
    assert task.destination is not None
    destination = setup.spec(task.destination)
    base, base_quaternion = scene.object_pose(destination.name)
    horizontal = math.hypot(position[0] - base[0], position[1] - base[1])
    resting_height = base[2] + destination.half_height + target.half_height
    if task.family == "place":
        inside = horizontal < RECEPTACLES[destination.kind][0] - 0.01
    else:
        inside = horizontal < 0.6 * SHAPES[destination.kind][0]
        # The object underneath must itself still stand where it was put, upright on the table.
        inside = inside and _is_upright(base_quaternion) and abs(base[2] - destination.half_height) < 0.005
    return bool(
        inside
        and abs(position[2] - resting_height) < 0.01
        and _is_upright(quaternion)
        and not scene.fingers_touch(target.name)
        and scene.object_speed(target.name) < 0.02
    )


def object_yaw(scene: Scene, name: str) -> float:
    """Yaw [rad] of an object about base z, from the simulator state."""
    return _yaw(scene.object_pose(name)[1])
