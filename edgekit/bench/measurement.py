"""What a bench worker measures, as frozen dataclasses (the parent reads them back from the worker's JSON)."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.bench.timing import Latency


@dataclass(frozen=True)
class Throughput:
    """Inferences per second with several requests in flight (batch 1 each)."""

    how: str  # e.g. "4 parallel sessions, 1 thread each" or "OpenVINO async queue, 4 requests, THROUGHPUT hint"
    streams: int
    inferences: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.inferences / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class OpTime:
    """One node of the graph the runtime ran (after its own fusions), as its profiler names it."""

    name: str
    op_type: str
    module: str | None  # the torch module path it came from ("" the root module), None when it cannot be told
    ms: float  # mean milliseconds per inference


@dataclass(frozen=True)
class OpProfile:
    """Per-node time from the runtime's own profiler, one-sample inputs, ``threads`` threads, the mean of ``runs``
    profiled inferences after warm-up. ``error`` says why there are no ops (no profiler for this runtime, or
    the profiler failed): the row is benched all the same."""

    ops: tuple[OpTime, ...] = ()
    runs: int = 0
    threads: int = 1
    error: str = ""

    @property
    def total_ms(self) -> float:
        return sum(op.ms for op in self.ops)

    def top(self, n: int = 10) -> tuple[OpTime, ...]:
        return tuple(sorted(self.ops, key=lambda op: -op.ms)[:n])


@dataclass(frozen=True)
class Measurement:
    """One row's speed and memory. Latency is batch 1, one request: with one thread and with all of the profile's."""

    load_ms: float
    latency_1t: Latency
    latency_all: Latency
    threads_all: int
    throughput: Throughput | None
    peak_rss_mb: float  # the worker's peak resident set: runtime + model + inputs
    baseline_rss_mb: float  # the worker's peak before the model was loaded (interpreter, numpy, runtime imported)
    artifact_bytes: int
    applied: dict = field(default_factory=dict)  # what the runtime reported it ran with: precision, threads
    profile: OpProfile | None = None  # per-node time; None for a row no profiler was asked about (torch)

    @property
    def model_rss_mb(self) -> float:
        return self.peak_rss_mb - self.baseline_rss_mb


def latency_from(data: dict) -> Latency:
    return Latency(**data)


def profile_from(data: dict | None) -> OpProfile | None:
    if data is None:
        return None
    return OpProfile(tuple(OpTime(**op) for op in data["ops"]), data["runs"], data["threads"], data["error"])


def measurement_from(data: dict) -> Measurement:
    throughput = data.get("throughput")
    return Measurement(data["load_ms"], latency_from(data["latency_1t"]), latency_from(data["latency_all"]),
                       data["threads_all"], Throughput(**throughput) if throughput else None, data["peak_rss_mb"],
                       data["baseline_rss_mb"], data["artifact_bytes"], data.get("applied", {}),
                       profile_from(data.get("profile")))
