"""Starting and spinning nodes until shutdown, the same way in every console script (portable Humble .. Kilted).

rclpy's own signal handlers shut ROS down the moment Ctrl-C arrives, before any node can publish again. Our
processes install none of them: Ctrl-C and SIGTERM (what `ros2 launch` sends) only ask for a shutdown, the
spinning thread notices within SIGNAL_POLL_PERIOD and stops the executor, every node's `before_shutdown()` runs
while ROS is still up (the arm bridge stops the arm with it), and only then are the nodes destroyed and ROS shut
down. The handlers raise nothing on purpose: an exception raised by a signal handler can land between a lock's
acquisition and the `with` block that would release it (CPython issue 29988), and a lock of the executor left
held that way hangs the shutdown for good.

A second Ctrl-C / SIGTERM ends the process at once (the default action), for a shutdown that is stuck. A
shutdown that has not finished after SHUTDOWN_TIMEOUT writes every thread's stack to stderr and exits with
status 1, so that what it was stuck on can be read.
"""

from __future__ import annotations

import faulthandler
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol, runtime_checkable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# The executor wakes at least this often, so a signal is noticed even when no callback is due [s].
SIGNAL_POLL_PERIOD = 0.1
# The most a clean shutdown (callbacks finishing, before_shutdown, destroying the nodes) may take [s].
SHUTDOWN_TIMEOUT = 15.0

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_shutdown_requested = threading.Event()


@runtime_checkable
class StopsBeforeShutdown(Protocol):
    """A node with something to send before ROS goes down (e.g. the arm bridge's stop command)."""

    def before_shutdown(self) -> None: ...


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    del signum, frame  # both signals mean the same, wherever the main thread was
    _shutdown_requested.set()
    for handled in SHUTDOWN_SIGNALS:
        signal.signal(handled, signal.SIG_DFL)


def init_ros(args: Sequence[str] | None) -> None:
    """rclpy.init without rclpy's signal handlers; Ctrl-C and SIGTERM ask for a clean shutdown (see the module
    docstring)."""
    rclpy.init(args=None if args is None else list(args), signal_handler_options=SignalHandlerOptions.NO)
    _shutdown_requested.clear()
    for handled in SHUTDOWN_SIGNALS:
        signal.signal(handled, _request_shutdown)


def spin_until_shutdown(executor: MultiThreadedExecutor, nodes: Sequence[Node]) -> None:
    """Spins `executor` until Ctrl-C / SIGTERM / context shutdown; then stops the callbacks, runs each node's
    `before_shutdown()` while ROS is up, destroys `nodes` and shuts rclpy down."""
    try:
        while rclpy.ok(context=executor.context) and not _shutdown_requested.is_set():
            executor.spin_once(timeout_sec=SIGNAL_POLL_PERIOD)
    except ExternalShutdownException:
        pass
    finally:
        faulthandler.dump_traceback_later(SHUTDOWN_TIMEOUT, exit=True)
        executor.shutdown()
        for node in nodes:
            if isinstance(node, StopsBeforeShutdown) and rclpy.ok(context=node.context):
                node.before_shutdown()
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()


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
