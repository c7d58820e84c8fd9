"""Latency as the native tools measure it: warm-up until timings settle, then many timed runs, percentiles."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    runs: int
    warmup: int
    first_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float


def measure(call: Callable[[], object], min_runs: int = 200, min_seconds: float = 1.0, max_warmup: int = 200,
            settle: float = 0.05) -> Latency:
    """Time ``call``: the first run alone, then warm up until the median of the last 10 runs moves less than
    ``settle`` (relative), then at least ``min_runs`` runs and ``min_seconds`` of timed calls."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    window: list[float] = []
    previous = None
    warmup = 0
    while warmup < max_warmup:
        t0 = time.perf_counter()
        call()
        window.append(time.perf_counter() - t0)
        warmup += 1
        if len(window) == 10:
            median = float(np.median(window))
            if previous is not None and abs(median - previous) <= settle * previous:
                break
            previous, window = median, []
    samples = []
    deadline = time.perf_counter() + min_seconds
    while len(samples) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    ms = np.array(samples) * 1000
    return Latency(len(samples), warmup, first * 1000, float(np.median(ms)), float(np.percentile(ms, 90)),
                   float(np.percentile(ms, 99)), float(ms.mean()), float(ms.std()))


def peak_rss_mb() -> float:
    """This process's peak resident set. ru_maxrss would carry the parent's peak across fork + exec (Linux keeps
    the larger of the two), so read the high-water mark of our own address space where /proc has it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # POSIX only; the bundle's runner carries this module to the device

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
