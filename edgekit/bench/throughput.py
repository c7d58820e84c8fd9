"""Throughput mode for runtimes without an async API of their own: several sessions (one thread each) fed
from Python threads. The runtimes edgekit ships release the GIL while they compute, as torch does, so the
streams overlap."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edgekit.backends.base import Session
from edgekit.bench.measurement import Throughput


def parallel_runs(runs: list[Callable[[dict[str, np.ndarray]], object]], samples: list[dict[str, np.ndarray]],
                  seconds: float) -> dict:
    """``runs`` (one per thread) called back to back for ``seconds`` after a warm-up on the first three samples,
    each cycling through ``samples``: {per_second, streams, samples, seconds}."""
    for run in runs:  # warm-up outside the timed window
        for sample in samples[:3]:
            run(sample)
    counts = [0] * len(runs)
    start = threading.Barrier(len(runs) + 1)
    deadline = [0.0]

    def loop(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            runs[i](samples[counts[i] % len(samples)])
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(runs))]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    return {"per_second": sum(counts) / elapsed if elapsed > 0 else 0.0, "streams": len(runs),
            "samples": sum(counts), "seconds": elapsed}


def parallel_sessions(open_one: Callable[[], Session], one: dict[str, np.ndarray], streams: int,
                      seconds: float) -> Throughput:
    sessions = [open_one() for _ in range(streams)]
    rate = parallel_runs([s.run for s in sessions], [one] * 3, seconds)
    return Throughput(f"{streams} parallel sessions, 1 thread each", streams, rate["samples"], rate["seconds"])
