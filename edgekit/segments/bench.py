"""The pipeline bench of a segmented run: its segments as a pipeline against the unsplit model, measured in a
worker process (edgekit.segments.worker), typed here and written into segments.json."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.config import Limits
from edgekit.errors import EdgekitError
from edgekit.isolation.process import run_worker
from edgekit.results import Stage, Timing
from edgekit.segments.record import read_segments
from edgekit.segments.worker import PIPELINE_FILE, ChainJob

WORKER = "edgekit.segments.worker"
REPEATS = 3  # whole timed streams; the throughput quoted is their median


@dataclass(frozen=True)
class Speed:
    """A batch-1 stream: samples per second, and each sample's latency where it was timed one by one."""

    per_second: float
    latency_median_ms: float | None = None
    latency_p90_ms: float | None = None


@dataclass(frozen=True)
class UnsplitSpeed:
    """The unsplit model on one segment's runtime, the baseline the pipeline is measured against."""

    target: str
    profile_threads: Speed  # a plain loop with the profile's thread count (all cores for threads = 0)
    stage_threads: Speed  # a plain loop with as many threads as one stage of the pipeline has
    parallel: Speed  # one session per stage, each with a stage's threads, whole samples each: data parallelism


@dataclass(frozen=True)
class PipelineBench:
    stage: Stage | None = None  # None when measured; else where it failed (LOAD / RUN / CRASH / TIMEOUT)
    reason: str = ""
    cores: int = 0
    stage_threads: int = 0  # threads of each stage's session
    queue_size: int = 0
    pipeline: Speed | None = None  # one thread per stage, bounded queues
    sequential: Speed | None = None  # the same segments called one after another in one thread
    stage_ms: tuple[float, ...] = ()  # median per stage while streaming (the stages share the cores)
    stage_alone_ms: tuple[float, ...] = ()  # median per stage run on its own
    balance: float = 0.0  # slowest stage / mean stage, run alone: 1.0 is a perfectly balanced cut
    unsplit: tuple[UnsplitSpeed, ...] = ()
    repeats: int = 0

    def against(self, target: str) -> dict[str, float]:
        """The pipeline's throughput as a multiple of each way of running the unsplit model on ``target``."""
        base = next(u for u in self.unsplit if u.target == target)
        rate = self.pipeline.per_second if self.pipeline else 0.0
        return {k: rate / getattr(base, k).per_second if getattr(base, k).per_second else 0.0
                for k in ("profile_threads", "stage_threads", "parallel")}


def _speed(raw: dict) -> Speed:
    return Speed(raw["per_second"], raw.get("latency_median_ms"), raw.get("latency_p90_ms"))


def pipeline_from(raw: dict) -> PipelineBench:
    """A PipelineBench from the worker's pipeline.json (or segments.json's copy of it)."""
    if raw.get("stage"):
        return PipelineBench(Stage(raw["stage"]), raw.get("reason", ""))
    p = raw["pipeline"]
    return PipelineBench(None, "", raw["cores"], raw["stage_threads"], raw["queue_size"], _speed(p),
                         _speed(raw["sequential"]), tuple(p["stage_median_ms"]), tuple(raw["stage_alone_ms"]),
                         raw["balance"],
                         tuple(UnsplitSpeed(t, _speed(r["profile_threads"]), _speed(r["stage_threads"]),
                                            _speed(r["parallel"])) for t, r in raw["unsplit"].items()),
                         p["repeats"])


def measure_pipeline(run_dir: Path, timing: Timing) -> tuple[PipelineBench, dict]:
    """Measure the run's segments as a pipeline in a worker: the typed result and the raw numbers."""
    with tempfile.TemporaryDirectory(prefix="edgekit-pipeline-") as scratch:
        job = ChainJob("bench", str(Path(run_dir).resolve()), scratch, timing.min_runs, timing.min_seconds,
                       REPEATS, throughput_seconds=timing.throughput_seconds)
        # several streams and baselines
        outcome = run_worker(job, (timing.timeout or Limits.bench) * 4, module=WORKER)
        if outcome.stage is not None:
            raw = {"stage": outcome.stage.value, "reason": outcome.reason}
        else:
            raw = json.loads((Path(scratch) / PIPELINE_FILE).read_text(encoding="utf-8"))
    return pipeline_from(raw), raw


def bench_segments(run_dir: str | Path, timing: Timing | None = None) -> PipelineBench:
    """Bench a segmented run again (``edgekit export --segments`` benches it once): the pipeline against the
    unsplit model; segments.json gets the new numbers."""
    run_dir = Path(run_dir)
    record, results = read_segments(run_dir)
    if results.get("validation", {}).get("stage") in (s.value for s in (Stage.EXPORT, Stage.QUANTIZE)):
        raise EdgekitError(f"{run_dir}: a segment has no artifact (its export failed); nothing to bench")
    bench, raw = measure_pipeline(run_dir, timing or Timing())
    record.write(run_dir, **{**results, "pipeline": raw})
    return bench
