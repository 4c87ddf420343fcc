"""`videovla-import {lerobot,rosbag}` and `videovla-export lerobot`: datasets in and out of the episode format.

Exit status: 0 done, 2 refused (the message names the file, field, topic or time; nothing was written).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from videovla_model.importers.lerobot_actions import ActionConvention
from videovla_model.importers.lerobot_export import DEFAULT_IMAGE_KEY, export_lerobot
from videovla_model.importers.lerobot_import import LeRobotImportOptions, import_lerobot
from videovla_model.importers.rosbag_import import EpisodeSplit, RosbagImportOptions, import_rosbag
from videovla_model.importers.staging import ConversionError
from videovla_model.importers.video import VideoSettings
from videovla_model.resampling import ResampleLimits

EXIT_REFUSED = 2


def _episode_split(text: str) -> EpisodeSplit:
    try:
        return EpisodeSplit.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videovla-import", description="Convert recordings into an episode dataset.")
    commands = parser.add_subparsers(dest="source", required=True)
    lerobot = commands.add_parser("lerobot", help="a LeRobotDataset v3.0 folder")
    lerobot.add_argument("directory", type=Path, help="the LeRobot dataset (with meta/info.json)")
    lerobot.add_argument("out", type=Path, help="the episode dataset to create (must not exist)")
    lerobot.add_argument("--image-key", help="video feature to import (default: the only one)")
    lerobot.add_argument(
        "--action-convention",
        type=ActionConvention,
        choices=list(ActionConvention),
        default=ActionConvention.AUTO,
        help="delta_ee: the suite's deltas; absolute_ee: end-effector poses per frame (converted); "
        "absolute_joint: refused (needs kinematics); auto: delta_ee when the names match (default)",
    )
    lerobot.add_argument("--action-feature", default="action", help="feature read as delta_ee (default: action)")
    lerobot.add_argument(
        "--pose-feature", default="observation.state", help="feature read as absolute_ee (default: observation.state)"
    )
    lerobot.add_argument("--embodiment-id", type=int, default=0, help="embodiment id stored with every episode")

    rosbag = commands.add_parser("rosbag", help="a rosbag2 folder (MCAP or sqlite3)")
    rosbag.add_argument("bag", type=Path, help="the bag folder (with metadata.yaml)")
    rosbag.add_argument("out", type=Path, help="the episode dataset to create (must not exist)")
    rosbag.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    rosbag.add_argument("--pose-topic", required=True, help="geometry_msgs/PoseStamped, or Pose (stamped by log time)")
    rosbag.add_argument("--gripper-topic", help="std_msgs/Float32, Float64 or sensor_msgs/JointState (default: open)")
    rosbag.add_argument("--gripper-joint", help="the JointState joint that is the gripper (default: its only one)")
    rosbag.add_argument(
        "--gripper-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("CLOSED", "OPEN"),
        help="raw gripper readings for closed and open (default: 0 1); mapped to 0..1 and clipped",
    )  # fmt: skip
    rosbag.add_argument("--instruction", required=True, help="what the demonstrations do, e.g. 'pick up the red cube'")
    rosbag.add_argument("--rate-hz", type=_positive, default=10.0, help="the model's action rate (default: 10)")
    rosbag.add_argument(
        "--max-gap", type=_positive, default=ResampleLimits().max_gap_s, help="longest camera or pose gap [s]"
    )
    rosbag.add_argument(
        "--episode-split", type=_episode_split, default=EpisodeSplit(),
        help="none (default: one episode), gaps (a camera pause longer than --max-gap starts an episode), "
        "or seconds from the first frame, e.g. 12.5,30",
    )  # fmt: skip
    rosbag.add_argument("--embodiment-id", type=int, default=0, help="embodiment id stored with every episode")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videovla-export", description="Convert an episode dataset.")
    commands = parser.add_subparsers(dest="target", required=True)
    lerobot = commands.add_parser("lerobot", help="a LeRobotDataset v3.0 folder")
    lerobot.add_argument("dataset", type=Path, help="the episode dataset")
    lerobot.add_argument("out", type=Path, help="the LeRobot dataset to create (must not exist)")
    lerobot.add_argument("--image-key", default=DEFAULT_IMAGE_KEY, help=f"video feature name ({DEFAULT_IMAGE_KEY})")
    lerobot.add_argument("--robot-type", help="info.json robot_type (default: null)")
    lerobot.add_argument("--crf", type=int, default=VideoSettings().crf, help="AV1 quality, lower is better (30)")
    return parser


def _run_import(args: argparse.Namespace) -> list[str]:
    if args.source == "lerobot":
        options = LeRobotImportOptions(
            image_key=args.image_key,
            action_convention=args.action_convention,
            action_feature=args.action_feature,
            pose_feature=args.pose_feature,
            embodiment_id=args.embodiment_id,
        )
        summary = import_lerobot(args.directory, args.out, options)
        return [f"{summary.episodes} episodes, {summary.steps} steps", *(f"note: {f}" for f in summary.flags)]
    options = RosbagImportOptions(
        image_topic=args.image_topic,
        pose_topic=args.pose_topic,
        gripper_topic=args.gripper_topic,
        instruction=args.instruction,
        rate_hz=args.rate_hz,
        limits=ResampleLimits(max_gap_s=args.max_gap),
        split=args.episode_split,
        gripper_range=tuple(args.gripper_range),
        gripper_joint=args.gripper_joint,
        embodiment_id=args.embodiment_id,
    )
    report = import_rosbag(args.bag, args.out, options)
    steps = sum(episode.steps for episode in report.episodes)
    return [*report.lines(), f"{len(report.episodes)} episodes, {steps} steps"]


def _run(program: str, work: Callable[[argparse.Namespace], list[str]], args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        lines = work(args)
    except (ConversionError, FileNotFoundError, ValueError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    for line in lines:
        print(line)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def import_main(argv: Sequence[str] | None = None) -> int:
    return _run("videovla-import", _run_import, _import_parser().parse_args(argv))


def _run_export(args: argparse.Namespace) -> list[str]:
    summary = export_lerobot(
        args.dataset, args.out, image_key=args.image_key, robot_type=args.robot_type, video=VideoSettings(crf=args.crf)
    )
    return [f"{summary.episodes} episodes, {summary.frames} frames, {summary.tasks} tasks at {summary.fps} fps"]


def export_main(argv: Sequence[str] | None = None) -> int:
    return _run("videovla-export", _run_export, _export_parser().parse_args(argv))
