"""The LeRobotDataset v3.0 layout, written and read with pyarrow alone (the `lerobot` package pins torch < 2.11).

What a v3.0 dataset folder holds, and what this module writes (field by field, following LeRobot's v3.0 format):

    meta/info.json
        codebase_version  "v3.0": LeRobot refuses other versions (v2.1 datasets need its converter first).
        robot_type        free text or null.
        total_episodes, total_frames, total_tasks: counts a reader checks the files against.
        chunks_size       1000: at most this many files per chunk-XXX folder.
        data_files_size_in_mb, video_files_size_in_mb: the size at which LeRobot's writer starts a new file
                          when it appends; an export writes one file of each kind, so they only guide later appends.
        fps               integer frames per second, shared by every feature and episode.
        splits            {"train": "0:N"}.
        data_path, video_path: the str.format templates below (chunk_index, file_index, video_key).
        features          per feature: dtype ("float32", "int64", "video", ...), shape (list) and names
                          (list of column names, null for scalars; for videos ["height", "width", "channels"]),
                          and for videos an "info" dict (video.height, video.width, video.codec, video.pix_fmt,
                          video.is_depth_map, video.fps, video.channels, has_audio).
    meta/stats.json       per feature: min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99, as
                          lists (shape (D,) for vectors, (3, 1, 1) in [0, 1] per channel for videos).
    meta/tasks.parquet    one row per task: task_index (int64) and task (string); the pandas metadata makes
                          `task` the DataFrame index, which is how LeRobot's loader reads it.
    meta/episodes/chunk-000/file-000.parquet
                          one row per episode: episode_index, tasks (list of strings), length,
                          data/chunk_index, data/file_index, dataset_from_index, dataset_to_index (the episode's
                          rows in the data file, to-index exclusive), videos/<key>/chunk_index,
                          videos/<key>/file_index, videos/<key>/from_timestamp, videos/<key>/to_timestamp
                          (where the episode lies in the concatenated mp4, seconds), meta/episodes/chunk_index,
                          meta/episodes/file_index, and stats/<feature>/<stat> for the non-video features.
    data/chunk-000/file-000.parquet
                          one row per frame: index (global), episode_index, frame_index (within the episode),
                          timestamp (frame_index / fps, float32), task_index, and each vector feature
                          (action, observation.state, ...) as a fixed-size list of float32.
    videos/<key>/chunk-000/file-000.mp4
                          every episode's frames one after the other; frame i of the file at i / fps seconds.

Per-episode image statistics in the episodes file are not written (LeRobot only aggregates them into
stats.json, which holds them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from videovla_model.importers.staging import ConversionError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
INDEX_FEATURES: dict[str, str] = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def scalar_feature(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


def vector_feature(names: Sequence[str]) -> dict[str, Any]:
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


def video_feature(height: int, width: int, fps: int, codec: str, pix_fmt: str) -> dict[str, Any]:
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": codec,
            "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def vector_stats(values: np.ndarray) -> dict[str, list[Any]]:
    """Statistics of (N, D) values over N, each a list of D numbers (count: [N])."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats: dict[str, list[Any]] = {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [len(values)],
    }
    for name, quantile in QUANTILES.items():
        stats[name] = np.quantile(values, quantile, axis=0).tolist()
    return stats


class ImageStatistics:
    """Per-channel statistics of uint8 RGB frames from exact 256-bin histograms (fed frame by frame)."""

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        for channel in range(3):
            self.histogram[channel] += np.bincount(frame[..., channel].ravel(), minlength=256)
        self.frames += 1

    def stats(self) -> dict[str, list[Any]]:
        """The stats.json entry: every statistic shaped (3, 1, 1), in [0, 1] like LeRobot's; count: [frames]."""
        levels = np.arange(256) / 255.0
        total = self.histogram.sum(axis=1)
        mean = (self.histogram * levels).sum(axis=1) / total
        variance = (self.histogram * (levels - mean[:, None]) ** 2).sum(axis=1) / total
        cumulative = np.cumsum(self.histogram, axis=1) / total[:, None]
        present = self.histogram > 0
        per_channel = {
            "min": levels[present.argmax(axis=1)],
            "max": levels[255 - present[:, ::-1].argmax(axis=1)],
            "mean": mean,
            "std": np.sqrt(variance),
        }
        for name, quantile in QUANTILES.items():
            per_channel[name] = levels[(cumulative < quantile).sum(axis=1)]
        stats: dict[str, list[Any]] = {name: value.reshape(3, 1, 1).tolist() for name, value in per_channel.items()}
        stats["count"] = [self.frames]
        return stats


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """meta/tasks.parquet: task_index and task, with the pandas metadata that makes `task` the index."""
    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object"},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_metadata).encode()})


def vector_column(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> a fixed-size list column, what LeRobot's writer produces for vector features."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])


def column_to_matrix(column: pa.ChunkedArray, name: str, width: int, where: Path) -> np.ndarray:
    """A list / fixed-size list column -> (N, width) float64; ConversionError naming the file and column."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        lengths = np.full(len(array), array.type.list_size)
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    else:
        raise ConversionError(f"{where}: column {name!r} has type {array.type}, expected a list of {width} numbers")
    bad = np.flatnonzero(np.asarray(array.is_null()) | (lengths != width))
    if len(bad):
        raise ConversionError(
            f"{where}: column {name!r} row {bad[0]} has {lengths[bad[0]]} values, info.json says shape [{width}]"
        )
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(len(array), width)


def write_parquet(table: pa.Table, root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_parquet(root: Path, relative: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Reads one parquet file of the dataset; ConversionError naming the file and the missing columns."""
    path = root / relative
    if not path.is_file():
        raise ConversionError(f"{path} is missing (a LeRobot v3.0 dataset has {relative})")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise ConversionError(f"{path} is not a readable parquet file: {str(error)[:200]}") from error
    missing = [name for name in columns or () if name not in schema.names]
    if missing:
        raise ConversionError(f"{path} lacks the columns {missing} (it has {schema.names[:20]})")
    return pq.read_table(path, columns=list(columns) if columns is not None else None)
