"""Wall-clock deadlines for what a sync worker waits on: a client's headers and body.

A client that stalls, or trickles its request a byte at a time, would otherwise hold a sync
worker until gunicorn kills it (a socket timeout bounds each recv, not the whole request).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def deadline(seconds: float, error: Callable[[], BaseException] | None = None
             ) -> Iterator[None]:
    """Raise `error()` (default: TimeoutError) in the block once `seconds` have passed. By
    SIGALRM, so in the main thread only, where gunicorn's sync worker serves requests;
    elsewhere the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise error() if error else TimeoutError(f"not done within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cancel_deadline() -> None:
    """End the current deadline early: the rest of its block runs unbounded."""
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
