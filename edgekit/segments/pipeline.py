"""Run segments as a chain and as a pipeline: one thread per stage, bounded queues between them, a stream of
batch-1 samples.

Threads, not processes: the runtimes release the GIL while they compute (edgekit's parallel-session throughput
relies on the same), so the stages overlap as processes would, without copying every cut tensor through a pipe;
what the Python side does per sample (a dict, a layout cast) holds the GIL and is part of what is measured.

Numpy and the standard library only, no edgekit imports: a segmented bundle carries this file as
``edgekit_pipeline.py`` and runs its segments exactly as edgekit measured them."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]
QUEUE_SIZE = 2  # samples a queue between two stages holds: enough to hide jitter, too few to hide a slow stage


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]  # what the stage reads of the values in flight
    outputs: tuple[str, ...]
    run: Callable[[Arrays], Arrays]  # the segment's inputs -> its outputs (layout and dtypes handled inside)
    drop: tuple[str, ...] = ()  # values no later stage reads and the model does not return: freed after it


@dataclass(frozen=True)
class Stream:
    """One measured stream through the pipeline."""

    samples: int  # timed samples (after the warm-up ones)
    seconds: float  # from the last warm-up sample's completion to the last timed one's
    latencies_ms: list[float] = field(default_factory=list)  # per timed sample: stage 0 takes it -> the last is done
    stage_ms: list[list[float]] = field(default_factory=list)  # per stage, per timed sample

    @property
    def per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def run_chain(stages: list[Stage], inputs: Arrays) -> Arrays:
    """Every stage in turn on ``inputs``: what they all made and what was not dropped (the model's outputs)."""
    values = dict(inputs)
    for stage in stages:
        values.update(stage.run({k: values[k] for k in stage.inputs}))
        for name in stage.drop:
            values.pop(name, None)
    return values


_DONE = object()


def stream(stages: list[Stage], samples: list[Arrays], count: int, warmup: int,
           queue_size: int = QUEUE_SIZE) -> Stream:
    """Feed ``warmup + count`` batch-1 samples (cycling through ``samples``) through one thread per stage; the
    first ``warmup`` are not timed. Queues hold at most ``queue_size`` samples, so a slow stage holds the ones
    before it back instead of letting work pile up. A stage that raises stops the stream and re-raises here."""
    total = warmup + count
    queues: list[queue.Queue] = [queue.Queue(maxsize=queue_size) for _ in stages] + [queue.Queue()]
    stage_ms: list[list[float]] = [[] for _ in stages]
    failure: list[BaseException] = []

    def work(i: int) -> None:
        stage, inbox, outbox = stages[i], queues[i], queues[i + 1]
        while True:
            item = inbox.get()
            if item is _DONE:
                outbox.put(_DONE)
                return
            index, entered, values = item
            t0 = time.perf_counter()
            if i == 0:
                entered = t0
            try:
                values = {**values, **stage.run({k: values[k] for k in stage.inputs})}
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
                failure.append(exc)
                outbox.put(_DONE)
                _drain(inbox)
                return
            for name in stage.drop:
                values.pop(name, None)
            stage_ms[i].append((time.perf_counter() - t0) * 1000)
            outbox.put((index, entered, values))

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(stages))]
    for t in threads:
        t.start()
    done_at: list[float] = []
    latencies: list[float] = []

    def collect() -> None:
        while (item := queues[-1].get()) is not _DONE:
            now = time.perf_counter()
            done_at.append(now)
            latencies.append((now - item[1]) * 1000)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    for n in range(total):
        if failure:
            break
        queues[0].put((n, 0.0, samples[n % len(samples)]))
    queues[0].put(_DONE)
    for t in threads:
        t.join()
    collector.join()
    if failure:
        raise failure[0]
    start = done_at[warmup - 1] if warmup else done_at[0]
    timed = count if warmup else count - 1
    return Stream(timed, done_at[-1] - start, latencies[warmup:], [ms[warmup:] for ms in stage_ms])


def _drain(inbox: queue.Queue) -> None:
    """Empty a failed stage's queue so the producer never blocks on it."""
    while inbox.get() is not _DONE:
        pass


def summary(streams: list[Stream]) -> dict:
    """Median throughput over the repeats; latency and per-stage time over every timed sample of all of them."""
    latencies = np.array([ms for s in streams for ms in s.latencies_ms])
    stage_ms = [np.array([ms for s in streams for ms in s.stage_ms[i]]) for i in range(len(streams[0].stage_ms))]
    medians = [float(np.median(ms)) for ms in stage_ms]
    return {"per_second": float(np.median([s.per_second for s in streams])),
            "per_second_repeats": [s.per_second for s in streams], "repeats": len(streams),
            "samples": sum(s.samples for s in streams),
            "latency_median_ms": float(np.median(latencies)), "latency_p90_ms": float(np.percentile(latencies, 90)),
            "stage_median_ms": medians, "stage_p90_ms": [float(np.percentile(ms, 90)) for ms in stage_ms],
            "balance": max(medians) / float(np.mean(medians)) if medians and np.mean(medians) > 0 else 1.0}
