"""Throughput mode for runtimes without an async API of their own: several sessions (one thread each) fed
from Python threads. The runtimes edgekit ships release the GIL while they compute, as torch does, so the
streams overlap."""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from edgekit.backends.base import Session
from edgekit.bench.measurement import Throughput


def parallel_sessions(open_one: Callable[[], Session], one: dict[str, np.ndarray], streams: int,
                      seconds: float) -> Throughput:
    sessions = [open_one() for _ in range(streams)]
    for session in sessions:  # warm-up outside the timed window
        for _ in range(3):
            session.run(one)
    counts = [0] * streams
    start = threading.Barrier(streams + 1)
    deadline = [0.0]

    def loop(i: int) -> None:
        start.wait()
        session = sessions[i]
        while time.perf_counter() < deadline[0]:
            session.run(one)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(streams)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    return Throughput(f"{streams} parallel sessions, 1 thread each", streams, sum(counts), elapsed)
