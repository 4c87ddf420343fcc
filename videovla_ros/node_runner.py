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

A node process also ends (as on SIGTERM) when the process that started it dies (Linux: PR_SET_PDEATHSIG), so a
`ros2 launch` that fails or is killed leaves no orphaned nodes behind.

Executors (`make_executor`): a node whose callbacks are all short (the arm bridge) runs on one thread with
rclpy's EventsExecutor (Jazzy on; a SingleThreadedExecutor on Humble). rclpy's Python executors rebuild the wait
set of every entity in Python for each callback, which at a 100 Hz stream plus 100 Hz robot state cost an idle
bridge a quarter of a core on a MultiThreadedExecutor (`benchmarks/bridge_idle_cpu.py`). Nodes with long
callbacks (the policy's inference) use several threads.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol, runtime_checkable

import rclpy
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# The executor wakes at least this often, so a signal is noticed even when no callback is due [s].
SIGNAL_POLL_PERIOD = 0.1
# The most a clean shutdown (callbacks finishing, before_shutdown, destroying the nodes) may take [s].
SHUTDOWN_TIMEOUT = 15.0

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

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
    """rclpy.init without rclpy's signal handlers; Ctrl-C and SIGTERM ask for a clean shutdown, and so does the
    death of the parent process (see the module docstring)."""
    # Read by transformers when the policy first imports it: no weight-loading progress bars in node output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    rclpy.init(args=None if args is None else list(args), signal_handler_options=SignalHandlerOptions.NO)
    _shutdown_requested.clear()
    for handled in SHUTDOWN_SIGNALS:
        signal.signal(handled, _request_shutdown)
    end_with_parent()


def end_with_parent() -> None:
    """Asks the kernel for SIGTERM when the parent process dies (Linux only; elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not permitted here: the node still stops on Ctrl-C / SIGTERM
    if os.getppid() == 1:  # the parent died before the request was made
        _shutdown_requested.set()


class QuietShutdownExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor whose shutdown does not print 'exception was never retrieved'.

    `Executor.shutdown` destroys the executor's guard condition while handlers it already queued on the thread
    pool may still run; such a handler fails with InvalidHandle on that guard condition, and rclpy prints the
    unretrieved exception when the handler's future is collected (on every Ctrl-C). After the pool has joined,
    those expected failures are retrieved here; anything else is raised.
    """

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        finished = super().shutdown(timeout_sec)  # from Jazzy on, this joins the pool's threads
        for future in list(getattr(self, "_futures", ())):
            if future.done() and not isinstance(future.exception(), InvalidHandle | type(None)):
                raise future.exception()
        return finished


def make_executor(num_threads: int | None, context: Context | None = None) -> Executor:
    """One thread (num_threads == 1): rclpy's EventsExecutor where it exists (Jazzy on), which waits in C++,
    else a SingleThreadedExecutor; otherwise a QuietShutdownExecutor (None: as many threads as CPUs)."""
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if num_threads != 1:
        return QuietShutdownExecutor(num_threads=num_threads, context=context)
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:  # Humble
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def spin_until_shutdown(executor: Executor, nodes: Sequence[Node]) -> None:
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
    executor = make_executor(num_threads)
    executor.add_node(node)
    spin_until_shutdown(executor, [node])
