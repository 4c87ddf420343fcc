"""ActionNormalizer: percentile statistics, clipping, gripper handling, degenerate dims and JSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.normalization import ActionNormalizer

NAMES = DEFAULT_ACTION_DIM_NAMES


def training_actions(rows: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    actions = rng.normal(0.0, [0.01, 0.02, 0.03, 0.05, 0.05, 0.1, 0.0], size=(rows, 7))
    actions[:, 6] = rng.integers(0, 2, rows)
    return actions


def test_fit_uses_percentiles_and_fixed_gripper_range():
    actions = training_actions()
    normalizer = ActionNormalizer.fit(actions, NAMES)
    assert normalizer.gripper_dims == (6,)
    np.testing.assert_allclose(normalizer.low[:6], np.percentile(actions[:, :6], 1, axis=0))
    np.testing.assert_allclose(normalizer.high[:6], np.percentile(actions[:, :6], 99, axis=0))
    assert (normalizer.low[6], normalizer.high[6]) == (0.0, 1.0)


def test_normalize_clips_to_unit_range_and_round_trips_inside_it():
    actions = training_actions()
    normalizer = ActionNormalizer.fit(actions, NAMES)
    normalized = normalizer.normalize(actions)
    assert normalized.dtype == np.float32
    assert normalized.min() >= -1.0 and normalized.max() <= 1.0
    assert np.isclose(normalized[:, :6], 1.0).any() and np.isclose(normalized[:, :6], -1.0).any()
    inside = np.all((actions >= normalizer.low) & (actions <= normalizer.high), axis=1)
    restored = normalizer.unnormalize(normalized, threshold_gripper=False)
    np.testing.assert_allclose(restored[inside], actions[inside], atol=1e-6)


def test_gripper_maps_linearly_and_thresholds_to_zero_or_one():
    normalizer = ActionNormalizer.fit(training_actions(), NAMES, gripper_threshold=0.5)
    closed_open = np.zeros((2, 7))
    closed_open[1, 6] = 1.0
    np.testing.assert_allclose(normalizer.normalize(closed_open)[:, 6], [-1.0, 1.0])
    model_output = np.zeros((5, 7), dtype=np.float32)
    model_output[:, 6] = [-1.0, -0.2, -0.01, 0.0, 0.7]
    gripper = normalizer.unnormalize(model_output)[:, 6]
    np.testing.assert_array_equal(gripper, [0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        normalizer.unnormalize(model_output, threshold_gripper=False)[:, 6], [0, 0.4, 0.495, 0.5, 0.85]
    )


def test_degenerate_dimension_does_not_divide_by_zero():
    actions = training_actions()
    actions[:, 2] = 0.25
    normalizer = ActionNormalizer.fit(actions, NAMES)
    normalized = normalizer.normalize(actions)
    assert np.all(np.isfinite(normalized))
    assert np.all(normalized[:, 2] == 0.0)
    np.testing.assert_allclose(normalizer.unnormalize(normalized)[:, 2], 0.25)


def test_save_and_load_round_trip(tmp_path):
    normalizer = ActionNormalizer.fit(training_actions(), NAMES)
    path = normalizer.save(tmp_path)
    assert path.name == "normalization.json"
    assert json.loads(path.read_text())["dim_names"] == list(NAMES)
    assert ActionNormalizer.load(tmp_path) == normalizer
    assert ActionNormalizer.load(path) == normalizer


def test_identity_normalizer_for_untrained_models():
    normalizer = ActionNormalizer.identity(NAMES, gripper_dims=(6,))
    actions = np.array([[0.5, -0.5, 0.0, 0.1, 0.2, -0.3, 1.0]])
    np.testing.assert_allclose(normalizer.normalize(actions)[0, :6], actions[0, :6])
    np.testing.assert_allclose(normalizer.unnormalize(normalizer.normalize(actions)), actions, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: ActionNormalizer.fit(np.zeros((4, 6)), NAMES), r"actions must have shape \(N, 7\)"),
        (lambda: ActionNormalizer.fit(np.zeros((0, 7)), NAMES), r"at least one row"),
        (
            lambda: ActionNormalizer.fit(np.where(np.eye(7, dtype=bool)[:1], np.nan, 0.0), NAMES),
            r"NaN or infinite values in dimensions \['dx'\]",
        ),
        (lambda: ActionNormalizer(NAMES, (0.0,) * 7, (1.0,) * 6), r"must have 7 values"),
        (lambda: ActionNormalizer(NAMES, (1.0,) * 7, (0.0,) * 7), r"dimension 'dx' must be finite with high >= low"),
        (lambda: ActionNormalizer.identity(NAMES).normalize(np.zeros((2, 6))), r"last dimension 7"),
    ],
)
def test_bad_inputs_raise_specific_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_load_rejects_unknown_format(tmp_path):
    (tmp_path / "normalization.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match=r"format_version must be 1, got 99"):
        ActionNormalizer.load(tmp_path)
