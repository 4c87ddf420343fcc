"""`videovla-import lerobot`: a LeRobotDataset v3.0 folder (layout in `lerobot_format`) -> an episode dataset.

One camera (a `video` feature) and one action source (`lerobot_actions`) are imported; every LeRobot episode
becomes one episode at the dataset's fps with its first task as the instruction. Files are checked against
meta/info.json and each other before anything is kept: a missing file or column, another codebase_version,
a missing feature, or lengths that disagree (episodes parquet, data rows, video frames) are refused naming the
file and field. Episodes are written into a folder beside OUT that is renamed to OUT at the end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videovla_model.episodes import EpisodeWriter
from videovla_model.importers import lerobot_format as fmt
from videovla_model.importers.lerobot_actions import ActionConvention, ActionSource, action_source, convert_actions
from videovla_model.importers.staging import ConversionError, staged_folder
from videovla_model.importers.video import decode_video

MAX_FLAGS = 20


@dataclass(frozen=True)
class LeRobotImportOptions:
    """How `videovla-import lerobot` reads a dataset (each field is a flag of it). absolute_ee actions are
    converted to the suite's deltas; absolute_joint ones are refused (they need the arm's kinematics)."""

    image_key: str | None = None
    """the video feature to import; None: the dataset's only one"""
    action_convention: ActionConvention = ActionConvention.AUTO
    """delta_ee: the suite's deltas; absolute_ee: poses per frame; absolute_joint: refused; auto: by the names"""
    action_feature: str = "action"
    """the feature read under delta_ee (and auto)"""
    pose_feature: str = "observation.state"
    """the feature read under absolute_ee: the end-effector pose at each frame"""
    embodiment_id: int = 0
    """embodiment id stored with every episode"""


@dataclass(frozen=True)
class ImportSummary:
    episodes: int
    steps: int
    flags: tuple[str, ...]


@dataclass(frozen=True)
class _Episode:
    index: int
    length: int
    data_file: tuple[int, int]
    video_file: tuple[int, int]
    first_frame: int
    """Position of the episode's first frame in its video file (from_timestamp * fps)."""


def read_info(root: Path) -> dict[str, Any]:
    path = root / fmt.INFO_PATH
    if not path.is_file():
        raise ConversionError(f"{path} is missing: {root} is not a LeRobot v3.0 dataset")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error
    version = info.get("codebase_version")
    if version != fmt.CODEBASE_VERSION:
        raise ConversionError(
            f"{path}: codebase_version is {str(version)[:20]!r}, expected {fmt.CODEBASE_VERSION!r} (convert older "
            f"datasets with LeRobot's lerobot.datasets.v30.convert_dataset_v21_to_v30 first)"
        )
    for key, kind in (("fps", int), ("features", dict), ("data_path", str), ("video_path", str)):
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise ConversionError(f"{path}: field {key!r} must be a {kind.__name__}, got {str(info.get(key))[:40]!r}")
    if info["fps"] <= 0:
        raise ConversionError(f"{path}: fps must be > 0, got {info['fps']}")
    return info


def _image_key(info: dict[str, Any], requested: str | None) -> str:
    videos = [name for name, feature in info["features"].items() if feature.get("dtype") == "video"]
    if requested is None:
        if len(videos) != 1:
            raise ConversionError(
                f"{fmt.INFO_PATH}: {len(videos)} video features {videos[:8]}; choose one with --image-key"
            )
        return videos[0]
    if requested not in videos:
        raise ConversionError(f"{fmt.INFO_PATH}: no video feature {requested!r} (video features: {videos[:8]})")
    return requested


def _frame_size(feature: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of a video feature, placed by its names (LeRobot writes height, width, channels)."""
    shape, names = feature.get("shape"), feature.get("names")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ConversionError(f"{fmt.INFO_PATH}: a video feature needs a 3-value shape, got {str(shape)[:40]}")
    if isinstance(names, list) and "height" in names and "width" in names:
        return int(shape[names.index("height")]), int(shape[names.index("width")])
    return int(shape[0]), int(shape[1])


def _action_source(info: dict[str, Any], options: LeRobotImportOptions) -> ActionSource:
    absolute = options.action_convention is ActionConvention.ABSOLUTE_EE
    name = options.pose_feature if absolute else options.action_feature
    feature = info["features"].get(name)
    if feature is None:
        raise ConversionError(f"{fmt.INFO_PATH}: no feature {name!r} (features: {list(info['features'])[:12]})")
    names, shape = feature.get("names"), feature.get("shape")
    if isinstance(names, dict):  # older writers nest the list under one axis name
        names = next(iter(names.values()), None)
    if not isinstance(names, list) or shape != [len(names)]:
        raise ConversionError(
            f"{fmt.INFO_PATH}: feature {name!r} needs a list of names matching its shape, got names "
            f"{str(names)[:80]} and shape {shape}"
        )
    return action_source(name, tuple(str(n) for n in names), options.action_convention)


def read_tasks(root: Path) -> dict[int, str]:
    table = fmt.read_parquet(root, fmt.TASKS_PATH)
    text_column = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if text_column is None or "task_index" not in table.column_names:
        raise ConversionError(f"{root / fmt.TASKS_PATH} needs columns task_index and task, has {table.column_names}")
    return dict(zip(table["task_index"].to_pylist(), table[text_column].to_pylist(), strict=True))


def read_episodes(root: Path, image_key: str, fps: int) -> list[_Episode]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise ConversionError(f"{root / 'meta' / 'episodes'} holds no chunk-*/file-*.parquet (the episode table)")
    video = f"videos/{image_key}/"
    columns = [
        "episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index",
        video + "chunk_index", video + "file_index", video + "from_timestamp", video + "to_timestamp",
    ]  # fmt: skip
    episodes = []
    for path in files:
        table = fmt.read_parquet(root, str(path.relative_to(root)), columns).to_pydict()
        for row in (dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)):
            where = f"{path} episode {row['episode_index']}"
            length = int(row["length"])
            first = round(row[video + "from_timestamp"] * fps)
            if row["dataset_to_index"] - row["dataset_from_index"] != length or length < 1:
                raise ConversionError(
                    f"{where}: length {length} but dataset_from_index..dataset_to_index = "
                    f"{row['dataset_from_index']}..{row['dataset_to_index']}"
                )
            if round(row[video + "to_timestamp"] * fps) - first != length:
                raise ConversionError(
                    f"{where}: {video}from_timestamp..to_timestamp = {row[video + 'from_timestamp']:.3f}.."
                    f"{row[video + 'to_timestamp']:.3f} s holds {round(row[video + 'to_timestamp'] * fps) - first} "
                    f"frames at {fps} fps, length says {length}"
                )
            data_file = (int(row["data/chunk_index"]), int(row["data/file_index"]))
            video_file = (int(row[video + "chunk_index"]), int(row[video + "file_index"]))
            episodes.append(_Episode(int(row["episode_index"]), length, data_file, video_file, first))
    return sorted(episodes, key=lambda e: e.index)


def read_feature_rows(
    root: Path, info: dict[str, Any], episodes: list[_Episode], feature: str
) -> dict[int, tuple[np.ndarray, int]]:
    """episode index -> ((length, D) rows of `feature` in frame order, the task_index of its first frame)."""
    width = info["features"][feature]["shape"][0]
    by_file: dict[tuple[int, int], list[_Episode]] = defaultdict(list)
    for episode in episodes:
        by_file[episode.data_file].append(episode)
    rows: dict[int, tuple[np.ndarray, int]] = {}
    for (chunk, file), members in by_file.items():
        relative = info["data_path"].format(chunk_index=chunk, file_index=file)
        table = fmt.read_parquet(root, relative, ["episode_index", "frame_index", "task_index", feature])
        values = fmt.column_to_matrix(table[feature], feature, width, root / relative)
        episode_of_row = table["episode_index"].to_numpy()
        frame_index = table["frame_index"].to_numpy()
        task_index = table["task_index"].to_numpy()
        for episode in members:
            selected = np.flatnonzero(episode_of_row == episode.index)
            selected = selected[np.argsort(frame_index[selected], kind="stable")]
            if not np.array_equal(frame_index[selected], np.arange(episode.length)):
                raise ConversionError(
                    f"{root / relative}: episode {episode.index} has {len(selected)} rows (frame_index "
                    f"{frame_index[selected][:3].tolist()}...), meta/episodes says length {episode.length}"
                )
            rows[episode.index] = (values[selected], int(task_index[selected[0]]))
    return rows


def _episode_frames(
    path: Path, members: list[_Episode], fps: int, shape: tuple[int, int]
) -> Iterator[tuple[_Episode, np.ndarray]]:
    """Yields (episode, (length, H, W, 3) frames) as each episode of one video file is complete."""
    owner = {episode.first_frame + k: (episode, k) for episode in members for k in range(episode.length)}
    buffers: dict[int, np.ndarray] = {}
    filled: dict[int, int] = defaultdict(int)
    for timestamp, frame in decode_video(path):
        found = owner.get(round(timestamp * fps))
        if found is None:
            continue
        episode, position = found
        if frame.shape[:2] != shape:
            raise ConversionError(f"{path}: frames are {frame.shape[:2]}, {fmt.INFO_PATH} says {shape}")
        buffer = buffers.setdefault(episode.index, np.empty((episode.length, *frame.shape), np.uint8))
        buffer[position] = frame
        filled[episode.index] += 1
        if filled[episode.index] == episode.length:
            yield episode, buffers.pop(episode.index)
    missing = [e for e in members if filled[e.index] < e.length]
    if missing:
        episode = missing[0]
        raise ConversionError(
            f"{path}: episode {episode.index} needs {episode.length} frames from "
            f"{episode.first_frame / fps:.3f} s, the video has {filled[episode.index]} of them"
        )


def import_lerobot(directory: Path, out: Path, options: LeRobotImportOptions = LeRobotImportOptions()) -> ImportSummary:
    """Converts the LeRobot v3.0 dataset `directory` into the episode dataset `out` (which must not exist)."""
    directory = Path(directory)
    # 1. Everything that can be checked without decoding video: info, features, tasks, episodes, data rows.
    info = read_info(directory)
    fps = info["fps"]
    image_key = _image_key(info, options.image_key)
    height, width = _frame_size(info["features"][image_key])
    source = _action_source(info, options)
    tasks = read_tasks(directory)
    episodes = read_episodes(directory, image_key, fps)
    rows = read_feature_rows(directory, info, episodes, source.feature)
    unknown = sorted({task for _, task in rows.values()} - set(tasks))
    if unknown:
        raise ConversionError(f"{directory / fmt.TASKS_PATH} has no task_index {unknown[:5]} used by the data")
    # 2. Decode each video file once, writing every episode as soon as its frames are complete.
    by_video: dict[tuple[int, int], list[_Episode]] = defaultdict(list)
    for episode in episodes:
        by_video[episode.video_file].append(episode)
    flags: list[str] = []
    steps = 0
    with staged_folder(out) as root:
        writer = EpisodeWriter(root)
        for (chunk, file), members in by_video.items():
            path = directory / info["video_path"].format(video_key=image_key, chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise ConversionError(f"{path} is missing (episodes {[e.index for e in members][:5]} are in it)")
            for episode, frames in _episode_frames(path, members, fps, (height, width)):
                feature_rows, task = rows[episode.index]
                actions, episode_flags = convert_actions(source, feature_rows, fps, episode.index)
                writer.write(
                    frames[: len(actions)],
                    actions,
                    tasks[task],
                    float(fps),
                    embodiment_id=options.embodiment_id,
                    extra={
                        "source": "lerobot",
                        "lerobot_dataset": str(directory.resolve()),
                        "lerobot_episode_index": episode.index,
                        "action_convention": source.convention.value,
                    },
                )
                steps += len(actions)
                flags.extend(f"episode {episode.index}: {flag}" for flag in episode_flags)
    return ImportSummary(len(episodes), steps, tuple(flags[:MAX_FLAGS]))
