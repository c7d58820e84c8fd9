"""``edgekit sweep SWEEP.toml --out DIR``: every cell of a sweep, finished cells reused, the others run locally
or on a Ray cluster, then one report over all of them.

DIR holds ``cells/KEY/`` (a finished cell: its cell.json and run folder), ``logs/KEY.log`` (what the cell
printed) and the reports ``sweep.json``, ``sweep.md`` and ``sweep.html``. A cell is finished when its folder is
there; a killed sweep leaves only staging folders, removed on the next run, so rerunning the same command resumes
it. CRASH and TIMEOUT rows are not cached: the next run tries those cells again."""
from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.fsutil import folder_lock, remove_stale_stages
from edgekit.sweep.cell import CellJob
from edgekit.sweep.local import read_cell, run_local
from edgekit.sweep.plan import Cell, Sweep, load_sweep

CELLS = "cells"
LOGS = "logs"
MARKER = "sweep.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepResult:
    sweep: Sweep
    folder: Path
    cells: tuple[dict[str, Any], ...]  # one record per cell, in the sweep's order, "reused" set on each
    reused: int
    ran: int
    where: str  # "this machine, 2 slot(s) of 1 core(s) each, ..." or "ray at ADDRESS: N node(s), ..."

    @property
    def failed(self) -> bool:
        return any(c.get("status") == "FAIL" for c in self.cells)


def _prepare(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CELLS).is_dir()
                                               and not (out / MARKER).is_file())):
        raise EdgekitError(f"{out} exists and is not an edgekit sweep folder; choose another --out")
    (out / CELLS).mkdir(parents=True, exist_ok=True)
    (out / LOGS).mkdir(exist_ok=True)


def _clear_stale(cells: Path) -> None:
    """Staging folders of cells a killed sweep was running (their owner is gone)."""
    for stage in cells.glob(".*.partial-*"):
        remove_stale_stages(cells / stage.name[1:].split(".partial-")[0])


def job_for(cell: Cell, sweep: Sweep, cells: Path) -> CellJob:
    return CellJob(cell.key, cell.label, asdict(cell.source), asdict(cell.recipe), cell.family, cell.profile.text,
                   cell.profile.path, str(cells / cell.key), sweep.timing, (), sweep.threads)


def sweep(path: str | Path, out: str | Path, *, ray: str | None = None, jobs: int | None = None,
          progress: Progress = lambda _: None) -> SweepResult:
    """Run a sweep file into ``out``; ``ray`` is "auto" or a cluster address (None: this machine, a process
    per cell on ``jobs`` slots at most)."""
    plan = load_sweep(path)
    out = Path(out).resolve()
    _prepare(out)
    cells_dir = out / CELLS
    with folder_lock(out, "sweep"):
        _clear_stale(cells_dir)
        records: dict[str, dict[str, Any]] = {}
        todo: list[CellJob] = []
        for cell in plan.cells:
            if cell.key in records:
                continue
            found = read_cell(cells_dir / cell.key)
            if found is not None:
                records[cell.key] = {**found, "reused": True}
            else:
                todo.append(job_for(cell, plan, cells_dir))
        reused = len(records)
        progress(f"{len(plan.cells)} cells: {reused} finished earlier (reused), {len(todo)} to run")
        lock = threading.Lock()
        finished = [0]

        def done(job: CellJob, record: dict[str, Any]) -> None:
            with lock:
                records[job.key] = {**record, "reused": False}
                finished[0] += 1
                progress(f"[{finished[0]}/{len(todo)}] {job.label}: {record.get('status')}"
                         + (f" ({record['stage']}: {record.get('reason', '')})" if record.get("stage") else ""))

        if ray is not None:
            from edgekit.sweep.ray_pool import run_on_ray

            where = run_on_ray(todo, ray, plan.threads, plan.cell_timeout, out / LOGS, done) if todo else \
                f"ray at {ray} (nothing to run)"
        else:
            with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as scratch:
                slots = run_local(todo, Path(scratch), out / LOGS, plan.cell_timeout, plan.threads, jobs, done)
            where = f"this machine, {len(slots)} slot(s) of {plan.threads} core(s) each, every cell pinned"
        ordered = tuple(records[c.key] for c in plan.cells)
        result = SweepResult(plan, out, ordered, reused, len(todo), where)
        from edgekit.sweep.report import write_sweep_reports

        write_sweep_reports(result)
    return result
