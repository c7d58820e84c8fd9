"""One cell of a sweep, in a process of its own: ``python -m edgekit.sweep.cell JOB.json``.

It pins itself to the cores the job names, exports the source under the recipe to the one target (validated
against torch on the source's data, as ``edgekit export`` does), benches the artifact, and moves
``CELLS/KEY/`` into place with its ``cell.json`` and the run folder. Killed midway (kill -9 of the sweep, a native
crash), it leaves only a stale staging folder, which the next sweep removes: a cell is either finished or not
there."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CELL_FILE = "cell.json"
RUN_DIR = "run"


@dataclass(frozen=True)
class CellJob:
    """What a cell process needs; JSON on disk for a local process, a Ray task's argument on a cluster."""

    key: str
    label: str
    source: dict[str, Any]  # plan.SourceEntry as a dict
    recipe: dict[str, Any]  # plan.Recipe as a dict
    family: str
    profile_text: str
    profile_path: str
    out: str  # the cell's final folder, CELLS/KEY
    timing: str = "quick"
    cores: tuple[int, ...] = ()  # empty: do not pin
    threads: int = 1
    node: dict[str, str] = field(default_factory=dict)  # who ran it (a Ray node id), for the report

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


def _pin(cores: tuple[int, ...], threads: int) -> None:
    """Timings are honest only if cells do not share cores: the affinity holds for the bench workers too."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, set(cores))
        except OSError:
            pass


def _measured(row) -> dict[str, Any]:
    m = row.measurement
    if m is None:
        return {}
    return {"latency_ms": m.latency_1t.median_ms, "latency_p90_ms": m.latency_1t.p90_ms,
            "latency_all_ms": m.latency_all.median_ms, "threads_all": m.threads_all,
            "throughput_per_s": m.throughput.per_second if m.throughput else None,
            "size_bytes": m.artifact_bytes, "peak_rss_mb": m.peak_rss_mb}


def _validation(v) -> dict[str, Any]:
    first = v.outputs[0] if v.outputs else None
    return {"status": v.status.value, "stage": v.stage.value if v.stage else None, "reason": v.reason,
            "accuracy": v.accuracy, "torch_accuracy": v.torch_accuracy, "samples": v.samples,
            "output": first.name if first else None, "cosine": first.cosine if first else None,
            "max_abs_error": first.max_abs_error if first else None,
            "top1_agreement": first.top1_agreement if first else None,
            "precision": None if v.precision is None else {"declared": v.precision.declared,
                                                             "compute": v.precision.compute,
                                                             "weights": v.precision.weights},
            "failed_checks": [f"{c.subject}.{c.metric}" for c in v.failed_checks]}


def _compression(report) -> dict[str, Any] | None:
    if report is None:
        return None
    return {"params_before": report.params_before, "params_after": report.params_after,
            "flops_before": report.flops_before, "flops_after": report.flops_after,
            "accuracy_before": report.accuracy_before, "accuracy_recovered": report.accuracy_recovered}


def run_cell(job: CellJob) -> dict[str, Any]:
    """Export, validate and bench the cell into its final folder; returns what cell.json holds."""
    from edgekit.api import export
    from edgekit.bench.run import Timing, bench
    from edgekit.config import parse_profile
    from edgekit.errors import EdgekitError, one_line
    from edgekit.fsutil import staged_folder, write_json
    from edgekit.sweep.plan import Recipe, runtime_versions

    _pin(job.cores, job.threads)
    import torch

    torch.set_num_threads(job.threads)
    start = time.perf_counter()
    profile = parse_profile(job.profile_text, job.profile_path)
    recipe = Recipe(**job.recipe)
    src = job.source
    record: dict[str, Any] = {
        "key": job.key, "label": job.label, "source": src["name"], "model": src["source"], "recipe": recipe.name,
        "family": job.family, "target": profile.name, "backend": profile.backend,
        "node": {"host": socket.gethostname(), **job.node}, "cores": list(job.cores), "threads": job.threads,
        "versions": runtime_versions(profile.backend), "timing": job.timing,
    }
    with staged_folder(Path(job.out), marker=CELL_FILE) as stage:
        try:
            result = export(src["source"], [profile], stage / RUN_DIR, calib=src.get("calib"), data=src.get("data"),
                            dynamic=src.get("dynamic"), compression=recipe.compression())
            row = result.rows[0]
            record.update(_validation(row), compression=_compression(result.compression))
            if row.stage is None:
                timing = Timing.quick() if job.timing == "quick" else Timing()
                benched = bench(stage / RUN_DIR, timing=timing, explain=False, torch_row=False).rows[0]
                record.update(_measured(benched))
                if benched.validation.stage is not None:  # the bench worker crashed or hung where validation had not
                    record.update(_validation(benched.validation))
        except EdgekitError as exc:  # this cell's input is bad (its data, its source): a row, the others go on
            record.update(status="FAIL", stage="EXPORT", reason=one_line(exc))
        record["seconds"] = round(time.perf_counter() - start, 2)
        write_json(stage / CELL_FILE, record)
    return record


def main(argv: list[str]) -> int:
    from edgekit.isolation.worker import die_with_parent

    die_with_parent()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    job = CellJob(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    job = CellJob(**{**asdict(job), "cores": tuple(job.cores)})
    run_cell(job)  # what converters print goes to the cell's log: the sweep opened stdout and stderr on it
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
