"""The segments of a run on their runtimes, in a worker process: ``python -m edgekit.segments.worker JOB.json``.

A ``chain`` job runs the run's reference inputs through every segment in turn (each on its own runtime, all in
this one process) and writes every value the chain made to outputs.npz as "val:NAME". A ``bench`` job measures
the chain as a pipeline (one thread per stage), as a plain sequential loop, each segment alone, and the unsplit
model's artifacts (a plain loop, and data-parallel sessions on the same threads), into pipeline.json.
A native crash or a hang kills only this process (edgekit.isolation.process turns it into CRASH / TIMEOUT).
No torch unless a runtime itself requires it."""
from __future__ import annotations

import itertools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.bench.throughput import parallel_runs
from edgekit.cpu import resolve_threads, share_cores
from edgekit.isolation.worker import (
    OUTPUTS_FILE,
    RESULT_FILE,
    StageFailure,
    die_with_parent,
    read_artifact,
)
from edgekit.results import Stage as FailedStage
from edgekit.segments.pipeline import (
    QUEUE_SIZE,
    Stage,
    run_chain,
    stream,
    summary,
)
from edgekit.segments.record import read_segments

PIPELINE_FILE = "pipeline.json"
STREAM_SAMPLES = 32  # distinct reference samples the batch-1 stream cycles through
WARMUP = 10  # samples per stream before the timed ones


@dataclass(frozen=True)
class ChainJob:
    kind: str  # "chain" (validation outputs) or "bench" (the pipeline's speed)
    run_dir: str
    out: str
    min_runs: int = 200
    min_seconds: float = 1.0
    repeats: int = 3
    throughput_seconds: float = 1.0  # of the unsplit model's data-parallel sessions
    stage_threads: int = 0  # threads of each stage's session; 0: the cores shared out among the stages

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


def _at(stage: FailedStage, what: str, call, *args):
    """``call(*args)``; a Python-level failure of a runtime becomes the row's stage and a reason naming ``what``."""
    from edgekit.errors import one_line

    try:
        return call(*args)
    except Exception as exc:
        raise StageFailure(stage, f"{what}: {one_line(exc)}") from None


def _opened(folder: Path, label: str, threads: int | None, batched: bool):
    """The artifact in ``folder`` on its runtime, as a function of its inputs: ``batched`` runs all samples in
    the chunks the artifact takes (validation), else one sample as it comes (the stream)."""
    from edgekit.backends.execute import runner

    manifest, backend = _at(FailedStage.LOAD, label, read_artifact, folder)
    return runner(_at(FailedStage.LOAD, label, backend.open, folder, manifest, threads), manifest, batched)


def _stages(run_dir: Path, threads: int | None, batched: bool, drop: bool = True) -> list[Stage]:
    """Every segment opened on its runtime (``drop`` False: every value the chain makes is kept)."""
    record, _ = read_segments(run_dir)
    return [Stage(f"{s.folder} ({s.target})", s.inputs, s.outputs,
                  _opened(run_dir / s.folder / s.target, f"{s.folder} ({s.target})", threads, batched),
                  s.drop if drop else ()) for s in record.stages]


def _reference_inputs(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "reference.npz", allow_pickle=False) as z:
        return {k[6:]: z[k] for k in z.files if k.startswith("input:")}


def chain(job: ChainJob) -> None:
    run_dir = Path(job.run_dir)
    stages = _stages(run_dir, None, batched=True, drop=False)
    values = _at(FailedStage.RUN, "the chain", run_chain, stages, _reference_inputs(run_dir))
    np.savez(Path(job.out) / OUTPUTS_FILE, **{f"val:{k}": np.asarray(v) for k, v in values.items()})


def _loop(run, samples: list[dict], job: ChainJob) -> dict:
    """A plain loop of batch-1 calls, one after another: latency percentiles and the rate they give."""
    from edgekit.bench.timing import measure

    cycle = itertools.cycle(samples)
    latency = measure(lambda: run(next(cycle)), min_runs=job.min_runs, min_seconds=job.min_seconds)
    return {"per_second": 1000.0 / latency.mean_ms if latency.mean_ms > 0 else 0.0,
            "latency_median_ms": latency.median_ms, "latency_p90_ms": latency.p90_ms, "runs": latency.runs}


def _pipelined(stages: list[Stage], samples: list[dict], job: ChainJob) -> dict:
    for sample in samples[:WARMUP]:
        run_chain(stages, sample)
    probe = stream(stages, samples, count=20, warmup=5)  # how many samples make min_seconds
    timed = max(job.min_runs, math.ceil(probe.per_second * job.min_seconds))
    return summary([stream(stages, samples, timed, WARMUP) for _ in range(job.repeats)])


def _alone(stages: list[Stage], samples: list[dict], job: ChainJob) -> list[float]:
    """Each stage's median on its own, fed the values the chain makes before it."""
    values = [run_chain([Stage(s.name, s.inputs, s.outputs, s.run) for s in stages], x) for x in samples]
    return [_at(FailedStage.RUN, s.name, _loop, s.run, [{k: v[k] for k in s.inputs} for v in values], job)
            ["latency_median_ms"] for s in stages]


def _unsplit(folder: Path, samples: list[dict], threads: int, streams: int, job: ChainJob) -> dict:
    """The unsplit model: a plain loop with its profile's threads and with one stage's, and ``streams``
    data-parallel sessions of one stage's threads each."""
    label = folder.name
    rows = {"profile_threads": _at(FailedStage.RUN, label, _loop, _opened(folder, label, None, False), samples, job),
            "stage_threads": _at(FailedStage.RUN, label, _loop, _opened(folder, label, threads, False), samples, job)}
    runs = [_opened(folder, label, threads, False) for _ in range(streams)]
    rows["parallel"] = _at(FailedStage.RUN, label, parallel_runs, runs, samples, job.throughput_seconds)
    return rows


def bench(job: ChainJob) -> dict:
    run_dir = Path(job.run_dir)
    record, _ = read_segments(run_dir)
    inputs = _reference_inputs(run_dir)
    count = len(next(iter(inputs.values())))
    samples = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(min(STREAM_SAMPLES, count))]
    cores = resolve_threads(None)
    threads = job.stage_threads or share_cores(len(record.stages))
    stages = _stages(run_dir, threads, batched=False)
    result: dict = {"cores": cores, "stage_threads": threads, "queue_size": QUEUE_SIZE, "stream_samples": len(samples)}
    result["pipeline"] = _at(FailedStage.RUN, "the pipeline", _pipelined, stages, samples, job)
    result["sequential"] = _at(FailedStage.RUN, "the chain", _loop, lambda x: run_chain(stages, x), samples, job)
    alone = _alone(stages, samples, job)
    result["stage_alone_ms"] = alone
    result["balance"] = max(alone) / float(np.mean(alone)) if np.mean(alone) > 0 else 1.0
    stages = None  # the stage sessions are released before the unsplit model's are opened
    result["unsplit"] = {t: _unsplit(run_dir / t, samples, threads, len(record.stages), job) for t in record.unsplit}
    return result


def main(argv: list[str]) -> int:
    die_with_parent()
    job = ChainJob(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    out = Path(job.out)
    try:
        if job.kind == "chain":
            chain(job)
        else:
            (out / PIPELINE_FILE).write_text(json.dumps(bench(job)), encoding="utf-8")
            np.savez(out / OUTPUTS_FILE)
        result = {"stage": None, "measurement": None}
    except StageFailure as exc:
        result = {"stage": exc.stage.value, "reason": str(exc)}
    except Exception as exc:  # a record or artifact that cannot be read: the row says so, the parent goes on
        from edgekit.errors import one_line

        result = {"stage": FailedStage.LOAD.value, "reason": one_line(exc)}
    tmp = (out / RESULT_FILE).with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, out / RESULT_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
