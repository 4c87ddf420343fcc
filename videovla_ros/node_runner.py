"""Starting and spinning nodes until shutdown, the same way in every console script (portable Humble .. Kilted).

rclpy's own signal handlers shut ROS down the moment Ctrl-C arrives, before any node can publish again. Our
processes install none of them: Ctrl-C and SIGTERM (what `ros2 launch` sends) raise KeyboardInterrupt in the
spinning thread instead, every node's `before_shutdown()` runs while ROS is still up (the arm bridge stops the
arm with it), and only then are the nodes destroyed and ROS shut down.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol, runtime_checkable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# The executor wakes at least this often, so a signal is noticed even when no callback is due [s].
SIGNAL_POLL_PERIOD = 0.1


@runtime_checkable
class StopsBeforeShutdown(Protocol):
    """A node with something to send before ROS goes down (e.g. the arm bridge's stop command)."""

    def before_shutdown(self) -> None: ...


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def init_ros(args: Sequence[str] | None) -> None:
    """rclpy.init without rclpy's signal handlers; SIGTERM interrupts like Ctrl-C (see the module docstring)."""
    rclpy.init(args=None if args is None else list(args), signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def spin_until_shutdown(executor: MultiThreadedExecutor, nodes: Sequence[Node]) -> None:
    """Spins `executor` until Ctrl-C / SIGTERM / context shutdown; then stops the callbacks, runs each node's
    `before_shutdown()` while ROS is up, destroys `nodes` and shuts rclpy down."""
    try:
        while rclpy.ok(context=executor.context):
            executor.spin_once(timeout_sec=SIGNAL_POLL_PERIOD)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for node in nodes:
            if isinstance(node, StopsBeforeShutdown) and rclpy.ok(context=node.context):
                node.before_shutdown()
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None, num_threads: int | None = None) -> None:
    """The whole `main()` of a one-node console script.

    A node that cannot start (a bad parameter, a back-end package this machine lacks) exits with its message
    instead of a traceback.
    """
    init_ros(args)
    try:
        node = make_node()
    except (ValueError, ImportError) as error:
        rclpy.try_shutdown()
        raise SystemExit(f"{name}: {error}") from error
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    spin_until_shutdown(executor, [node])
