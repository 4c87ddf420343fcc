"""The pure pieces of `videovla-eval`: Wilson intervals, summaries, instruction checks, imagined|actual video."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image as PILImage

from videovla_ros.evaluation_report import (
    EpisodeResult,
    FrameTimeline,
    ImaginedClip,
    format_summary,
    instruction_problem,
    named_object,
    side_by_side,
    summarize,
    wilson_interval,
    write_gif,
    write_report,
)


def test_wilson_interval_matches_known_values_and_edges():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0
    assert wilson_interval(0, 20)[1] == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(3, 2)


def _result(task: str, success: bool, seconds: float = 10.0, video: str = "") -> EpisodeResult:
    return EpisodeResult(
        task=task,
        seed=0,
        instruction=f"{task} something",
        success=success,
        seconds=seconds,
        chunks=3,
        inference_times=(0.2, 0.4, 0.3),
        chunk_intervals=(0.6, 0.8),
        idle_fraction=0.5,
        video=video,
    )


def test_summary_per_task_and_overall(tmp_path):
    results = [_result("pick", True, 8.0, "a.gif"), _result("pick", False, 12.0), _result("place", True, 20.0)]
    summary = summarize(results, "ckpt", "sync")
    assert [(t.task, t.episodes, t.successes) for t in summary.tasks] == [("pick", 2, 1), ("place", 1, 1)]
    assert summary.tasks[0].seconds_per_episode == pytest.approx(10.0)
    assert summary.success_rate == pytest.approx(2 / 3)
    assert summary.ci95 == pytest.approx(wilson_interval(2, 3))
    assert summary.mean_inference_time == pytest.approx(0.3)
    assert summary.seconds_per_chunk == pytest.approx(0.7)
    assert summary.videos == ("a.gif",)
    text = format_summary(summary)
    assert "pick: 1/2 = 50.0%" in text and "all: 2/3" in text
    report = json.loads(write_report(tmp_path, summary, results).read_text())
    assert report["summary"]["successes"] == 2 and len(report["episodes"]) == 3
    assert (tmp_path / "report.txt").read_text().startswith("checkpoint ckpt")


def test_summary_says_which_clock_and_the_simulated_seconds():
    results = [replace(_result("pick", True, wall), sim_seconds=sim) for wall, sim in ((9.0, 4.0), (7.0, 5.0))]
    summary = summarize(results, "ckpt", "sync", sim_time=True)
    assert summary.sim_seconds_per_episode == pytest.approx(4.5) and summary.seconds_per_episode == pytest.approx(8.0)
    text = format_summary(summary)
    assert "(bridge mode sync, simulated time)" in text and "8.0 s/episode (4.5 simulated)" in text
    assert "wall-clock time" in format_summary(summarize(results, "ckpt", "sync"))


def test_failures_are_told_apart_by_what_the_gripper_held():
    def pick(success: bool, grasped: tuple[str, ...]) -> EpisodeResult:
        return replace(
            _result("pick", success),
            instruction="pick up the red cube",
            named_object=named_object("pick up the red cube"),
            grasped_objects=grasped,
        )

    results = [
        pick(True, ("red_cube",)),
        pick(False, ("blue_cube", "red_cube")),
        pick(False, ("blue_cube",)),
        pick(False, ("green_cylinder",)),
        pick(False, ()),
    ]
    assert results[0].named_object == "red_cube" and results[0].failure_kind is None
    assert [r.failure_kind for r in results[1:]] == [
        "held the named object",
        "held only other objects",
        "held only other objects",
        "held nothing",
    ]
    (task,) = summarize(results, "ckpt", "sync").tasks
    assert task.failures == {"held the named object": 1, "held only other objects": 2, "held nothing": 1}
    assert "failures: 1 held the named object, 2 held only other objects, 1 held nothing" in format_summary(
        summarize(results, "ckpt", "sync")
    )
    # An instruction the sim cannot parse names no object, so whatever was held counts as another object.
    assert named_object("pick up the golden chalice") == ""
    assert replace(pick(False, ("red_cube",)), named_object="").failure_kind == "held only other objects"
    # A run without failures prints no failure line.
    assert "failures" not in format_summary(summarize(results[:1], "ckpt", "sync"))


def test_empty_summary_has_no_rate():
    assert math.isnan(summarize([], "ckpt", "sync").success_rate)


def test_instruction_problem_names_the_unknown_word():
    assert instruction_problem("pick up the red cube") is None
    assert "unknown colour 'orange'" in instruction_problem("pick up the orange cube")
    assert "cannot understand" in instruction_problem("dance")


def test_side_by_side_pairs_each_imagined_frame_with_the_nearest_camera_frame():
    camera = FrameTimeline()
    for k in (3, 0, 2, 1):  # out of order on purpose
        camera.add(k * 100_000_000, np.full((8, 8, 3), 10 * (k + 1), np.uint8))
    assert camera.nearest(140_000_000)[0, 0, 0] == 20
    assert camera.nearest(160_000_000)[0, 0, 0] == 30
    clip = ImaginedClip(start_ns=100_000_000, period=0.1, frames=np.full((3, 8, 8, 3), 200, np.uint8))
    panels = side_by_side([clip], camera, scale=2)
    assert len(panels) == 3
    assert panels[0].shape == (14 + 16, 2 * 16 + 4, 3)
    # right half shows camera frames at 0.1, 0.2, 0.3 s: values 20, 30, 40
    assert [int(p[-1, -1, 0]) for p in panels] == [20, 30, 40]
    assert all(int(p[-1, 0, 0]) == 200 for p in panels)
    assert side_by_side([clip], FrameTimeline()) == []


def test_write_gif_round_trip(tmp_path):
    frames = [np.full((10, 12, 3), v, np.uint8) for v in (0, 128, 255)]
    frames[1][2:4, 2:4] = (230, 20, 20)  # a small red object on grey must keep its colour
    path = write_gif(tmp_path / "v" / "x.gif", frames, 0.1)
    with PILImage.open(path) as image:
        assert image.n_frames == 3 and image.size == (12, 10)
        image.seek(1)
        decoded = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(decoded - frames[1]).max() <= 16
    with pytest.raises(ValueError, match="at least one frame"):
        write_gif(tmp_path / "y.gif", [], 0.1)
