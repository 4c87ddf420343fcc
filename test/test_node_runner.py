"""node_runner's shutdown in a separate process: a signal stops the spinning, before_shutdown runs while ROS is
up, a stuck shutdown dumps its stacks and exits, a second signal ends the process at once, and a node whose
parent dies shuts down too (no orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ros_process import python_process, wait_for

WAIT = 30.0

PROBE = """
import sys
import threading

import rclpy
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
executor = node_runner.make_executor(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
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


@pytest.mark.parametrize(("sig", "threads"), [(signal.SIGINT, "2"), (signal.SIGTERM, "1")])
def test_a_signal_runs_before_shutdown_while_ros_is_up_and_exits_cleanly(sig, threads):
    # The exact output also shows that rclpy printed no "exception was never retrieved" on the way out.
    with python_process(PROBE, "15", "clean", threads) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "spinning"
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


PARENT = """
import subprocess
import sys
import time

with open(sys.argv[1], "w") as out:
    subprocess.Popen([sys.executable, "-c", sys.argv[2], "15", "clean"], stdout=out, stderr=subprocess.STDOUT)
time.sleep(600)  # a parent that stays until it is killed
"""


def test_a_node_whose_parent_dies_shuts_down_cleanly(tmp_path):
    # What `ros2 launch` dying on an error (or SIGKILL) would otherwise leave behind: orphaned nodes.
    log = tmp_path / "child.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log), PROBE], env=dict(os.environ))
    try:
        assert wait_for(lambda: log.exists() and "spinning" in log.read_text(), WAIT), "the child did not start"
        parent.kill()
        parent.wait()
        assert wait_for(lambda: "shut down, ROS up: False" in log.read_text(), WAIT), log.read_text()
        assert log.read_text().splitlines()[1:] == ["before_shutdown, ROS up: True", "shut down, ROS up: False"]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
