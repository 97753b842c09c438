"""Wall-clock deadlines for what a sync worker waits on: a client's headers and body.

A client that stalls, or trickles its request a byte at a time, would otherwise hold a sync
worker until gunicorn kills it (a socket timeout bounds each recv, not the whole request).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

# The error each open deadline raises, innermost last. One SIGALRM handler, installed once
# per process, raises the innermost: a request opens two deadlines (headers, body), and
# swapping the handler each time cost ~8 us per request (signal.signal's enum conversions).
_errors: list[Callable[[], BaseException]] = []
_installed = False
_running = False  # the timer is set: leaving a block after `cancel_deadline` needs no syscall


def _expire(signum: int, frame: Any) -> None:
    if _errors:
        raise _errors[-1]()


class deadline:  # lower case: used as a context manager, as contextlib's are
    """Raise `error()` (default: TimeoutError) in the block once `seconds` have passed. By
    SIGALRM, so in the main thread only, where gunicorn's sync worker serves requests;
    elsewhere the block runs unbounded. Leaving the block stops the timer: an enclosing
    deadline's remaining time is not restored."""

    __slots__ = ("seconds", "error", "armed")

    def __init__(self, seconds: float, error: Callable[[], BaseException] | None = None
                 ) -> None:
        self.seconds = seconds
        self.error = error or (lambda: TimeoutError(f"not done within {seconds:g} s"))
        self.armed = False

    def __enter__(self) -> None:
        global _installed, _running
        if threading.current_thread() is not threading.main_thread():
            return
        if not _installed:
            signal.signal(signal.SIGALRM, _expire)
            _installed = True
        _errors.append(self.error)
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        _running = True

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            cancel_deadline()
            _errors.pop()
            self.armed = False


def cancel_deadline() -> None:
    """End the current deadline early: the rest of its block runs unbounded."""
    global _running
    if _running and threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
        _running = False
