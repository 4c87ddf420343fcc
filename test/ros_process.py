"""Helpers for tests that run a ROS 2 peer in a separate process (real DDS between two processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import SingleThreadedExecutor
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
        rclpy.try_shutdown(context=context)
