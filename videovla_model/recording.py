"""Crash-safe live recording into an episode dataset (pure Python + numpy; used by the recorder node).

While an episode is recorded, everything lands on disk as it comes, in a hidden folder of the dataset::

    <root>/.recording_<id>/journal.json        what the episode is (instruction, rate, image shape); replaced
                                               atomically, so it is always a whole JSON document
    <root>/.recording_<id>/frames.u8           raw (H, W, 3) uint8 frames, appended
    <root>/.recording_<id>/frame_stamps.i64    their capture stamps [ns], appended AFTER each frame
    <root>/.recording_<id>/pose_stamps.i64, poses.f64          arm pose samples: stamp; x y z qw qx qy qz
    <root>/.recording_<id>/gripper_stamps.i64, gripper.f64     gripper samples: stamp; value 0..1
    <root>/.recording_<id>/events.jsonl        marks (camera stopped, pose jumped), one JSON line each
    <root>/.recording_<id>/lock                held (flock) by the live recorder; the kernel drops it on a crash

Each value file is written with unbuffered appends, and a sample counts only once its stamp is complete, so a
killed process leaves at worst one partial trailing sample, which loading ignores. `finalise` resamples the
streams with `videovla_model.resampling` and writes an ordinary episode through `EpisodeWriter` (staging
folder + atomic rename); `EpisodeDataset` reads only `episode_*` folders, so it never sees a half episode.
A recording whose recorder died is finalised by `recover` (marked `interrupted` in the episode's extra), or,
when its streams cannot make an episode, renamed to a visible `interrupted_<id>` folder with the reason in
its journal: nothing recorded is deleted without an explicit discard.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import numpy as np
import tyro

from videovla_model.cli import parse
from videovla_model.contract import DEFAULT_ACTION_DIM_NAMES
from videovla_model.episodes import EpisodeWriter
from videovla_model.resampling import (
    PoseSeries,
    Resampled,
    ResampleError,
    ResampleLimits,
    StreamNames,
    resample,
)

RECORDING_PREFIX = ".recording_"
INTERRUPTED_PREFIX = "interrupted_"
JOURNAL_FORMAT = "videovla-recording"
JOURNAL_VERSION = 1
MIN_EPISODE_STEPS = 6
"""One action chunk: an episode shorter than this cannot give a single training sample."""
DEFAULT_LIMITS = ResampleLimits()
DEFAULT_STREAM_NAMES = StreamNames()
_STAMP = np.dtype("<i8")
_VALUE = np.dtype("<f8")
_POSE_WIDTH = 7
_FILES = {
    "frames": ("frame_stamps.i64", "frames.u8"),
    "poses": ("pose_stamps.i64", "poses.f64"),
    "gripper": ("gripper_stamps.i64", "gripper.f64"),
}


class RecordingError(ValueError):
    """A recording cannot start or become an episode; the message says why and what to do."""


class DiskSpaceError(RecordingError):
    """Too little free disk space to start recording."""


class EpisodeTooShortError(RecordingError):
    """The recording has fewer steps than one action chunk."""


def check_free_space(root: str | os.PathLike[str], min_free_bytes: int) -> int:
    """Returns the free bytes on `root`'s file system; raises DiskSpaceError below `min_free_bytes`."""
    path = Path(root)
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise DiskSpaceError(
            f"only {free / 1e6:.0f} MB free on the disk holding {root} (at least {min_free_bytes / 1e6:.0f} MB "
            "required by min_free_disk_mb): free some space or record to another disk"
        )
    return free


@dataclass(frozen=True)
class Journal:
    """journal.json: what the finalised episode needs besides the streams."""

    recording_id: str
    instruction: str
    action_rate_hz: float
    started_unix: float
    embodiment_id: int = 0
    image_shape: tuple[int, int, int] | None = None
    stream_names: tuple[str, str, str] = ("camera", "pose", "gripper")
    has_gripper: bool = True
    extra: Mapping[str, Any] | None = None
    unrecoverable: str = ""
    """Why `recover` could not make an episode of it ("" while it can)."""

    def to_json(self) -> dict[str, Any]:
        return {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, **asdict(self)}

    @classmethod
    def load(cls, folder: Path) -> Journal:
        raw = json.loads((folder / "journal.json").read_text())
        if raw.pop("format", None) != JOURNAL_FORMAT or raw.pop("version", None) != JOURNAL_VERSION:
            raise RecordingError(f"{folder}/journal.json is not a {JOURNAL_FORMAT} v{JOURNAL_VERSION} journal")
        if raw.get("image_shape") is not None:
            raw["image_shape"] = tuple(raw["image_shape"])
        raw["stream_names"] = tuple(raw["stream_names"])
        return cls(**raw)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class LiveRecording:
    """An episode being recorded: appends samples to its `.recording_<id>` folder as they come.

    Not thread-safe: one thread (the recorder node's) calls it. `close` releases the files; `finalise`,
    `discard` and `recover` decide what becomes of the folder.
    """

    def __init__(self, root: Path, journal: Journal) -> None:
        self.root = root
        self.folder = root / f"{RECORDING_PREFIX}{journal.recording_id}"
        self.journal = journal
        self.folder.mkdir(parents=True)
        # The files stay open for the recording's lifetime (closed by close()), so no context managers.
        self._lock = open(self.folder / "lock", "wb")  # noqa: SIM115
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _write_atomically(self.folder / "journal.json", json.dumps(journal.to_json(), indent=2) + "\n")
        self._files: dict[str, BinaryIO] = {}
        for stamps_name, values_name in _FILES.values():
            for name in (stamps_name, values_name):
                self._files[name] = open(self.folder / name, "ab", buffering=0)  # noqa: SIM115
        self._events = open(self.folder / "events.jsonl", "a", buffering=1)  # noqa: SIM115
        self.frames = self.poses = self.grippers = 0

    @classmethod
    def start(
        cls,
        root: str | os.PathLike[str],
        instruction: str,
        action_rate_hz: float,
        *,
        min_free_bytes: int,
        embodiment_id: int = 0,
        stream_names: StreamNames = DEFAULT_STREAM_NAMES,
        has_gripper: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> LiveRecording:
        """Creates the dataset (if new) and the recording folder; refuses a full disk or an empty instruction."""
        if not instruction.strip():
            raise RecordingError("instruction must be a non-empty string: send one on `instruction` or with ~/start")
        if not (np.isfinite(action_rate_hz) and action_rate_hz > 0):
            raise RecordingError(f"action_rate_hz must be a positive number, got {action_rate_hz!r}")
        EpisodeWriter(root)  # creates or checks dataset.json before anything is recorded
        check_free_space(root, min_free_bytes)
        journal = Journal(
            recording_id=f"{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}",
            instruction=instruction,
            action_rate_hz=float(action_rate_hz),
            started_unix=time.time(),
            embodiment_id=int(embodiment_id),
            stream_names=(stream_names.frames, stream_names.poses, stream_names.gripper),
            has_gripper=has_gripper,
            extra=dict(extra or {}),
        )
        return cls(Path(root), journal)

    def add_frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """Appends one (H, W, 3) uint8 frame; every frame of a recording must have the first one's shape."""
        rgb = np.ascontiguousarray(rgb)
        shape = tuple(int(n) for n in rgb.shape)
        if rgb.dtype != np.uint8 or len(shape) != 3 or shape[2] != 3:
            raise RecordingError(f"frames must be (H, W, 3) uint8 RGB, got {rgb.dtype} {shape}")
        if self.journal.image_shape is None:
            self.journal = Journal(**{**asdict(self.journal), "image_shape": shape})
            _write_atomically(self.folder / "journal.json", json.dumps(self.journal.to_json(), indent=2) + "\n")
        elif shape != self.journal.image_shape:
            raise RecordingError(f"frame of shape {shape} in a recording of {self.journal.image_shape} frames")
        self._append("frames", stamp_ns, rgb.tobytes())
        self.frames += 1

    def add_pose(self, stamp_ns: int, position: np.ndarray, quaternion_wxyz: np.ndarray) -> None:
        row = np.concatenate((np.asarray(position, dtype=_VALUE), np.asarray(quaternion_wxyz, dtype=_VALUE)))
        self._append("poses", stamp_ns, row.astype(_VALUE).tobytes())
        self.poses += 1

    def add_gripper(self, stamp_ns: int, value: float) -> None:
        self._append("gripper", stamp_ns, np.array([value], dtype=_VALUE).tobytes())
        self.grippers += 1

    def mark(self, event: str, **details: Any) -> None:
        """Writes a mark (bounded text) that goes into the finalised episode's extra["events"]."""
        self._events.write(json.dumps({"event": event[:200], **details}) + "\n")

    def _append(self, stream: str, stamp_ns: int, payload: bytes) -> None:
        stamps_name, values_name = _FILES[stream]
        self._files[values_name].write(payload)
        self._files[stamps_name].write(np.array([stamp_ns], dtype=_STAMP).tobytes())

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._events.close()
        self._lock.close()

    def finalise(
        self,
        *,
        min_steps: int = MIN_EPISODE_STEPS,
        limits: ResampleLimits = DEFAULT_LIMITS,
        success: bool | None = None,
    ) -> Path:
        """Closes and turns the recording into an episode; returns its folder.

        Raises EpisodeTooShortError or ResampleError (with the reason) and leaves the recording open and intact,
        so the caller can keep recording or discard it.
        """
        finalise_folder(self.folder, min_steps=min_steps, limits=limits, success=success, check_only=True)
        self.close()
        return finalise_folder(self.folder, min_steps=min_steps, limits=limits, success=success)

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.folder)


def _read_stream(folder: Path, stream: str, row_bytes: int) -> tuple[np.ndarray, np.memmap | np.ndarray]:
    """(stamps (N,), values as raw rows) of complete samples only: a crash may cut the last one."""
    stamps_name, values_name = _FILES[stream]
    stamps = np.fromfile(folder / stamps_name, dtype=_STAMP)
    values_size = (folder / values_name).stat().st_size
    count = min(stamps.size, values_size // row_bytes) if row_bytes else stamps.size
    if count == 0:
        return stamps[:0], np.zeros((0, row_bytes), dtype=np.uint8)
    values = np.memmap(folder / values_name, dtype=np.uint8, mode="r", shape=(count, row_bytes))
    return stamps[:count], values


@dataclass(frozen=True)
class LoadedStreams:
    frame_stamps_ns: np.ndarray
    frames: np.ndarray
    """(F, H, W, 3) uint8, memory-mapped."""
    poses: PoseSeries
    gripper_stamps_ns: np.ndarray | None
    gripper_values: np.ndarray | None
    events: tuple[dict[str, Any], ...]


def load_streams(folder: Path, journal: Journal) -> LoadedStreams:
    """The complete samples of a recording folder (live or interrupted)."""
    if journal.image_shape is None:
        raise RecordingError("no camera frame was recorded")
    height, width, channels = journal.image_shape
    frame_stamps, frames = _read_stream(folder, "frames", height * width * channels)
    pose_stamps, poses = _read_stream(folder, "poses", _POSE_WIDTH * _VALUE.itemsize)
    pose_rows = np.asarray(poses).view(_VALUE).reshape(-1, _POSE_WIDTH)
    gripper_stamps, gripper = _read_stream(folder, "gripper", _VALUE.itemsize)
    events_path = folder / "events.jsonl"
    events = []
    for line in events_path.read_text().splitlines() if events_path.exists() else []:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # the line a crash cut short
            continue
    return LoadedStreams(
        frame_stamps_ns=frame_stamps,
        frames=np.asarray(frames).reshape(-1, height, width, channels),
        poses=PoseSeries(pose_stamps, pose_rows[:, :3], pose_rows[:, 3:]),
        gripper_stamps_ns=gripper_stamps if journal.has_gripper else None,
        gripper_values=np.asarray(gripper).view(_VALUE).reshape(-1) if journal.has_gripper else None,
        events=tuple(events),
    )


def _episode_of(root: Path, recording_id: str) -> Path | None:
    """The episode already finalised from `recording_id` (a crash between rename and clean-up leaves both)."""
    for episode_json in sorted(root.glob("episode_*/episode.json")):
        try:
            extra = json.loads(episode_json.read_text()).get("extra", {})
        except (OSError, json.JSONDecodeError):
            continue
        if extra.get("recording_id") == recording_id:
            return episode_json.parent
    return None


def _episode_extra(journal: Journal, result: Resampled, events: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """What the finalised episode's extra records: provenance, start pose, stamps, flags, stream reports, marks."""
    return {
        **(journal.extra or {}),
        "source": "videovla recorder",
        "recording_id": journal.recording_id,
        "start_pose": {
            "position": result.poses.positions[0].tolist(),
            "quaternion_wxyz": result.poses.quaternions[0].tolist(),
        },
        "capture_stamps_ns": result.poses.stamps_ns[:-1].tolist(),
        "flags": list(result.flags),
        "streams": [asdict(report) for report in result.reports],
        "events": list(events),
    }


def finalise_folder(
    folder: Path,
    *,
    min_steps: int = MIN_EPISODE_STEPS,
    limits: ResampleLimits = DEFAULT_LIMITS,
    success: bool | None = None,
    interrupted: str = "",
    check_only: bool = False,
) -> Path:
    """Resamples a recording folder into an episode of its dataset and removes the folder; returns the episode.

    check_only: only checks that it would succeed (raises the same errors) and changes nothing.
    """
    journal = Journal.load(folder)
    root = folder.parent
    if not check_only and (existing := _episode_of(root, journal.recording_id)) is not None:
        shutil.rmtree(folder)
        return existing
    streams = load_streams(folder, journal)
    gripper_stamps, gripper_values = streams.gripper_stamps_ns, streams.gripper_values
    if gripper_stamps is not None and gripper_stamps.size == 0:  # a command topic nobody published on
        gripper_stamps = gripper_values = None
    result = resample(
        streams.frame_stamps_ns,
        streams.poses,
        gripper_stamps,
        gripper_values,
        journal.action_rate_hz,
        limits,
        names=StreamNames(*journal.stream_names),
    )
    steps = len(result.frame_indices)
    if steps < min_steps:
        raise EpisodeTooShortError(
            f"the episode has {steps} steps ({steps / journal.action_rate_hz:.1f} s at {journal.action_rate_hz} Hz); "
            f"at least {min_steps} (one action chunk) are needed: record longer, or discard it"
        )
    if check_only:
        return folder
    extra = _episode_extra(journal, result, streams.events)
    if interrupted:
        extra["interrupted"] = interrupted
    episode = EpisodeWriter(root).write(
        np.ascontiguousarray(streams.frames[result.frame_indices]),
        result.actions,
        journal.instruction,
        journal.action_rate_hz,
        embodiment_id=journal.embodiment_id,
        action_dim_names=DEFAULT_ACTION_DIM_NAMES,
        success=success,
        extra=extra,
    )
    shutil.rmtree(folder)
    return episode


@dataclass(frozen=True)
class RecoveryOutcome:
    recording_id: str
    episode: Path | None
    """The episode it became, or None when it could not (then `reason` says why, and `kept_at` where it is)."""
    reason: str = ""
    kept_at: Path | None = None


def _is_live(folder: Path) -> bool:
    try:
        with open(folder / "lock", "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return False


def _set_aside(folder: Path, reason: str) -> Path:
    """Renames an unrecoverable recording to a visible interrupted_<id> folder, with the reason in its journal."""
    try:
        journal = Journal.load(folder)
        _write_atomically(
            folder / "journal.json",
            json.dumps(Journal(**{**asdict(journal), "unrecoverable": reason[:500]}).to_json(), indent=2) + "\n",
        )
    except (OSError, ValueError, TypeError):
        (folder / "UNRECOVERABLE.txt").write_text(reason[:500] + "\n")
    destination = folder.with_name(INTERRUPTED_PREFIX + folder.name[len(RECORDING_PREFIX) :])
    folder.rename(destination)
    return destination


def recover(
    root: str | os.PathLike[str], *, min_steps: int = MIN_EPISODE_STEPS, limits: ResampleLimits = DEFAULT_LIMITS
) -> list[RecoveryOutcome]:
    """Finalises every recording of `root` whose recorder died (skips live ones); see the module docstring."""
    outcomes = []
    for folder in sorted(Path(root).glob(f"{RECORDING_PREFIX}*")):
        if not folder.is_dir() or _is_live(folder):
            continue
        recording_id = folder.name[len(RECORDING_PREFIX) :]
        try:
            episode = finalise_folder(
                folder,
                min_steps=min_steps,
                limits=limits,
                interrupted="the recorder stopped without ~/stop or ~/discard (crash or kill); recovered",
            )
            outcomes.append(RecoveryOutcome(recording_id, episode))
        except (RecordingError, ResampleError, OSError, json.JSONDecodeError, TypeError) as error:
            reason = f"{type(error).__name__}: {error}"
            outcomes.append(RecoveryOutcome(recording_id, None, reason, _set_aside(folder, reason)))
    return outcomes


@dataclass(frozen=True)
class RecoverCommand:
    """What `videovla-recover` finalises, and by which limits (the recorder's)."""

    dataset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATASET")]
    """episode dataset folder"""
    min_steps: int = MIN_EPISODE_STEPS
    """shortest episode kept [steps]"""
    limits: Annotated[ResampleLimits, tyro.conf.OmitArgPrefixes] = DEFAULT_LIMITS


def main(argv: list[str] | None = None) -> int:
    """`videovla-recover DATASET`: finalises the recordings a killed recorder left behind."""
    description = "Turn recordings interrupted by a crash into episodes (or set them aside)."
    command = parse(RecoverCommand, argv, prog="videovla-recover", description=description)
    if not (Path(command.dataset) / "dataset.json").is_file():
        problem = f"{command.dataset!r} is not an episode dataset (no dataset.json)"
        print(f"videovla-recover: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    outcomes = recover(command.dataset, min_steps=command.min_steps, limits=command.limits)
    for outcome in outcomes:
        if outcome.episode is not None:
            print(f"{outcome.recording_id}: recovered as {outcome.episode}")
        else:
            print(f"{outcome.recording_id}: not recoverable ({outcome.reason}); kept at {outcome.kept_at}")
    if not outcomes:
        print(f"{command.dataset}: no interrupted recordings")
    return 1 if any(o.episode is None for o in outcomes) else 0
