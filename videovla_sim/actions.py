"""The suite's action convention, on commanded end-effector targets (numpy + transforms3d only).

Row i of an action sequence moves the commanded target from T_{i-1} to T_i, both in base_link:

    p_i = p_{i-1} + (dx, dy, dz)
    R_i = euler2mat(droll, dpitch, dyaw, "sxyz") @ R_{i-1}      (extrinsic XYZ Euler angles, world frame)

T_{-1} is the pose the sequence starts from (for a policy chunk, the end-effector pose at the image's
capture time; for a recorded episode, the commanded target when the episode started). The gripper column
is absolute (0 closed .. 1 open), not a delta.
"""

from __future__ import annotations

import numpy as np
from transforms3d.euler import euler2mat, mat2euler
from transforms3d.quaternions import mat2quat, quat2mat


def pose_deltas(positions: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Per-step deltas between consecutive poses.

    positions: (T + 1, 3) [m]; rotations: (T + 1, 3, 3). Returns (T, 6): dx, dy, dz, droll, dpitch, dyaw.
    """
    positions = np.asarray(positions, dtype=float)
    rotations = np.asarray(rotations, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3 or rotations.shape != (positions.shape[0], 3, 3):
        raise ValueError(
            f"positions must be (T+1, 3) and rotations (T+1, 3, 3), got {positions.shape} and {rotations.shape}"
        )
    translation = np.diff(positions, axis=0)
    rotation = np.array([mat2euler(rotations[i + 1] @ rotations[i].T, "sxyz") for i in range(len(translation))])
    return np.concatenate((translation, rotation.reshape(-1, 3)), axis=1)


def integrate_deltas(
    start_position: np.ndarray, start_rotation: np.ndarray, deltas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Applies per-step deltas (T, 6) from the start pose; returns positions (T, 3) and rotations (T, 3, 3)."""
    deltas = np.asarray(deltas, dtype=float)
    if deltas.ndim != 2 or deltas.shape[1] != 6:
        raise ValueError(f"deltas must be (T, 6) = dx, dy, dz, droll, dpitch, dyaw, got {deltas.shape}")
    positions = np.asarray(start_position, dtype=float) + np.cumsum(deltas[:, :3], axis=0)
    rotations = np.empty((len(deltas), 3, 3))
    rotation = np.asarray(start_rotation, dtype=float)
    for i, (roll, pitch, yaw) in enumerate(deltas[:, 3:]):
        rotation = euler2mat(roll, pitch, yaw, "sxyz") @ rotation
        rotations[i] = rotation
    return positions, rotations


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """(4,) w, x, y, z -> (3, 3)."""
    return quat2mat(np.asarray(quaternion, dtype=float))


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) -> (4,) w, x, y, z with w >= 0."""
    quaternion = mat2quat(np.asarray(rotation, dtype=float))
    return quaternion if quaternion[0] >= 0 else -quaternion
