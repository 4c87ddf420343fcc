"""`videovla-import {lerobot,rosbag}` and `videovla-export lerobot`: datasets in and out of the episode format.

Every subcommand is one `Conversion`: SOURCE OUT, plus the flags generated (`videovla_model.cli`) from its
format's options dataclass (`LeRobotImportOptions`, `RosbagImportOptions`, `LeRobotExportOptions`).
Exit status: 0 done, 2 refused (the message names the file, field, topic or time; nothing was written).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Generic, Literal, TypeVar

import tyro

from videovla_model.cli import checked, parse, unchecked
from videovla_model.importers.lerobot_export import DEFAULT_IMAGE_KEY, export_lerobot
from videovla_model.importers.lerobot_import import LeRobotImportOptions, import_lerobot
from videovla_model.importers.rosbag_import import RosbagImportOptions, import_rosbag
from videovla_model.importers.staging import ConversionError
from videovla_model.importers.video import VideoSettings

EXIT_REFUSED = 2

Options = TypeVar("Options")


@dataclass(frozen=True)
class LeRobotExportOptions:
    """How `videovla-export lerobot` writes a dataset (each field is a flag of it)."""

    image_key: str = DEFAULT_IMAGE_KEY
    """video feature name"""
    robot_type: str | None = None
    """info.json robot_type"""
    crf: int = VideoSettings().crf
    """AV1 quality, lower is better"""


@dataclass(frozen=True)
class Conversion(Generic[Options]):
    """Every subcommand of `videovla-import` and `videovla-export`: a source folder, a new folder and the
    format's options, which are its flags."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """the folder to convert: a LeRobot dataset (meta/info.json), a bag (metadata.yaml) or an episode dataset"""
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """the folder to create (must not exist)"""
    format: Annotated[Options, tyro.conf.OmitArgPrefixes]


_LeRobotImport = Conversion[unchecked(LeRobotImportOptions)]
_RosbagImport = Conversion[unchecked(RosbagImportOptions)]
_LeRobotExport = Conversion[unchecked(LeRobotExportOptions)]
IMPORT_COMMAND = (
    Annotated[_LeRobotImport, tyro.conf.subcommand("lerobot", description="a LeRobotDataset v3.0 folder")]
    | Annotated[_RosbagImport, tyro.conf.subcommand("rosbag", description="a rosbag2 folder (MCAP or sqlite3)")]
)


def export_command(
    target: Annotated[Literal["lerobot"], tyro.conf.Positional],
    conversion: Annotated[_LeRobotExport, tyro.conf.OmitArgPrefixes],
) -> Conversion:
    """Convert an episode dataset.

    Args:
        target: the format to write: lerobot, a LeRobotDataset v3.0 folder
    """
    return conversion


def _run_import(conversion: Conversion) -> list[str]:
    options = checked(conversion.format)
    if isinstance(options, LeRobotImportOptions):
        summary = import_lerobot(conversion.source, conversion.out, options)
        return [f"{summary.episodes} episodes, {summary.steps} steps", *(f"note: {f}" for f in summary.flags)]
    report = import_rosbag(conversion.source, conversion.out, options)
    steps = sum(episode.steps for episode in report.episodes)
    return [*report.lines(), f"{len(report.episodes)} episodes, {steps} steps"]


def _run_export(conversion: Conversion) -> list[str]:
    options = checked(conversion.format)
    summary = export_lerobot(
        conversion.source,
        conversion.out,
        image_key=options.image_key,
        robot_type=options.robot_type,
        video=VideoSettings(crf=options.crf),
    )
    return [f"{summary.episodes} episodes, {summary.frames} frames, {summary.tasks} tasks at {summary.fps} fps"]


def _run(program: str, work: Callable[[Conversion], list[str]], conversion: Conversion) -> int:
    started = time.perf_counter()
    try:
        lines = work(conversion)
    except (ConversionError, FileNotFoundError, ValueError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    for line in lines:
        print(line)
    print(f"wrote {conversion.out} in {time.perf_counter() - started:.1f} s")
    return 0


def import_main(argv: Sequence[str] | None = None) -> int:
    description = "Convert recordings into an episode dataset."
    conversion = parse(IMPORT_COMMAND, argv, prog="videovla-import", description=description)
    return _run("videovla-import", _run_import, conversion)


def export_main(argv: Sequence[str] | None = None) -> int:
    return _run("videovla-export", _run_export, parse(export_command, argv, prog="videovla-export"))
