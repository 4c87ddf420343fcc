"""`videovla-export lerobot`: an episode dataset -> a LeRobotDataset v3.0 folder (layout in `lerobot_format`).

Every episode becomes one LeRobot episode of the same length: frame t -> the video frame at t / fps, action
row t -> `action` (float32, names = the episodes' action_dim_names), the instruction -> its task.

`observation.state` (x y z qw qx qy qz gripper, base frame) is written when every episode knows where it
started (`extra["start_target"]`, as `videovla-collect` and the recorder store it) and uses the suite's
action dimensions: the commanded end-effector pose at frame t is the start integrated through rows 0..t-1
(`action_convention.integrate_deltas`), the gripper the command in effect (row t-1's; row 0's at frame 0).
Importing it with `--action-convention absolute_ee` gives the actions back (rows 0..T-2).

Everything is written into a folder beside OUT and renamed to OUT at the end: a refused or interrupted export
leaves nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from videovla_model.action_convention import integrate_deltas, matrix_to_quaternion, quaternion_to_matrix
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.episodes import Episode, EpisodeDataset
from videovla_model.importers import lerobot_format as fmt
from videovla_model.importers.lerobot_actions import GRIPPER_NAME, QUATERNION_NAMES
from videovla_model.importers.staging import ConversionError, staged_folder
from videovla_model.importers.video import VideoSettings, encode_video

DEFAULT_IMAGE_KEY = "observation.images.camera"
STATE_KEY = "observation.state"
STATE_NAMES = (*QUATERNION_NAMES, GRIPPER_NAME)


@dataclass(frozen=True)
class ExportSummary:
    episodes: int
    frames: int
    tasks: int
    fps: int
    video_path: Path


@dataclass(frozen=True)
class _DatasetShape:
    fps: int
    height: int
    width: int
    action_names: tuple[str, ...]
    tasks: tuple[str, ...]
    has_state: bool


def _dataset_shape(episodes: EpisodeDataset) -> _DatasetShape:
    """What all episodes must share to become one LeRobot dataset; ConversionError naming the first misfit."""
    if len(episodes) == 0:
        raise ConversionError(f"{episodes.root}: the dataset has no episodes to export")
    first = episodes[0]
    rate = first.metadata.action_rate_hz
    if not math.isclose(rate, round(rate), abs_tol=1e-6):
        raise ConversionError(f"{episodes.episode_dirs[0]}: LeRobot stores fps as an integer, action_rate_hz is {rate}")
    height, width = first.frames.shape[1:3]
    if height % 2 or width % 2:
        raise ConversionError(
            f"{episodes.episode_dirs[0]}: frames are {height}x{width}; yuv420p video needs even height and width"
        )
    tasks: dict[str, None] = {}
    for folder, episode in zip(episodes.episode_dirs, episodes, strict=True):
        metadata = episode.metadata
        if metadata.action_rate_hz != rate:
            raise ConversionError(f"{folder}: action_rate_hz {metadata.action_rate_hz}, the first episode has {rate}")
        if episode.frames.shape[1:3] != (height, width):
            raise ConversionError(
                f"{folder}: frames are {episode.frames.shape[1:3]}, the first episode's are {height, width}"
            )
        if metadata.action_dim_names != first.metadata.action_dim_names:
            raise ConversionError(
                f"{folder}: action_dim_names {metadata.action_dim_names}, the first episode has "
                f"{first.metadata.action_dim_names}"
            )
        tasks.setdefault(metadata.instruction, None)
    has_state = first.metadata.action_dim_names == DEFAULT_ACTION_DIM_NAMES and all(
        isinstance(episodes.metadata(i).extra.get("start_target"), dict) for i in range(len(episodes))
    )
    return _DatasetShape(round(rate), height, width, first.metadata.action_dim_names, tuple(tasks), has_state)


def commanded_states(episode: Episode) -> np.ndarray:
    """(T, 8) x y z qw qx qy qz gripper: the commanded end-effector pose and gripper at each frame."""
    start = episode.metadata.extra["start_target"]
    position = np.asarray(start["position"], dtype=np.float64)
    rotation = quaternion_to_matrix(np.asarray(start["quaternion_wxyz"], dtype=np.float64))
    actions = np.asarray(episode.actions, dtype=np.float64)
    positions, rotations = integrate_deltas(position, rotation, actions[:-1, :6])
    quaternions = [matrix_to_quaternion(r) for r in (rotation, *rotations)]
    gripper = np.concatenate((actions[:1, 6], actions[:-1, 6]))
    return np.column_stack((np.vstack((position, positions)), quaternions, gripper))


def _frames_in_order(episodes: EpisodeDataset, image_stats: fmt.ImageStatistics) -> Iterator[np.ndarray]:
    for episode in episodes:
        for frame in episode.frames:
            image_stats.add(frame)
            yield frame


def export_lerobot(
    dataset: Path,
    out: Path,
    *,
    image_key: str = DEFAULT_IMAGE_KEY,
    robot_type: str | None = None,
    video: VideoSettings | None = None,
) -> ExportSummary:
    """Writes the LeRobot v3.0 dataset `out` (which must not exist) from the episode dataset `dataset`."""
    video = video or VideoSettings()
    episodes = EpisodeDataset(dataset)
    shape = _dataset_shape(episodes)
    task_index = {task: i for i, task in enumerate(shape.tasks)}
    lengths = np.array([episode.metadata.num_steps for episode in episodes], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    video_relative = fmt.VIDEO_PATH.format(video_key=image_key, chunk_index=0, file_index=0)
    with staged_folder(out) as root:
        # 1. The video: all episodes back to back, image statistics gathered on the way.
        image_stats = fmt.ImageStatistics()
        (root / video_relative).parent.mkdir(parents=True)
        encode_video(_frames_in_order(episodes, image_stats), root / video_relative, shape.fps, video)
        # 2. The frame table.
        actions = np.concatenate([np.asarray(episode.actions, dtype=np.float32) for episode in episodes])
        episode_of_row = np.repeat(np.arange(len(episodes)), lengths)
        frame_index = np.arange(len(actions)) - np.repeat(starts, lengths)
        columns = {
            "index": np.arange(len(actions), dtype=np.int64),
            "episode_index": episode_of_row.astype(np.int64),
            "frame_index": frame_index.astype(np.int64),
            "timestamp": (frame_index / shape.fps).astype(np.float32),
            "task_index": np.repeat([task_index[e.metadata.instruction] for e in episodes], lengths).astype(np.int64),
        }
        vectors = {"action": actions}
        if shape.has_state:
            vectors[STATE_KEY] = np.concatenate([commanded_states(episode) for episode in episodes]).astype(np.float32)
        data = pa.table({**columns, **{name: fmt.vector_column(values) for name, values in vectors.items()}})
        fmt.write_parquet(data, root, fmt.DATA_PATH.format(chunk_index=0, file_index=0))
        # 3. The metadata: episodes, tasks, statistics, info.
        fmt.write_parquet(
            _episodes_table(episodes, image_key, shape, starts, lengths, {**columns, **vectors}),
            root,
            fmt.EPISODES_PATH.format(chunk_index=0, file_index=0),
        )
        fmt.write_parquet(fmt.tasks_table(shape.tasks), root, fmt.TASKS_PATH)
        stats = {name: fmt.vector_stats(values) for name, values in {**columns, **vectors}.items()}
        stats[image_key] = image_stats.stats()
        _write_json(root / fmt.STATS_PATH, stats)
        _write_json(root / fmt.INFO_PATH, _info(shape, image_key, robot_type, video, len(episodes), len(actions)))
    return ExportSummary(len(episodes), len(actions), len(shape.tasks), shape.fps, out / video_relative)


def _episodes_table(
    episodes: EpisodeDataset,
    image_key: str,
    shape: _DatasetShape,
    starts: np.ndarray,
    lengths: np.ndarray,
    per_feature: dict[str, np.ndarray],
) -> pa.Table:
    count = len(lengths)
    zeros = pa.array(np.zeros(count, dtype=np.int64))
    table: dict[str, pa.Array | list[object]] = {
        "episode_index": pa.array(np.arange(count, dtype=np.int64)),
        "tasks": pa.array([[e.metadata.instruction] for e in episodes], pa.list_(pa.string())),
        "length": pa.array(lengths),
        "data/chunk_index": zeros,
        "data/file_index": zeros,
        "dataset_from_index": pa.array(starts),
        "dataset_to_index": pa.array(starts + lengths),
        f"videos/{image_key}/chunk_index": zeros,
        f"videos/{image_key}/file_index": zeros,
        f"videos/{image_key}/from_timestamp": pa.array(starts / shape.fps),
        f"videos/{image_key}/to_timestamp": pa.array((starts + lengths) / shape.fps),
        "meta/episodes/chunk_index": zeros,
        "meta/episodes/file_index": zeros,
    }
    for name, values in per_feature.items():
        episode_stats = [fmt.vector_stats(values[s : s + n]) for s, n in zip(starts, lengths, strict=True)]
        for stat in episode_stats[0]:
            table[f"stats/{name}/{stat}"] = pa.array([s[stat] for s in episode_stats], pa.list_(pa.float64()))
    return pa.table(table)


def _info(
    shape: _DatasetShape, image_key: str, robot_type: str | None, video: VideoSettings, episodes: int, frames: int
) -> dict[str, object]:
    features = {
        image_key: fmt.video_feature(shape.height, shape.width, shape.fps, video.codec_name, video.pix_fmt),
        "action": fmt.vector_feature(shape.action_names),
        **({STATE_KEY: fmt.vector_feature(STATE_NAMES)} if shape.has_state else {}),
        **{name: fmt.scalar_feature(dtype) for name, dtype in fmt.INDEX_FEATURES.items()},
    }
    return {
        "codebase_version": fmt.CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": len(shape.tasks),
        "chunks_size": fmt.CHUNKS_SIZE,
        "data_files_size_in_mb": fmt.DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": fmt.VIDEO_FILES_SIZE_IN_MB,
        "fps": shape.fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": fmt.DATA_PATH,
        "video_path": fmt.VIDEO_PATH,
        "features": features,
    }


def _write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
