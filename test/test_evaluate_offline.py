"""`videovla-eval-offline`: the open-loop metrics against known answers, and the CLI on a tiny checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_data import write_square_dataset

from videovla_model.configuration import VideoVLAConfig
from videovla_model.contract import Observation, PolicyMetadata, PolicyOutput
from videovla_model.episodes import EpisodeDataset
from videovla_model.evaluate_offline import evaluate_offline, main
from videovla_model.modeling import VideoVLAModel

TINY = VideoVLAConfig.preset("tiny")


class RecordedPolicy:
    """Answers each recorded frame with the recorded actions that followed it, scaled and offset."""

    def __init__(self, episodes: EpisodeDataset, scale: float = 1.0, gripper_flip: bool = False) -> None:
        self.chunks: dict[bytes, np.ndarray] = {}
        for episode in episodes:
            for step in range(episode.metadata.num_steps):
                rows = np.array(episode.actions[step : step + TINY.chunk_rows])
                padded = np.concatenate([rows, np.repeat(rows[-1:], TINY.chunk_rows - len(rows), axis=0)])
                padded[:, :6] *= scale
                if gripper_flip:
                    padded[:, 6] = 1.0 - padded[:, 6]
                self.chunks[np.asarray(episode.frames[step]).tobytes()] = padded.astype(np.float32)

    @property
    def metadata(self) -> PolicyMetadata:
        return PolicyMetadata(
            action_dim_names=TINY.action_dim_names,
            chunk_rows=TINY.chunk_rows,
            execute_rows=TINY.execute_rows,
            time_step=0.1,
            image_size=(48, 72),
        )

    def infer(self, observation: Observation, *, imagine: bool = False) -> PolicyOutput:
        return PolicyOutput(actions=self.chunks[observation.image.tobytes()], timings={"total": 0.25})


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> EpisodeDataset:
    return write_square_dataset(tmp_path_factory.mktemp("held_out") / "data", lengths=(9, 12, 7))


def test_a_policy_that_replays_the_recording_scores_perfectly(episodes):
    report = evaluate_offline(RecordedPolicy(episodes), list(episodes), every=2)
    assert report.windows == 5 + 6 + 4
    assert report.episodes == 3
    assert report.executed_endpoint_error_mm == pytest.approx(0.0, abs=1e-9)
    assert report.chunk_endpoint_error_mm == pytest.approx(0.0, abs=1e-9)
    assert report.start_heading_cosine == pytest.approx(1.0)
    assert report.gripper_accuracy == 1.0
    assert all(value == pytest.approx(0.0, abs=1e-9) for value in report.mean_abs_error.values())
    assert report.mean_inference_s == pytest.approx(0.25)


def test_errors_are_measured_in_millimetres_and_directions(episodes):
    # Moving backwards reverses the heading; the gripper always disagrees.
    reverse = evaluate_offline(RecordedPolicy(episodes, scale=-1.0, gripper_flip=True), list(episodes), every=3)
    assert reverse.start_heading_cosine == pytest.approx(-1.0)
    assert reverse.gripper_accuracy == 0.0
    # The square datasets move 2 px (+-0.3) per step and METRES_PER_PIXEL apart; reversing doubles the path.
    episode = episodes[0]
    executed = np.asarray(episode.actions[: TINY.execute_rows, :3]).sum(axis=0)
    single = evaluate_offline(RecordedPolicy(episodes, scale=-1.0), [episode], every=100)
    assert single.windows == 1
    assert single.executed_endpoint_error_mm == pytest.approx(2000 * np.linalg.norm(executed), rel=1e-5)


def test_the_cli_loads_a_checkpoint_and_writes_a_report(episodes, tmp_path, capsys):
    torch.manual_seed(0)
    VideoVLAModel(TINY).save_pretrained(tmp_path / "tiny")
    report_path = tmp_path / "report.json"
    argv = ["--checkpoint", str(tmp_path / "tiny"), "--dataset", str(episodes.root), "--episodes", "1"]
    assert main([*argv, "--every", "4", "--num-inference-steps", "2", "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["windows"] == 3 and report["episodes"] == 1
    assert np.isfinite(report["executed_endpoint_error_mm"]) and report["mean_inference_s"] > 0
    assert "executed end-point error" in capsys.readouterr().out


def test_a_missing_dataset_is_reported_not_raised(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path), "--dataset", str(tmp_path / "none")]) == 2
    assert "videovla-eval-offline:" in capsys.readouterr().err
