"""Cells on this machine: a pool of slots, one per ``threads`` cores, each cell a process pinned to its slot's
cores. A cell that crashes natively or hangs is a CRASH / TIMEOUT row; the others go on."""
from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekit.cpu import usable_cores
from edgekit.isolation.process import last_line, run_child, signal_name
from edgekit.sweep.cell import CELL_FILE, CellJob

Done = Callable[[CellJob, dict[str, Any]], None]


def core_slots(threads: int, jobs: int | None = None) -> list[tuple[int, ...]]:
    """Disjoint core sets of ``threads`` cores each (at least one slot, sharing cores when there are too few)."""
    cores = usable_cores()
    count = max(1, len(cores) // threads)
    if jobs is not None:
        count = max(1, min(count, jobs))
    if len(cores) < threads:
        return [tuple(cores)]
    return [tuple(cores[i * threads:(i + 1) * threads]) for i in range(count)]


def failed_record(job: CellJob, stage: str, reason: str, seconds: float) -> dict[str, Any]:
    """The row of a cell that left no result: not cached, so a rerun tries it again."""
    return {"key": job.key, "label": job.label, "source": job.source["name"], "model": job.source["source"],
            "recipe": job.recipe["name"], "family": job.family, "target": Path(job.profile_path).stem,
            "status": "FAIL", "stage": stage, "reason": reason, "seconds": round(seconds, 2), "node": job.node,
            "cores": list(job.cores)}


def read_cell(folder: Path) -> dict[str, Any] | None:
    """A finished cell's record, or None (not there, or unreadable: it runs again)."""
    try:
        record = json.loads((folder / CELL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == folder.name else None


def run_cell_process(job: CellJob, scratch: Path, log: Path, timeout: float) -> dict[str, Any]:
    """Run one cell in its own process (and process group), turn what happened into its record."""
    scratch.mkdir(parents=True, exist_ok=True)
    job_file = scratch / f"{job.key}.json"
    job.write(job_file)
    code, seconds = run_child("edgekit.sweep.cell", job_file, log, timeout, with_stdout=True)
    if code is None:
        return failed_record(job, "TIMEOUT", f"no result within {timeout:g} s; the cell was killed", seconds)
    record = read_cell(Path(job.out))
    if record is not None:
        return record
    tail = last_line(log)
    how = f"died of {signal_name(-code)}" if code < 0 else f"exited with code {code}"
    return failed_record(job, "CRASH", f"the cell {how} and left no result" + (f": {tail}" if tail else ""),
                         seconds)


def run_local(jobs: list[CellJob], scratch: Path, logs: Path, timeout: float, threads: int, parallel: int | None,
              done: Done) -> list[tuple[int, ...]]:
    """Every job on a slot of its own cores; ``done`` is called (from a slot's thread) as each finishes. Returns
    the pool's slots."""
    pending: queue.Queue[CellJob] = queue.Queue()
    for job in jobs:
        pending.put(job)
    errors: list[BaseException] = []

    def slot(cores: tuple[int, ...]) -> None:
        while not errors:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            job = replace(job, cores=cores, threads=threads)
            try:
                done(job, run_cell_process(job, scratch, logs / f"{job.key}.log", timeout))
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
                errors.append(exc)
                return

    slots = core_slots(threads, parallel)
    workers = [threading.Thread(target=slot, args=(cores,), daemon=True) for cores in slots[:max(1, len(jobs))]]
    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():
            w.join(0.5)  # a short join keeps Ctrl-C deliverable to this thread
    if errors:
        raise errors[0]
    return slots
