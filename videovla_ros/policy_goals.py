"""The policy node's execute_instruction action server: which goals it refuses, how a goal sets the instruction,
waits for its end and reports it. Goal bookkeeping (outcomes, limits, timeouts) is videovla_ros.goals;
`goal_refusal`, `end_handle`, `goal_result` and `goal_feedback` are the decisions and messages, pure. Goal times
are the node clock's (simulated under use_sim_time), so timeouts and image_timeout follow the simulated world."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from action_msgs.msg import GoalStatus
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node

from videovla_msgs.action import ExecuteInstruction
from videovla_ros.diagnostics import DiagnosticsBook
from videovla_ros.goals import GoalBook, GoalRecord, Outcome, check_goal
from videovla_ros.inference_scheduler import InferenceScheduler
from videovla_ros.instruction import DEFAULT_MAX_INSTRUCTION_LENGTH, bounded
from videovla_ros.policy_parameters import PolicyNodeParameters

NOT_ACTIVE = "the policy node is not active (configure and activate it first)"
CANCEL_POLL_PERIOD = 0.02  # s; a running goal checks this often whether its client asked to cancel it


@dataclass(frozen=True)
class GoalRefusal:
    """Why a goal is refused; `bad_instruction` when its instruction is at fault (counted as such too)."""

    reason: str
    bad_instruction: bool = False


def goal_refusal(
    active: bool, params: PolicyNodeParameters | None, goal: ExecuteInstruction.Goal
) -> GoalRefusal | None:
    """None when the node accepts `goal`: it is active and every goal field is valid."""
    if not active or params is None:
        return GoalRefusal(NOT_ACTIVE)
    try:
        check_goal(goal.instruction, goal.max_chunks, goal.timeout, params.max_instruction_length)
    except ValueError as error:
        return GoalRefusal(str(error), bad_instruction=str(error).startswith("goal instruction"))
    return None


def end_handle(goal_handle: ServerGoalHandle, outcome: Outcome) -> None:
    """Moves the handle to its final state: reaching a limit or the timeout succeeds, a requested cancel is
    canceled, anything else (failure, preemption) aborts."""
    if outcome in (Outcome.COMPLETED_LIMIT, Outcome.TIMED_OUT):
        goal_handle.succeed()
    elif outcome == Outcome.CANCELED and goal_handle.status == GoalStatus.STATUS_CANCELING:
        goal_handle.canceled()
    else:
        goal_handle.abort()


def goal_result(record: GoalRecord, now_ns: int) -> ExecuteInstruction.Result:
    """The result of a finished goal."""
    assert record.outcome is not None, "a goal has a result only once its outcome is decided"
    return ExecuteInstruction.Result(
        outcome=int(record.outcome),
        reason=record.reason,
        chunks_executed=record.chunks,
        elapsed=record.elapsed(now_ns),
    )


def goal_feedback(record: GoalRecord, inference_time: float) -> ExecuteInstruction.Feedback:
    """The feedback sent after each chunk published for the goal."""
    return ExecuteInstruction.Feedback(
        chunks_executed=record.chunks, last_inference_time=inference_time, state="executing"
    )


def camera_silence_failure(
    record: GoalRecord, last_frame_ns: int | None, now_ns: int, params: PolicyNodeParameters
) -> str | None:
    """Why the running goal fails for want of camera images (none for image_timeout seconds since the goal was
    accepted or the last frame arrived), or None while images come or image_timeout is 0 (never). All three
    times are the node clock's (ns)."""
    if params.image_timeout <= 0:
        return None
    since = max(record.accepted_ns, last_frame_ns or 0)
    silence = (now_ns - since) / 1e9
    if silence <= params.image_timeout:
        return None
    return f"no camera image for {silence:.1f} s on {params.image_topic!r}"


PolicyState = Callable[[], tuple[bool, PolicyNodeParameters | None, InferenceScheduler | None]]
"""The node's (active, parameters, scheduler) now; parameters and scheduler are None while unconfigured."""


class GoalServer:
    """execute_instruction on `node`: a goal runs its instruction until max_chunks, timeout, cancel, failure or
    preemption (recorded in `goals`). Its callbacks run in `callback_group`, which must be reentrant: a goal's
    execute callback blocks (on a multi-threaded executor) until the goal ends."""

    def __init__(
        self,
        node: Node,
        goals: GoalBook,
        diagnostics: DiagnosticsBook,
        policy_state: PolicyState,
        wake: Callable[[], None],
        callback_group: CallbackGroup,
    ) -> None:
        self._node, self._goals, self._diagnostics = node, goals, diagnostics
        self._policy_state, self._wake = policy_state, wake
        self._server = ActionServer(
            node,
            ExecuteInstruction,
            "execute_instruction",
            execute_callback=self._execute,
            goal_callback=self._on_goal_request,
            cancel_callback=lambda _request: CancelResponse.ACCEPT,
            callback_group=callback_group,
        )

    def destroy(self) -> None:
        self._server.destroy()

    def _now_ns(self) -> int:
        return self._node.get_clock().now().nanoseconds

    def on_chunk(self, inference_time: float) -> None:
        """Counts a published chunk for the running goal (if any) and sends its feedback."""
        active = self._goals.active
        record = None if active is None else self._goals.on_chunk(active.goal_id, self._now_ns())
        if record is not None:
            goal_handle: ServerGoalHandle = record.goal_id
            goal_handle.publish_feedback(goal_feedback(record, inference_time))

    def _on_goal_request(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        active, params, _ = self._policy_state()
        refusal = goal_refusal(active, params, goal)
        if refusal is None:
            return GoalResponse.ACCEPT
        if refusal.bad_instruction:
            self._diagnostics.count("rejected_instructions")
        self._diagnostics.count("rejected_goals")
        self._node.get_logger().warning(f"rejected execute_instruction goal: {refusal.reason}")
        return GoalResponse.REJECT

    def _execute(self, goal_handle: ServerGoalHandle) -> ExecuteInstruction.Result:
        request = goal_handle.request
        _, params, scheduler = self._policy_state()
        cap = params.max_instruction_length if params is not None else DEFAULT_MAX_INSTRUCTION_LENGTH
        record = self._goals.start(
            goal_handle, request.instruction, request.max_chunks, request.timeout, self._now_ns(), cap
        )
        generation = None
        if scheduler is None:  # cleaned up between acceptance and execution
            self._goals.end(goal_handle, Outcome.FAILED, "the policy node is not active", self._now_ns())
        elif record.outcome is None:
            generation = scheduler.set_instruction(record.instruction, "goal instruction")
            self._node.get_logger().info(
                f"goal accepted: {bounded(record.instruction)} "
                f"(max_chunks={record.max_chunks}, timeout={record.timeout} s)"
            )
            self._wake()
        while not record.done.wait(CANCEL_POLL_PERIOD):
            if goal_handle.is_cancel_requested:
                self._goals.end(goal_handle, Outcome.CANCELED, "canceled by the client", self._now_ns())
        if scheduler is not None and generation is not None and scheduler.generation == generation:
            # The goal that set the instruction has ended and nothing replaced it: stop producing chunks.
            scheduler.clear_instruction()
        outcome = record.outcome
        assert outcome is not None, "a goal is finished only once its outcome is decided"
        end_handle(goal_handle, outcome)
        self._node.get_logger().info(f"goal {bounded(record.instruction)} ended: {outcome.name}: {record.reason}")
        return goal_result(record, self._now_ns())
