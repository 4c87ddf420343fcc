"""Merges episode datasets into one (`videovla-merge-datasets`), so one training run can read them all.

Each source's episodes become `episode_000000`, `episode_000001`, ... of the output, sources in the order given and
each source's episodes in their own order. By default an output episode is a symbolic link to the source's folder
(absolute, so the output works from any directory, and no frames are copied); `--copy` copies the files instead, for
an output that must outlive its sources. The sources are only read: nothing a user recorded is moved or changed.

Example::

    videovla-merge-datasets --output data/all --sources data/demos_a data/demos_b data/teleop
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videovla_model.cli import parse
from videovla_model.component_configs import require
from videovla_model.episodes import EpisodeDataset, EpisodeWriter, episode_folder_name


@dataclass(frozen=True)
class MergeConfig:
    """One `videovla-merge-datasets` run; each field is a flag (`videovla-merge-datasets --help`)."""

    output: str
    """new dataset folder (must not exist, or be empty)"""
    sources: tuple[str, ...]
    """episode dataset folders to merge, in this order"""
    copy: bool = False
    """copy the episode files instead of linking to the sources' folders"""

    def __post_init__(self) -> None:
        require(len(self.sources) >= 1, "sources", list(self.sources), "one or more dataset folders")
        output = Path(self.output).resolve()
        for source in self.sources:
            require(Path(source).resolve() != output, "sources", source, "folders other than the output")
        require(
            not output.exists() or (output.is_dir() and not any(output.iterdir())),
            "output",
            self.output,
            "a folder that does not exist yet or is empty",
        )


def merge_datasets(config: MergeConfig) -> int:
    """Writes `config.output` from `config.sources`; returns the number of episodes.

    Every source is opened before anything is written, so a source that is not a dataset (or of another format
    version) fails the merge with the dataset reader's error and leaves no partial output behind.
    """
    sources = [EpisodeDataset(source) for source in config.sources]
    output = Path(config.output)
    EpisodeWriter(output)  # creates the folder and its dataset.json
    index = 0
    for dataset in sources:
        for folder in dataset.episode_dirs:
            destination = output / episode_folder_name(index)
            if config.copy:
                shutil.copytree(folder.resolve(), destination)
            else:
                os.symlink(folder.resolve(), destination, target_is_directory=True)
            index += 1
    return index


def main(argv: Sequence[str] | None = None) -> int:
    config = parse(
        MergeConfig, argv, prog="videovla-merge-datasets", description="Merge episode datasets into one folder."
    )
    try:
        count = merge_datasets(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"videovla-merge-datasets: error: {error}", file=sys.stderr)
        return 2
    how = "copied" if config.copy else "linked"
    print(f"videovla-merge-datasets: {count} episodes from {len(config.sources)} datasets {how} into {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
