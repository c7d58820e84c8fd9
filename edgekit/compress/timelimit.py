"""A wall-clock bound on pure-Python work in the main thread (SIGALRM)."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

from edgekit.errors import EdgekitError


@contextlib.contextmanager
def time_limit(seconds: int, message: str) -> Iterator[None]:
    """Raise EdgekitError(message) if the block runs longer. Outside the main thread there is no SIGALRM: no bound."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise EdgekitError(message)
    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    # re-fire every 0.2 s after the limit: an exception raised while the handler happens to run inside a garbage
    # collector callback (jax installs one, and a converter may import jax) is swallowed by Python
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # someone else's alarm (pytest-timeout, a caller's bound): give back what is left of it
            left = max(outer_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)
