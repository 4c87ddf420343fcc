"""The policy node's ExecuteInstruction goals: which one is active, how each ends (pure logic, thread-safe).
Every time is the node clock's (ns): simulated time under use_sim_time, so a goal's timeout is simulated seconds."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from videovla_ros.action_chunk import NANOSECONDS_PER_SECOND
from videovla_ros.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH, check_instruction


class Outcome(IntEnum):
    """Mirrors ExecuteInstruction.Result.OUTCOME_* (kept here so this module needs no ROS messages)."""

    COMPLETED_LIMIT = 0
    TIMED_OUT = 1
    CANCELED = 2
    PREEMPTED = 3
    FAILED = 4


@dataclass
class GoalRecord:
    """Bookkeeping of one ExecuteInstruction goal. `done` is set once `outcome` is decided."""

    goal_id: Any
    instruction: str
    max_chunks: int
    timeout: float
    accepted_ns: int
    chunks: int = 0
    outcome: Outcome | None = None
    reason: str = ""
    ended_ns: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed(self, now_ns: int) -> float:
        end = self.ended_ns if self.ended_ns is not None else now_ns
        return (end - self.accepted_ns) / NANOSECONDS_PER_SECOND


def check_goal(
    instruction: str, max_chunks: int, timeout: float, max_instruction_length: int = DEFAULT_MAX_INSTRUCTION_LENGTH
) -> str:
    """The goal's stripped instruction; raises ValueError naming the goal field that makes a goal unacceptable."""
    text = check_instruction(instruction, max_instruction_length, "goal instruction")
    if max_chunks < 0:
        raise ValueError(f"goal max_chunks must be >= 0 (0 = no limit), got {max_chunks}")
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"goal timeout must be a finite number of seconds >= 0 (0 = no limit), got {timeout}")
    return text


class GoalBook:
    """The one active ExecuteInstruction goal (a newer goal preempts it) and how it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: GoalRecord | None = None

    @property
    def active(self) -> GoalRecord | None:
        with self._lock:
            return self._active

    def start(
        self,
        goal_id: object,
        instruction: str,
        max_chunks: int,
        timeout: float,
        now_ns: int,
        max_instruction_length: int = DEFAULT_MAX_INSTRUCTION_LENGTH,
    ) -> GoalRecord:
        """Makes a new goal the active one, ending the previous one as PREEMPTED."""
        text = check_goal(instruction, max_chunks, timeout, max_instruction_length)
        record = GoalRecord(goal_id, text, max_chunks, timeout, now_ns)
        with self._lock:
            previous, self._active = self._active, record
        if previous is not None:
            self._end(previous, Outcome.PREEMPTED, "preempted by a newer goal", now_ns)
        return record

    def on_chunk(self, goal_id: object, now_ns: int) -> GoalRecord | None:
        """Counts a chunk published for goal `goal_id`; returns the record if it is still the active one."""
        with self._lock:
            record = self._active
            if record is None or record.goal_id != goal_id or record.outcome is not None:
                return None
            record.chunks += 1
            limit_reached = 0 < record.max_chunks <= record.chunks
        if limit_reached:
            self._end(record, Outcome.COMPLETED_LIMIT, f"published max_chunks={record.max_chunks} chunks", now_ns)
        return record

    def check_timeout(self, now_ns: int) -> GoalRecord | None:
        """Ends the active goal as TIMED_OUT when its timeout has passed; returns it if so."""
        record = self.active
        if record is None or record.timeout <= 0:
            return None
        if record.elapsed(now_ns) < record.timeout:
            return None
        return self._end(record, Outcome.TIMED_OUT, f"timeout of {record.timeout:g} s reached", now_ns)

    def end_active(self, outcome: Outcome, reason: str, now_ns: int) -> GoalRecord | None:
        """Ends whatever goal is active (failure, deactivation, a new instruction on the topic)."""
        record = self.active
        return None if record is None else self._end(record, outcome, reason, now_ns)

    def end(self, goal_id: object, outcome: Outcome, reason: str, now_ns: int) -> GoalRecord | None:
        """Ends goal `goal_id` if it is the active one (e.g. on cancel)."""
        record = self.active
        if record is None or record.goal_id != goal_id:
            return None
        return self._end(record, outcome, reason, now_ns)

    def _end(self, record: GoalRecord, outcome: Outcome, reason: str, now_ns: int) -> GoalRecord | None:
        with self._lock:
            if record.outcome is not None:
                return None
            record.outcome = outcome
            record.reason = reason
            record.ended_ns = now_ns
            if self._active is record:
                self._active = None
        record.done.set()
        return record
