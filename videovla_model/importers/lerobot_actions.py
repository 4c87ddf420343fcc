"""Which LeRobot action conventions become the suite's actions, and how (ConversionError for the others).

The suite's action row t moves the end effector from its pose at frame t to its pose at frame t + 1
(`videovla_model.action_convention`: dx dy dz droll dpitch dyaw, extrinsic XYZ Euler, then the absolute gripper
0 closed .. 1 open). LeRobot datasets say what their vectors hold only through their column names, so:

    delta_ee        a feature whose names are exactly DEFAULT_ACTION_DIM_NAMES (any order; columns are picked
                    by name): copied as they are. What `videovla-export lerobot` writes.
    absolute_ee     a feature holding the end-effector pose at each frame, names x y z and either roll pitch
                    yaw (extrinsic XYZ Euler, radians) or qw qx qy qz, plus an optional `gripper` column (0..1):
                    converted with `videovla_model.resampling.resample` (the recorder's rule, at the dataset's
                    fps); the episode loses its last frame, which has no next pose.
    absolute_joint  joint positions (names with "joint" or ending in ".pos", LeRobot's SO-100 / Koch style):
                    refused, because end-effector deltas need the arm's forward kinematics (its URDF).
Anything else (joint velocities, other delta orders, mixed vectors) is refused with the names found.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from transforms3d.euler import euler2quat

from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.importers.staging import ConversionError
from videovla_model.resampling import PoseSeries, ResampleError, StreamNames, resample

EULER_NAMES = ("x", "y", "z", "roll", "pitch", "yaw")
QUATERNION_NAMES = ("x", "y", "z", "qw", "qx", "qy", "qz")
GRIPPER_NAME = "gripper"


class ActionConvention(StrEnum):
    AUTO = "auto"
    DELTA_EE = "delta_ee"
    ABSOLUTE_EE = "absolute_ee"
    ABSOLUTE_JOINT = "absolute_joint"


@dataclass(frozen=True)
class ActionSource:
    """Where an imported episode's actions come from: a feature, its convention and the columns used."""

    feature: str
    convention: ActionConvention
    columns: tuple[int, ...]
    """delta_ee: the columns in DEFAULT_ACTION_DIM_NAMES order; absolute_ee: x y z, then the rotation columns."""
    gripper_column: int | None = None


def _looks_like_joints(names: tuple[str, ...]) -> bool:
    return any("joint" in name.lower() or name.endswith(".pos") for name in names)


def action_source(feature: str, names: tuple[str, ...], convention: ActionConvention) -> ActionSource:
    """The columns of `feature` (named `names`) to read under `convention`; ConversionError when impossible."""
    if convention is ActionConvention.AUTO:
        if sorted(names) == sorted(DEFAULT_ACTION_DIM_NAMES):
            convention = ActionConvention.DELTA_EE
        elif _looks_like_joints(names):
            convention = ActionConvention.ABSOLUTE_JOINT
        else:
            raise ConversionError(
                f"feature {feature!r} has names {list(names)[:16]}: not the suite's delta_ee names "
                f"{list(DEFAULT_ACTION_DIM_NAMES)}; if it holds absolute end-effector poses pass "
                f"--action-convention absolute_ee (with --pose-feature naming the pose feature)"
            )
    if convention is ActionConvention.ABSOLUTE_JOINT:
        raise ConversionError(
            f"feature {feature!r} holds absolute joint positions ({list(names)[:8]}): end-effector deltas need "
            f"the arm's forward kinematics (its URDF). Compute the end-effector pose per frame, store it as a "
            f"feature named {list(EULER_NAMES)} + [{GRIPPER_NAME!r}] and import with --action-convention absolute_ee"
        )
    if convention is ActionConvention.DELTA_EE:
        if sorted(names) != sorted(DEFAULT_ACTION_DIM_NAMES):
            raise ConversionError(
                f"feature {feature!r} has names {list(names)[:16]}; delta_ee needs exactly "
                f"{list(DEFAULT_ACTION_DIM_NAMES)} (translation first, extrinsic XYZ Euler, gripper 0..1)"
            )
        return ActionSource(feature, convention, tuple(names.index(n) for n in DEFAULT_ACTION_DIM_NAMES))
    gripper = names.index(GRIPPER_NAME) if GRIPPER_NAME in names else None
    for pose_names in (EULER_NAMES, QUATERNION_NAMES):
        if all(name in names for name in pose_names):
            return ActionSource(feature, convention, tuple(names.index(n) for n in pose_names), gripper)
    raise ConversionError(
        f"feature {feature!r} has names {list(names)[:16]}; absolute_ee needs {list(EULER_NAMES)} "
        f"or {list(QUATERNION_NAMES)} (and optionally {GRIPPER_NAME!r})"
    )


def convert_actions(
    source: ActionSource, rows: np.ndarray, fps: int, episode: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(L, D) feature rows of one episode -> (T, 7) float32 actions for frames 0..T-1, and the resampler's flags."""
    if source.convention is ActionConvention.DELTA_EE:
        return rows[:, list(source.columns)].astype(np.float32), ()
    positions = rows[:, list(source.columns[:3])]
    rotation = rows[:, list(source.columns[3:])]
    if rotation.shape[1] == 3:  # Euler angles are read in the suite's order (see the module docstring)
        rotation = np.array([euler2quat(*angles, "sxyz") for angles in rotation])
    stamps = np.round(np.arange(len(rows)) * 1e9 / fps).astype(np.int64)
    gripper = None if source.gripper_column is None else rows[:, source.gripper_column]
    names = StreamNames(f"episode {episode} frames", f"episode {episode} {source.feature}", f"{source.feature}.gripper")
    try:
        resampled = resample(
            stamps,
            PoseSeries(stamps, positions, rotation),
            None if gripper is None else stamps,
            gripper,
            fps,
            names=names,
        )
    except ResampleError as error:
        raise ConversionError(str(error)) from error
    return resampled.actions, resampled.flags
