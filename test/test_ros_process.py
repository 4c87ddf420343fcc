"""The test harnesses' background spin: rclpy's InvalidHandle race is tolerated during shutdown only."""

from __future__ import annotations

import threading

import pytest
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from ros_process import BackgroundSpin, ros_context


def spin_triggering_a_destroyed_guard(node: Node, after_stop_begins: bool) -> BackgroundSpin:
    """A spin whose first timer callback triggers a destroyed guard condition (as a queued handler does when the
    executor's shutdown destroyed its guard condition under it), once `stop()` has begun if `after_stop_begins`."""
    guard = node.create_guard_condition(lambda: None)
    node.destroy_guard_condition(guard)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spin = BackgroundSpin(executor)
    fired = threading.Event()

    def trigger_destroyed_guard() -> None:
        if fired.is_set():
            return
        fired.set()
        if after_stop_begins:
            assert spin.stopping.wait(10.0)
        guard.trigger()

    node.create_timer(0.01, trigger_destroyed_guard)  # added while spinning: the executor picks it up
    assert fired.wait(10.0)
    return spin


def test_invalid_handle_is_tolerated_during_shutdown():
    with ros_context() as context:
        node = Node("spin_shutdown_race", context=context)
        spin = spin_triggering_a_destroyed_guard(node, after_stop_begins=True)
        spin.stop(timeout=10.0)  # does not raise
        assert not spin.thread.is_alive()
        node.destroy_node()


def test_invalid_handle_while_running_is_an_error():
    with ros_context() as context:
        node = Node("spin_running_error", context=context)
        spin = spin_triggering_a_destroyed_guard(node, after_stop_begins=False)
        spin.thread.join(timeout=10.0)  # the spin ends on the error, nobody asked it to stop
        assert not spin.thread.is_alive()
        with pytest.raises(InvalidHandle):
            spin.stop(timeout=10.0)
        node.destroy_node()
