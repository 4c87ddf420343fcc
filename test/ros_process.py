"""Helpers for tests that run a ROS 2 peer in a separate process (real DDS between two processes)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def python_process(source: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Runs `source` in a fresh interpreter (same environment, so the same ROS domain) and stops it after."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Polls `condition` (made true by executors spinning elsewhere) every `period` s until it holds or `timeout`
    seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return condition()


def spin_until(
    node: Node, condition: Callable[[], bool], timeout: float, executor: SingleThreadedExecutor | None = None
) -> bool:
    """Spins `node` until `condition()` holds or `timeout` seconds pass; returns whether it held."""
    own_executor = executor is None
    executor = executor or SingleThreadedExecutor(context=node.context)
    if own_executor:
        executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if condition():
                return True
            executor.spin_once(timeout_sec=0.05)
        return condition()
    finally:
        if own_executor:
            executor.remove_node(node)


@contextmanager
def ros_context() -> Iterator[rclpy.context.Context]:
    """An initialised rclpy context of its own, shut down afterwards."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        shut_down(context)


def shut_down(context: rclpy.context.Context) -> None:
    """Shuts `context` down, then collects garbage so the DDS participants of contexts nobody references any
    more go now.

    rclpy keeps a shut-down context's participant until the context object is garbage-collected, and nodes,
    executors and callbacks hold it in reference cycles; until then the participant still announces its nodes
    and services. A later test on the same domain then meets zombie servers of the same name, and a client's
    `wait_for_service` can stay false while the node it wants is up (seen in CI: 20 s; rmw_fastrtps wants the
    graph's request readers and response writers of a service to be equal in number).
    """
    rclpy.try_shutdown(context=context)
    gc.collect()


class BackgroundSpin:
    """Spins `executor` in a daemon thread until `stop()`, which re-raises whatever ended the spin early.

    rclpy's executor shutdown destroys its guard condition while a handler it already queued may still trigger
    it; the InvalidHandle that race raises is rclpy's, not the nodes' failure, and is tolerated only once
    `stop()` has begun: anywhere else it is an error like any other.
    """

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except InvalidHandle as error:
            if not self.stopping.is_set():
                self.error = error
        except Exception as error:  # handed to the test's thread by stop()
            self.error = error

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.executor.shutdown(timeout_sec=timeout)
        self.thread.join(timeout=timeout)
        if self.error is not None:
            raise self.error
