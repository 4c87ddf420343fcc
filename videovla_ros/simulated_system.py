"""`SimulatedSystem`: the nodes of one evaluation and the simulated arm's child process, started and stopped.

The policy node, the arm bridge and the evaluator share this process and one executor spun by a background
thread; the simulated arm runs in a process of its own (see `start_task`). With `sim_time` the simulated arm
publishes /clock and every node runs with use_sim_time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import rclpy
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter

from videovla_ros.arm_bridge_node import ArmBridgeNode
from videovla_ros.eval_config import EvalConfig
from videovla_ros.eval_probe import EvalProbe
from videovla_ros.launch_plan import default_params_file, sim_params_file
from videovla_ros.node_runner import make_executor
from videovla_ros.policy_node import EXECUTOR_THREADS, PolicyNode

SPIN_PERIOD = 0.1
"""Seconds one executor wait may last, so the spinning thread notices `close` within that time."""


class SimulatedSystem:
    """The sim, policy, bridge and evaluator nodes in one process, spun by a background executor thread.

    Use as a context manager; `start_task` (re)creates the simulated arm for a task family or instruction.
    """

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        params_file = config.params_file or str(default_params_file())
        self.context = Context()
        # The bridge clamps to the simulated arm's workspace (config/sim.yaml), whatever the params file says.
        ros_args = ["--params-file", params_file, "--params-file", str(sim_params_file())]
        rclpy.init(args=["videovla-eval", "--ros-args", *ros_args], context=self.context)
        common = {"namespace": config.namespace, "context": self.context}
        clock = [Parameter("use_sim_time", value=config.sim_time)]
        self.executor = make_executor(EXECUTOR_THREADS + 4, context=self.context)
        self.nodes: list[Node] = []
        self.sim: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop_spinning = threading.Event()
        try:
            self.policy = PolicyNode(**common, parameter_overrides=self._policy_parameters())
            self.bridge = ArmBridgeNode(**common, parameter_overrides=self._bridge_parameters())
            self.probe = EvalProbe(**common, parameter_overrides=clock)
            self.nodes = [self.policy, self.bridge, self.probe]
            for node in self.nodes:
                self.executor.add_node(node)
            self._thread = threading.Thread(target=self._spin, name="videovla-eval executor", daemon=True)
            self._thread.start()
            for name, transition in (
                ("configure", self.policy.trigger_configure),
                ("activate", self.policy.trigger_activate),
            ):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    raise RuntimeError(f"the policy node failed to {name} with {config.policy_label}")
        except BaseException:
            self.close()
            raise

    def _policy_parameters(self) -> list[Parameter]:
        c = self.config
        return [
            Parameter("policy", value=c.policy),
            Parameter("checkpoint", value=c.checkpoint),
            Parameter("execution_mode", value=c.mode),
            Parameter("num_inference_steps", value=c.num_inference_steps),
            Parameter("guidance_scale", value=c.guidance_scale),
            Parameter("publish_imagination", value="auto"),
            Parameter("imagination_every", value=c.imagination_every),
            Parameter("added_latency", value=float(c.policy_latency)),
            Parameter("use_sim_time", value=c.sim_time),
        ]

    def _bridge_parameters(self) -> list[Parameter]:
        # Decoding the imagination for a video takes seconds on a CPU; in sync mode the arm waits for it, so
        # such chunks are late but not stale.
        parameters = [
            Parameter("backend", value="pose_stream"),
            Parameter("execution_mode", value=self.config.mode),
            Parameter("max_chunk_age", value=self.config.max_chunk_age),
            # The sim's controller interpolates between targets at its own 100 Hz. A 100 Hz stream timer in the
            # same Python process as the physics thread and the policy starves both (measured: the simulated arm
            # ran at 0.2x real time), so the evaluation streams at a rate the shared interpreter sustains.
            Parameter("stream_rate_hz", value=self.config.stream_rate_hz),
            Parameter("use_sim_time", value=self.config.sim_time),
        ]
        for name in ("chunk_watchdog", "state_watchdog"):
            if getattr(self.config, name) > 0:
                parameters.append(Parameter(name, value=getattr(self.config, name)))
        return parameters

    def start_task(self, task: str, seed: int) -> None:
        """Replaces the simulated arm with one showing `task` at `seed` (its first episode).

        The simulated arm runs in a process of its own, like a real robot: its physics thread must keep real time,
        and in one Python interpreter with the policy's inference and the bridge's stream timer it could not (the
        GIL is shared; measured 0.2x to 0.5x real time on 2 cores). It inherits the environment (ROS domain).
        """
        self._remove_sim()
        c = self.config
        command = [sys.executable, "-m", "videovla_ros.sim_arm_node", "--ros-args"]
        if c.namespace:
            command += ["-r", f"__ns:=/{c.namespace.strip('/')}"]
        for name, value in (
            ("task", task),
            ("seed", seed),
            ("image_height", c.image_size),
            ("image_width", c.image_size),
            ("real_time_factor", float(c.real_time_factor)),
            # Success is looked at every 50 simulated ms, so episode times are resolved that finely.
            ("success_rate_hz", 20.0),
            ("sim_time", c.sim_time),
            ("use_sim_time", c.sim_time),
        ):
            command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        self.sim = subprocess.Popen(command, env=dict(os.environ))

    def _remove_sim(self) -> None:
        if self.sim is None:
            return
        if self.sim.poll() is None:
            self.sim.send_signal(signal.SIGINT)
            try:
                self.sim.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait()
        self.sim = None

    def silence_policy(self) -> None:
        """Stops the policy node dead, without a goodbye, as a crash or a hang would (for fault tests): it leaves
        the executor and never starts a callback again; one already running (an inference) still finishes and may
        publish its chunk. Its handles are freed by `close`, after the executor has stopped: destroying a node while
        another thread's executor builds its wait set kills that thread."""
        self.executor.remove_node(self.policy)

    def _spin(self) -> None:
        while not self._stop_spinning.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=SPIN_PERIOD)

    def close(self) -> None:
        # The spinning thread stops before the executor shuts down: `Executor.shutdown` destroys the executor's
        # guard condition without waiting for callbacks still running (a policy inference), and a thread still
        # spinning then dies on that callback's InvalidHandle. Callbacks still running finish in the pool.
        self._stop_spinning.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.executor.shutdown()
        self._remove_sim()
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes = []
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> SimulatedSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
