"""The one action convention: deltas, their integration, float32 storage and the bridge agree."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from transforms3d.euler import euler2mat

from videovla_model.action_convention import (
    float32_pose_deltas,
    integrate_deltas,
    matrix_to_quaternion,
    pose_deltas,
    quaternion_to_matrix,
    slerp_quaternions,
)
from videovla_ros.trajectory import Pose, apply_deltas


def random_walk(steps: int, seed: int, step_m: float = 0.02, step_rad: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(steps + 1, 3) positions and (steps + 1, 3, 3) rotations of a random smooth-ish end-effector path."""
    rng = np.random.default_rng(seed)
    positions = np.array([0.3, -0.1, 0.4]) + np.cumsum(rng.uniform(-step_m, step_m, (steps + 1, 3)), axis=0)
    rotations = [euler2mat(np.pi, 0.1, 0.3, "sxyz")]
    for angles in rng.uniform(-step_rad, step_rad, (steps, 3)):
        rotations.append(euler2mat(*angles, "sxyz") @ rotations[-1])
    return positions, np.array(rotations)


def test_integrate_inverts_pose_deltas_in_float64():
    positions, rotations = random_walk(200, seed=1)
    integrated, integrated_rotations = integrate_deltas(positions[0], rotations[0], pose_deltas(positions, rotations))
    np.testing.assert_allclose(integrated, positions[1:], atol=1e-12)
    np.testing.assert_allclose(integrated_rotations, rotations[1:], atol=1e-12)


def test_float32_deltas_do_not_drift_along_a_long_episode():
    positions, rotations = random_walk(1000, seed=2, step_m=0.015, step_rad=0.008)
    stored = float32_pose_deltas(positions, rotations)
    assert stored.dtype == np.float32 and stored.shape == (1000, 6)
    integrated, integrated_rotations = integrate_deltas(positions[0], rotations[0], stored)
    assert np.abs(integrated - positions[1:]).max() <= 1e-9
    assert np.abs(integrated_rotations - rotations[1:]).max() <= 1e-9
    # A plain cast drifts: the error-feedback rows are what keeps the stored episode on the poses.
    plain = pose_deltas(positions, rotations).astype(np.float32)
    drift = np.abs(integrate_deltas(positions[0], rotations[0], plain)[0] - positions[1:]).max()
    assert drift > 3e-9


def test_the_bridge_integrates_with_the_convention():
    positions, rotations = random_walk(50, seed=3, step_m=0.015, step_rad=0.008)
    stored = float32_pose_deltas(positions, rotations)
    targets = apply_deltas(Pose.from_matrix(positions[0], rotations[0]), stored)
    np.testing.assert_allclose([t.position for t in targets], positions[1:], atol=1e-9)
    np.testing.assert_allclose([t.rotation for t in targets], rotations[1:], atol=1e-9)


def test_slerp_matches_the_endpoints_and_takes_the_short_arc():
    q0 = matrix_to_quaternion(euler2mat(0.0, 0.0, 0.2, "sxyz"))
    q1 = matrix_to_quaternion(euler2mat(0.0, 0.0, 0.6, "sxyz"))
    out = slerp_quaternions(np.stack([q0, q0, q0]), np.stack([q1, -q1, q1]), np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(quaternion_to_matrix(out[0]), quaternion_to_matrix(q0), atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(out[1]), euler2mat(0.0, 0.0, 0.4, "sxyz"), atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(out[2]), quaternion_to_matrix(q1), atol=1e-12)
    identical = slerp_quaternions(np.stack([q0]), np.stack([q0]), np.array([0.3]))
    np.testing.assert_allclose(identical[0], q0, atol=1e-12)


def test_deltas_refuse_wrong_shapes():
    with pytest.raises(ValueError, match=r"positions must be \(T\+1, 3\)"):
        float32_pose_deltas(np.zeros((3, 2)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match=r"deltas must be \(T, 6\)"):
        integrate_deltas(np.zeros(3), np.eye(3), np.zeros((4, 7)))


def test_the_old_module_is_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("videovla_sim.actions")
