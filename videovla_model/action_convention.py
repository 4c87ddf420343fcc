"""The suite's action convention, on commanded end-effector targets (numpy + transforms3d only).

Row i of an action sequence moves the commanded target from T_{i-1} to T_i, both in base_link:

    p_i = p_{i-1} + (dx, dy, dz)
    R_i = euler2mat(droll, dpitch, dyaw, "sxyz") @ R_{i-1}      (extrinsic XYZ Euler angles, world frame)

T_{-1} is the pose the sequence starts from (for a policy chunk, the end-effector pose at the image's
capture time; for a recorded episode, the commanded target when the episode started). The gripper column
is absolute (0 closed .. 1 open), not a delta. Action rows are stored translation first:
videovla_model.contract.DEFAULT_ACTION_DIM_NAMES (dx, dy, dz, droll, dpitch, dyaw, gripper).

This module owns the convention: the expert's data, the recorder, the importers and the arm bridge all
convert through it.
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


def float32_pose_deltas(positions: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Per-step deltas (T, 6) float32 whose float32 integration from the first pose lands on every pose.

    Plain `pose_deltas(...).astype(float32)` drifts: each row's rounding error adds up along the episode.
    Here row t is the delta from the pose that integrating rows 0..t-1 (as stored) reaches to pose t + 1,
    so `integrate_deltas(positions[0], rotations[0], deltas)` stays within the float32 rounding of one step
    (about 6e-8 of the step: 1e-9 m / rad for steps up to 0.015 m / 0.015 rad) of every pose, however long
    the episode. positions: (T + 1, 3) [m]; rotations: (T + 1, 3, 3).
    """
    positions = np.asarray(positions, dtype=float)
    rotations = np.asarray(rotations, dtype=float)
    pose_deltas(positions[:2], rotations[:2])  # validates the shapes with the same message
    deltas = np.empty((len(positions) - 1, 6), dtype=np.float32)
    position, rotation = positions[0].copy(), rotations[0].copy()
    for step in range(len(deltas)):
        deltas[step, :3] = positions[step + 1] - position
        deltas[step, 3:] = mat2euler(rotations[step + 1] @ rotation.T, "sxyz")
        stored = deltas[step].astype(float)
        position = position + stored[:3]
        rotation = euler2mat(*stored[3:], "sxyz") @ rotation
    return deltas


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


def slerp_quaternions(q0: np.ndarray, q1: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Spherical interpolation along the shorter arc, row by row.

    q0, q1: (N, 4) unit quaternions w, x, y, z; fraction: (N,) in [0, 1]. Returns (N, 4) unit, w >= 0.
    """
    q0 = np.asarray(q0, dtype=float)
    q1 = np.array(q1, dtype=float)
    fraction = np.asarray(fraction, dtype=float)[:, None]
    dot = np.sum(q0 * q1, axis=1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    # Nearly parallel quaternions: the linear blend is exact to float precision and avoids dividing by ~0.
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    weight0 = np.where(near, 1.0 - fraction, np.sin((1.0 - fraction) * theta) / safe)
    weight1 = np.where(near, fraction, np.sin(fraction * theta) / safe)
    q = weight0 * q0 + weight1 * q1
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0.0, -q, q)


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """(4,) w, x, y, z -> (3, 3)."""
    return quat2mat(np.asarray(quaternion, dtype=float))


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) -> (4,) w, x, y, z with w >= 0."""
    quaternion = mat2quat(np.asarray(rotation, dtype=float))
    return quaternion if quaternion[0] >= 0 else -quaternion
