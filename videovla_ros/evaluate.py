"""Episodes of `videovla-eval` and `videovla-demo`: the policy driving the simulated arm in closed loop, via ROS.

The real nodes talk over real topics and services. The simulated arm runs in a child process of its own (it
is the robot, and its physics thread must keep real time, which it cannot while sharing one Python interpreter
with the policy's inference); the policy node, the arm bridge and the evaluator share this process and one
MultiThreadedExecutor:

    sim_arm (SimArmNode) --image_raw, ee_pose--> videovla_policy (PolicyNode) --action_chunk--> arm_bridge
          ^                                                                     (ArmBridgeNode, pose_stream)
          +------------------------- target_pose, gripper_command --------------------------+

plus an evaluator node `videovla_eval` that does what a person at the robot would do. Per episode it disables
the bridge (`arm_bridge/enable` false), starts the next seeded scene (`sim_arm/reset`), publishes the scene's
instruction on `instruction`, enables the bridge and waits for `sim_arm/task_success` or the time limit. It
reads `action_chunk` (inference_time, arrival times), `sim_arm/grasped_objects` (what the gripper held during
the episode, so the report can tell a wrong grasp from no grasp), and for the first few episodes `image_raw` and
`imagination/clip`, which it turns into a GIF of imagined (left) vs actual (right) frames. Subscribing to the
imagination makes the policy decode video, so those episodes' inference times include decoding.

    videovla-eval --checkpoint checkpoints/videovla-sim-small --tasks pick --episodes 50 --output outputs/eval
    videovla-demo --instruction "pick up the red cube"
    videovla-eval --policy expert --tasks pick --episodes 50     # the scripted expert, through the same nodes

With `--policy expert` the policy node asks the simulator's scripted expert, which reads the privileged
`sim_arm/scene_state` (see `videovla_ros.policy_factory`); it measures the loop (nodes, bridge, timing)
apart from learning. `--policy-latency` adds wall seconds to every inference (the expert with a slow model's timing).

Time (`--sim-time`, the default): the simulated arm publishes /clock and every node runs with use_sim_time, so a
loaded machine slows the simulation down instead of making it skip ahead, and in sync mode the simulation stands
still while the policy thinks; `--time-limit` is then in simulated seconds, and the same seeds give the same
episodes whatever the load. `--no-sim-time` runs against the wall clock (the policy's latency then costs the arm
time, as on a real robot). The report gives the wall and the simulated seconds per episode.

Seeds: task t's episode i uses seed `--seed + i`; the shipped demonstrations were recorded with seeds from
1000 on, so the default seeds 0.. are placements the model has not seen.

Evaluator node `videovla_eval` (relative names, in --namespace):
  Publishes   instruction (std_msgs/String, INSTRUCTION)
  Subscribes  action_chunk (ActionChunk, ACTION_CHUNK), sim_arm/task_success (std_msgs/Bool, ROBOT_STATE),
              sim_arm/grasped_objects (std_msgs/String, ROBOT_STATE), ee_pose (PoseStamped, ROBOT_STATE);
              while recording a video also image_raw (Image, CAMERA) and
              imagination/clip (VideoClip, IMAGINATION)
  Calls       sim_arm/reset (std_srvs/Trigger), arm_bridge/enable (std_srvs/SetBool)
The policy node and the bridge read their parameters from --params-file (default: the package's
config/realman.yaml) keyed by node name, then the package's config/sim.yaml (the bridge clamps to the simulated
arm's workspace); the evaluator overrides only what the evaluation fixes (checkpoint,
backend, mode, stream rate, chunk age); the simulated arm gets its scene (task, seed, image size) on its
command line and node defaults otherwise.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from videovla_msgs.msg import ActionChunk
from videovla_ros.action_chunk import time_to_ns
from videovla_ros.eval_config import EvalConfig
from videovla_ros.eval_probe import SERVICE_TIMEOUT, EvalProbe
from videovla_ros.evaluation_report import (
    EpisodeResult,
    ImaginedClip,
    format_summary,
    instruction_problem,
    named_object,
    side_by_side,
    summarize,
    write_gif,
    write_report,
)
from videovla_ros.simulated_system import SimulatedSystem
from videovla_sim.tasks import sample_episode

STATE_SETTLE = 0.3  # s after a reset before enabling, so the bridge holds the new scene's pose
QUIET_MIN = 0.3  # s without chunks before a disabled system counts as quiet (no inference in flight)
QUIET_MAX = 10.0
# Wall seconds the simulated time may stand still (the sim waits at most 30 s for the policy) before the
# evaluation gives up on the simulated arm.
SIM_STALL_LIMIT = 60.0

Progress = Callable[[str], None]


def _quiet_period(chunks: Sequence[tuple[float, ActionChunk]]) -> float:
    longest = max((msg.inference_time for _, msg in chunks), default=0.0)
    return min(QUIET_MAX, max(QUIET_MIN, 1.5 * longest))


def _wait_quiet(probe: EvalProbe, quiet: float) -> None:
    """Waits until no chunk has arrived for `quiet` s, so no inference for the previous scene is in flight."""
    deadline = time.monotonic() + QUIET_MAX
    while time.monotonic() < deadline:
        last = probe.last_chunk_time()
        if last is None or time.monotonic() - last >= quiet:
            return
        time.sleep(0.05)


def enable_bridge(probe: EvalProbe, timeout: float = SERVICE_TIMEOUT) -> None:
    """Enables the bridge, retrying while it refuses for a transient reason (robot state not yet fresh)."""
    deadline = time.monotonic() + timeout
    while True:
        enabled, message = probe.set_bridge(True)
        if enabled:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"arm_bridge/enable refused: {message}")
        time.sleep(0.2)


def run_episode(
    system: SimulatedSystem,
    task: str,
    seed: int,
    instruction: str,
    *,
    reset: bool,
    video_path: Path | None,
    progress: Progress | None = None,
) -> EpisodeResult:
    """One episode: (reset,) instruct, enable, wait for success or the time limit, disable; see the module doc."""
    probe, config = system.probe, system.config
    probe.set_bridge(False)
    _wait_quiet(probe, _quiet_period(probe.chunks()))
    if reset:
        reply = probe.reset_scene()
        if not reply.startswith(f"seed {seed}:"):
            raise RuntimeError(f"sim_arm/reset started {reply!r}, expected seed {seed}")
    probe.send_instruction(instruction)
    time.sleep(STATE_SETTLE)
    if video_path is not None:
        probe.start_recording()
    probe.clear()
    enable_bridge(probe)
    started, (robot_started, _) = time.monotonic(), probe.robot_time()
    reported = 0
    while not probe.success and not _time_is_up(config, time.monotonic() - started, robot_started, probe):
        time.sleep(0.05)
        if progress is not None:
            reported = _report_chunks(probe, started, reported, progress)
    seconds, sim_seconds = time.monotonic() - started, (probe.success_stamp or probe.robot_time()[0]) - robot_started
    success = probe.success
    idle_fraction = system.bridge.stream_stats().idle_fraction()
    probe.set_bridge(False)
    chunks = probe.chunks()
    arrivals = [t for t, _ in chunks]
    video = ""
    if video_path is not None:
        clips, camera = probe.stop_recording()
        by_capture = {time_to_ns(msg.header.stamp): msg for _, msg in chunks}
        aligned = [_execution_aligned(clip, by_capture, config.mode) for clip in clips]
        panels = side_by_side(aligned, camera)
        if panels:
            period = aligned[0].period if aligned[0].period > 0 else 0.1
            video = str(write_gif(video_path, panels, period))
    return EpisodeResult(
        task=task,
        seed=seed,
        instruction=instruction,
        success=success,
        seconds=seconds,
        chunks=len(chunks),
        inference_times=tuple(float(msg.inference_time) for _, msg in chunks),
        chunk_intervals=tuple(float(b - a) for a, b in itertools.pairwise(arrivals)),
        idle_fraction=float(idle_fraction),
        video=video,
        named_object=named_object(instruction),
        grasped_objects=probe.grasped_objects,
        sim_seconds=sim_seconds,
    )


def _time_is_up(config: EvalConfig, wall_elapsed: float, robot_started: float, probe: EvalProbe) -> bool:
    """Whether the episode has used its time limit: simulated seconds in simulated-time mode, else wall seconds.
    Raises RuntimeError when the simulated time has stood still for SIM_STALL_LIMIT wall seconds."""
    if not config.sim_time:
        return wall_elapsed >= config.time_limit
    robot_now, standing_still = probe.robot_time()
    if standing_still > SIM_STALL_LIMIT:
        raise RuntimeError(
            f"the simulated arm's time stood still for {standing_still:.0f} s (wall); is sim_arm still running?"
        )
    return robot_now - robot_started >= config.time_limit


def _execution_aligned(clip: ImaginedClip, chunks: dict[int, ActionChunk], mode: str) -> ImaginedClip:
    """In sync mode the bridge starts a chunk's rows when it arrives, not at capture; compare what the arm did then.

    Shifts the clip's start by the chunk's capture-to-publish time (found by the shared capture stamp).
    """
    chunk = chunks.get(clip.start_ns)
    if mode != "sync" or chunk is None:
        return clip
    return replace(clip, start_ns=clip.start_ns + round(chunk.capture_to_publish_time * 1e9))


def _report_chunks(probe: EvalProbe, started: float, reported: int, progress: Progress) -> int:
    chunks = probe.chunks()
    position = probe.position()
    for arrival, msg in chunks[reported:]:
        rows = np.asarray(msg.actions, dtype=np.float32).reshape(msg.rows, msg.dims)
        gripper = rows[0, list(msg.dim_names).index("gripper")] if "gripper" in msg.dim_names else float("nan")
        where = f", gripper at z {position[2]:.3f} m" if position is not None else ""
        progress(
            f"  t={arrival - started:5.1f} s  chunk {msg.sequence}: inference {msg.inference_time:.3f} s, "
            f"gripper {'open' if gripper >= 0.5 else 'closed'}{where}"
        )
    return len(chunks)


def evaluate(config: EvalConfig, progress: Progress = print) -> tuple[list[EpisodeResult], Path]:
    """Runs every task's episodes through the ROS system; writes the report and videos into config.output.

    Returns the episode results and the path of report.json.
    """
    output = Path(config.output)
    results: list[EpisodeResult] = []
    with SimulatedSystem(config) as system:
        for task in config.tasks:
            system.start_task(task, config.seed)
            for index in range(config.episodes):
                seed = config.seed + index
                instruction = sample_episode(task, seed).instruction
                video = output / "videos" / f"{_slug(task)}_seed{seed}.gif" if index < config.videos else None
                result = run_episode(system, task, seed, instruction, reset=index > 0, video_path=video)
                results.append(result)
                wins = sum(r.success for r in results if r.task == task)
                progress(
                    f"{task} seed {seed} ({instruction!r}): {'success' if result.success else 'failure'} in "
                    f"{result.seconds:.1f} s ({result.sim_seconds:.1f} simulated), {result.chunks} chunks; "
                    f"{wins}/{index + 1} so far"
                )
    summary = summarize(results, config.policy_label, config.mode, config.sim_time)
    report = write_report(output, summary, results)
    progress(format_summary(summary))
    progress(f"report: {report}")
    return results, report


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in text).split())


def demo(config: EvalConfig, instruction: str, progress: Progress = print) -> EpisodeResult:
    """One episode of `instruction` with progress printed per chunk; writes the report and the video.

    An instruction the scene cannot show (unknown colour or object) is reported, then sent as given on a scene
    of the pick family, so one can watch what the policy makes of it; its success is not judged.
    """
    problem = instruction_problem(instruction)
    task = instruction
    if problem is not None:
        task = "pick"
        progress(
            f"note: {problem}. The simulated scene cannot contain it, so it shows a {task!r} layout (seed "
            f"{config.seed}); the policy still gets {instruction!r} and acts on it, and success is not judged."
        )
    output = Path(config.output)
    with SimulatedSystem(config) as system:
        system.start_task(task, config.seed)
        progress(f"sending {instruction!r}; time limit {config.time_limit:.0f} s")
        result = run_episode(
            system,
            task,
            config.seed,
            instruction,
            reset=False,
            video_path=output / "demo.gif",
            progress=progress,
        )
    if problem is not None:
        result = replace(result, success=False)
        progress(f"done in {result.seconds:.1f} s ({result.chunks} chunks); success not judged: {problem}")
    else:
        progress(f"{'SUCCESS' if result.success else 'FAILURE'} in {result.seconds:.1f} s ({result.chunks} chunks)")
    summary = summarize([result], config.policy_label, config.mode, config.sim_time)
    write_report(output, summary, [result])
    progress(
        f"mean inference {summary.mean_inference_time:.3f} s (with video decoding), {summary.seconds_per_chunk:.3f} "
        f"s/chunk, arm idle {summary.idle_fraction:.0%}"
    )
    progress(f"video: {result.video or 'none (no imagined clip arrived)'}")
    return result
