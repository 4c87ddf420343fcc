"""node_runner's shutdown in a separate process: a signal stops the spinning, before_shutdown runs while ROS is
up, a stuck shutdown dumps its stacks and exits, and a second signal ends the process at once."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ros_process import python_process

WAIT = 30.0

PROBE = """
import sys
import threading

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from videovla_ros import node_runner

node_runner.SHUTDOWN_TIMEOUT = float(sys.argv[1])
stuck = sys.argv[2] == "stuck"


class Probe(Node):
    def __init__(self) -> None:
        super().__init__("node_runner_probe")
        self.create_timer(0.01, lambda: None)  # the executor always has work, as in a real node

    def before_shutdown(self) -> None:
        print("before_shutdown, ROS up:", rclpy.ok(context=self.context), flush=True)
        if stuck:
            threading.Event().wait()  # e.g. a stop command a dead controller never acknowledges


node_runner.init_ros(None)
executor = MultiThreadedExecutor(num_threads=2)
probe = Probe()
executor.add_node(probe)
print("spinning", flush=True)
node_runner.spin_until_shutdown(executor, [probe])
print("shut down, ROS up:", rclpy.ok(), flush=True)
"""


@contextmanager
def probe(shutdown_timeout: float, behaviour: str) -> Iterator[subprocess.Popen[str]]:
    with python_process(PROBE, str(shutdown_timeout), behaviour) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "spinning"
        yield process


def output_after(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the probe did not exit:\n{process.communicate()[0]}")
    return process.returncode, output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_runs_before_shutdown_while_ros_is_up_and_exits_cleanly(sig):
    with probe(15.0, "clean") as process:
        process.send_signal(sig)
        code, output = output_after(process)
    assert code == 0, output
    assert output.splitlines() == ["before_shutdown, ROS up: True", "shut down, ROS up: False"]


def test_a_stuck_shutdown_writes_every_threads_stack_and_exits():
    with probe(1.0, "stuck") as process:
        process.send_signal(signal.SIGTERM)
        code, output = output_after(process)
    assert code == 1, output
    assert output.startswith("before_shutdown, ROS up: True\nTimeout (0:00:01)!"), output
    assert "in before_shutdown" in output, output


def test_a_second_signal_ends_a_stuck_shutdown_at_once():
    with probe(WAIT * 2, "stuck") as process:
        process.send_signal(signal.SIGINT)
        assert process.stdout is not None
        assert process.stdout.readline().startswith("before_shutdown")
        process.send_signal(signal.SIGINT)
        code, output = output_after(process)
    assert code == -signal.SIGINT, output
