"""One row of a bench, in a child process: ``python -m edgekit.isolation.worker JOB.json``.

It opens one artifact on its runtime (or the original torch model), runs the run's validation inputs and the
explanation inputs through it, times it, and writes ``outputs.npz`` and ``result.json`` into the job's folder.
A failure it can catch becomes ``{"stage": ..., "reason": ...}``; a native crash or a hang kills only this
process, and the parent turns that into a CRASH or TIMEOUT row. Opening an artifact imports numpy and the one
runtime, and torch only where that runtime requires it (a backend's ``runtime_requires``; the torch row imports
torch, of course)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.bench.timing import peak_rss_mb
from edgekit.results import Stage

RESULT_FILE = "result.json"
OUTPUTS_FILE = "outputs.npz"
TENSORS_FILE = "tensors.json"  # an "intermediates" job: the name and torch module path of each "tensor:I"


@dataclass(frozen=True)
class Job:
    kind: str  # "artifact", "torch", or "intermediates" (an artifact's per-layer tensors, for the ledger)
    run_dir: str
    target: str  # the target's folder name, or "torch"
    out: str  # the folder this worker writes into
    min_runs: int = 200
    min_seconds: float = 1.0
    throughput_seconds: float = 1.0
    allow_pickle: bool = False
    explain: str = ""  # an .npz of extra inputs to run (the occlusion batch), or ""
    measure: bool = True  # False: outputs only (validation), no timing
    inputs: str = ""  # "intermediates": the .npz of inputs (in the artifact's layout) to run
    memory_mb: int = 0  # [limits] memory_mb: address space the worker may add once started (0: no limit)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


class StageFailure(Exception):
    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


def _prefixed(z, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}


def _arrays(path: Path, prefix: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return _prefixed(z, prefix)


def _stage(stage: Stage, call):
    from edgekit.errors import one_line

    try:
        return call()
    except Exception as exc:  # a Python-level failure of the runtime: the row says which stage and why
        raise StageFailure(stage, one_line(exc)) from None


def read_artifact(folder: Path):
    """(manifest, backend) of the artifact in ``folder``, its files checked against their hashes: what a worker
    opens with ``backend.open`` (the backend's session module, the file a bundle carries) and runs through
    edgekit.backends.execute, the one artifact runner."""
    from edgekit.artifact import read_manifest, verify_files
    from edgekit.backends import get_backend
    from edgekit.backends.base import load_plugins

    load_plugins()
    manifest = read_manifest(folder / "manifest.json")
    verify_files(folder, manifest)
    return manifest, get_backend(manifest.backend)


def _backend(job: Job):
    """(folder, manifest, backend) of the job's artifact, its files checked against their hashes."""
    folder = Path(job.run_dir) / job.target
    return (folder, *_stage(Stage.LOAD, lambda: read_artifact(folder)))


def _artifact(job: Job):
    """(open(threads) -> Session, manifest, throughput(one, seconds) or None, artifact bytes, profile_ops(one,
    threads, runs) or None). ``threads`` None opens with the thread count the manifest records (the profile's)."""
    folder, manifest, backend = _backend(job)
    native = getattr(backend, "throughput", None)
    throughput = (lambda one, seconds: native(folder, manifest, one, seconds)) if native else None
    profiler = getattr(backend, "profile_ops", None)
    profile_ops = (lambda one, threads, runs: profiler(folder, manifest, one, threads, runs)) if profiler else None
    return (lambda threads=None: backend.open(folder, manifest, threads)), manifest, throughput, \
        sum(f.bytes for f in manifest.files), profile_ops


def _torch(job: Job, inputs: dict[str, np.ndarray]):
    from edgekit.bench.torch_session import torch_row
    from edgekit.runfolder import RunFolder

    record = RunFolder(job.run_dir).record()  # the model is rebuilt from the run's record, as the ledger does
    return (*torch_row(record, job.allow_pickle, inputs), None)  # no per-op profile of the torch row


def _latency(session, one: dict[str, np.ndarray], job: Job):
    from edgekit.bench.timing import measure

    return _stage(Stage.RUN, lambda: measure(lambda: session.run(one), min_runs=job.min_runs,
                                         min_seconds=job.min_seconds))


PROFILE_THREADS = 1  # the per-op profile is of the one-thread latency session, the one int8 and fp32 compare on
PROFILE_MAX_RUNS = 100
NO_PROFILER = "not available for this runtime (its backend has no per-op profiler)"


def _profile(profile_ops, one: dict[str, np.ndarray], job: Job) -> dict:
    """The runtime's own per-op profile (a backend's ``profile_ops``), as an OpProfile's fields; a failure of
    the profiler is the profile's one-line error, not the row's: the row has been measured already."""
    from edgekit.errors import one_line

    runs = max(1, min(job.min_runs, PROFILE_MAX_RUNS))
    profile = {"ops": [], "runs": runs, "threads": PROFILE_THREADS, "error": ""}
    if profile_ops is None:
        return {**profile, "runs": 0, "error": NO_PROFILER}
    try:
        ops = profile_ops(one, PROFILE_THREADS, runs)
    except Exception as exc:
        return {**profile, "error": f"the profiler failed: {one_line(exc)}"}
    profile["ops"] = [{"name": name, "op_type": op_type, "module": module, "ms": float(ms)}
                      for name, op_type, module, ms in ops]
    if not profile["ops"]:
        profile["error"] = "the profiler reported no ops"
    return profile


def run(job: Job) -> dict | None:
    from edgekit.backends.execute import run_batched, to_artifact_layout
    from edgekit.bench.throughput import parallel_sessions
    from edgekit.cpu import resolve_threads
    from edgekit.lengths import AT, arrays_at_lengths

    with np.load(Path(job.run_dir) / "reference.npz", allow_pickle=False) as z:
        inputs = _prefixed(z, "input:")
        at_lengths = arrays_at_lengths(z, "input")  # a model with dynamic axes: its inputs at the other lengths
    explain = _arrays(Path(job.explain), "") if job.explain else {}
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    open_with, manifest, throughput, size, profile_ops = _torch(job, inputs) if job.kind == "torch" \
        else _artifact(job)
    session = _stage(Stage.LOAD, lambda: open_with())
    # what the runtime says it runs with, for the report (a plugin's session may not say)
    applied = _stage(Stage.LOAD, getattr(session, "effective", lambda: {"precision": "not reported",
                                                                    "threads": "not reported"}))
    load_ms = (time.perf_counter() - t0) * 1000
    arrays = {f"val:{k}": v for k, v in _stage(Stage.RUN, lambda: run_batched(session, manifest, inputs)).items()}
    for length, cut in at_lengths.items():
        arrays.update({f"val:{k}{AT}{length}": v for k, v in
                       _stage(Stage.RUN, lambda cut=cut: run_batched(session, manifest, cut)).items()})
    if explain:
        arrays.update({f"explain:{k}": v for k, v in
                       _stage(Stage.RUN, lambda: run_batched(session, manifest, explain)).items()})
    np.savez(Path(job.out) / OUTPUTS_FILE, **arrays)
    if not job.measure:
        return None
    one = to_artifact_layout({k: v[:1] for k, v in inputs.items()}, manifest)
    latency_all = _latency(session, one, job)
    session = None  # released before the one-thread session is opened
    session = _stage(Stage.LOAD, lambda: open_with(1))
    latency_1t = _latency(session, one, job)
    session = None
    threads_all = applied["threads"] if isinstance(applied["threads"], int) else resolve_threads(None)
    if throughput is None:
        def throughput(one, seconds):
            return parallel_sessions(lambda: open_with(1), one, threads_all, seconds)
    rate = _stage(Stage.RUN, lambda: throughput(one, job.throughput_seconds))
    measured = {"load_ms": load_ms, "latency_1t": asdict(latency_1t), "latency_all": asdict(latency_all),
                "threads_all": threads_all, "applied": applied, "throughput": asdict(rate),
                "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline, "artifact_bytes": size}
    # last, so its session is not in the peak memory and cannot disturb the timings above
    if job.kind == "artifact":
        measured["profile"] = _profile(profile_ops, one, job)
    return measured


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies, kill -9 of the parent included: a worker
    never outlives the edgekit that started it (its scratch folder is gone by then). Linux only; elsewhere the
    parent's process-group kill on exit still applies."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def cap_memory(megabytes: int) -> None:
    """Let this process's address space grow by at most ``megabytes`` from what it holds now (RLIMIT_AS): an
    allocation past it fails here, as a MEMORY row, before the machine's OOM killer picks a process."""
    if not megabytes:
        return
    import resource

    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + megabytes * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


_MEMORY_SIGNS = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory",
                 "Unable to allocate", "MemoryError")


def memory_failure(stage: str, reason: str, memory_mb: int) -> tuple[str, str]:
    """(stage, reason) of a failure, the stage MEMORY when a memory limit was set and the reason is an allocation
    that failed (numpy's, torch's, C++'s words for it)."""
    if memory_mb and any(sign in reason for sign in _MEMORY_SIGNS):
        return Stage.MEMORY.value, f"{stage} went over [limits] memory_mb = {memory_mb}: {reason}"
    return stage, reason


def intermediates(job: Job) -> None:
    """The artifact's intermediate tensors on ``job.inputs`` (the backend's ``intermediates``): the arrays go to
    outputs.npz as "tensor:I", their names and torch module paths to tensors.json."""
    folder, manifest, backend = _backend(job)
    tensors = _stage(Stage.RUN, lambda: backend.intermediates(folder, manifest, _arrays(Path(job.inputs), "")))
    np.savez(Path(job.out) / OUTPUTS_FILE, **{f"tensor:{i}": v for i, (_, v) in enumerate(tensors.values())})
    (Path(job.out) / TENSORS_FILE).write_text(json.dumps([[n, p] for n, (p, _) in tensors.items()]),
                                              encoding="utf-8")


def main(argv: list[str]) -> int:
    die_with_parent()
    job = Job(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    cap_memory(job.memory_mb)
    try:
        result = {"stage": None, "measurement": intermediates(job) if job.kind == "intermediates" else run(job)}
    except StageFailure as exc:
        stage, reason = memory_failure(exc.stage.value, str(exc), job.memory_mb)
        result = {"stage": stage, "reason": reason}
    path = Path(job.out) / RESULT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
