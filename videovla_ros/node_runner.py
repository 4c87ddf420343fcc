"""Spinning nodes until shutdown, the same way in every console script (portable Humble .. Kilted)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def spin_until_shutdown(executor: MultiThreadedExecutor, nodes: Sequence[Node]) -> None:
    """Spins `executor` until Ctrl-C / SIGTERM / context shutdown, then destroys `nodes` and shuts rclpy down."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A signal can shut the context down between the executor's check and its wait (an rclpy race).
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None, num_threads: int | None = None) -> None:
    """The whole `main()` of a one-node console script.

    A node that cannot start (a bad parameter, a back-end package this machine lacks) exits with its message
    instead of a traceback.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except (ValueError, ImportError) as error:
        rclpy.try_shutdown()
        raise SystemExit(f"{name}: {error}") from error
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    spin_until_shutdown(executor, [node])
