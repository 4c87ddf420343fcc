"""`videovla-merge-datasets`: several episode datasets become one, in order, without touching the sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from videovla_model.dataset_merge import MergeConfig, main
from videovla_model.episodes import EpisodeDataset, EpisodeWriter


def write_dataset(root: Path, instructions: list[str]) -> Path:
    writer = EpisodeWriter(root)
    for number, instruction in enumerate(instructions):
        frames = np.full((3, 8, 8, 3), number, dtype=np.uint8)
        writer.write(frames, np.zeros((3, 7), dtype=np.float32), instruction, 10.0)
    return root


def instructions_of(root: Path) -> list[str]:
    dataset = EpisodeDataset(root)
    return [dataset.metadata(index).instruction for index in range(len(dataset))]


def test_merge_links_every_episode_in_source_order(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", ["pick up the red cube", "pick up the blue cube"])
    second = write_dataset(tmp_path / "b", ["pick up the green cylinder"])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    assert main(["--output", str(tmp_path / "all"), "--sources", str(first), str(second)]) == 0

    merged = tmp_path / "all"
    assert instructions_of(merged) == ["pick up the red cube", "pick up the blue cube", "pick up the green cylinder"]
    links = sorted(merged.glob("episode_*"))
    assert [link.name for link in links] == ["episode_000000", "episode_000001", "episode_000002"]
    assert all(link.is_symlink() and Path(link.readlink()).is_absolute() for link in links)
    assert int(EpisodeDataset(merged)[2].frames[0, 0, 0, 0]) == 0  # the second source's first episode
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "all" not in p.parts) == before


def test_copy_makes_an_output_that_outlives_its_sources(tmp_path: Path) -> None:
    source = write_dataset(tmp_path / "a", ["pick up the red cube", "pick up the blue cube"])
    assert main(["--output", str(tmp_path / "all"), "--sources", str(source), "--copy"]) == 0
    shutil.rmtree(source)
    merged = EpisodeDataset(tmp_path / "all")
    assert len(merged) == 2
    assert int(merged[1].frames[0, 0, 0, 0]) == 1


def test_a_source_that_is_not_a_dataset_fails_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_dataset(tmp_path / "a", ["pick up the red cube"])
    (tmp_path / "notes").mkdir()
    assert main(["--output", str(tmp_path / "all"), "--sources", str(good), str(tmp_path / "notes")]) == 2
    assert "dataset.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "all").exists()


def test_refuses_an_output_that_holds_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_dataset(tmp_path / "a", ["pick up the red cube"])
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(tmp_path / "all"), "--sources", str(source)])
    assert exit_info.value.code == 2
    assert "output must be a folder that does not exist yet or is empty" in capsys.readouterr().err
    assert (tmp_path / "all" / "keep.txt").read_text() == "mine"


def test_refuses_to_merge_into_a_source(tmp_path: Path) -> None:
    source = write_dataset(tmp_path / "a", ["pick up the red cube"])
    with pytest.raises(ValueError, match="sources must be folders other than the output"):
        MergeConfig(output=str(source), sources=(str(source),))
    with pytest.raises(ValueError, match="sources must be one or more dataset folders"):
        MergeConfig(output=str(tmp_path / "all"), sources=())
