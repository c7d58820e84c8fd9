"""Cells on a Ray cluster (``edgekit sweep --ray auto|ADDRESS``; ``pip install 'edgekit[ray]'``).

Each cell is a Ray task asking for ``threads`` CPUs. On its node the task runs the cell exactly as a local sweep
does, a process of its own (a native crash is a CRASH row, not a lost worker), in a node-local scratch folder;
the finished cell folder comes back to the driver as a tar archive and is moved into DIR/cells atomically, so
the nodes need no shared storage. Only this module imports ray."""
from __future__ import annotations

import io
import socket
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, one_line
from edgekit.sweep.cell import CELL_FILE, CellJob
from edgekit.sweep.local import Done, failed_record, run_cell_process


def _cell_on_node(job: CellJob, timeout: float) -> tuple[dict[str, Any], bytes, bytes]:
    """(record, the cell folder as a tar, its log), run on whichever node Ray chose."""
    import ray

    node = {"ray_node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    with tempfile.TemporaryDirectory(prefix="edgekit-ray-cell-") as scratch:
        local = Path(scratch) / job.key
        job = replace(job, out=str(local), node=node)
        log = Path(scratch) / "cell.log"
        record = run_cell_process(job, Path(scratch) / "jobs", log, timeout)
        record["node"] = {**node, **record.get("node", {})}
        archive = io.BytesIO()
        if (local / CELL_FILE).is_file():
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                tar.add(local, arcname=".")
        return record, archive.getvalue(), log.read_bytes() if log.is_file() else b""


def _unpack(archive: bytes, final: Path) -> None:
    """The node's cell folder into DIR/cells/KEY, all at once; members that would leave the folder are refused."""
    from edgekit.fsutil import staged_folder

    with staged_folder(final, marker=CELL_FILE) as stage, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(stage, filter="data")


def connect(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise EdgekitError("--ray needs ray: pip install 'edgekit[ray]'") from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # ConnectionError, or ray's own when no cluster answers at the address
        raise EdgekitError(f"--ray {address}: cannot connect to a Ray cluster ({one_line(exc)})") from None
    return ray


def run_on_ray(jobs: list[CellJob], address: str, threads: int, timeout: float, logs: Path, done: Done) -> str:
    """Every job as a Ray task; ``done`` is called as each one comes back. Returns where the cells ran."""
    ray = connect(address)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        task = ray.remote(num_cpus=threads, max_retries=0)(_cell_on_node)
        pending = {task.remote(job, timeout): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                record, archive, log = ray.get(ready[0])
            except Exception as exc:  # the task or its node was lost: a row, and the cell runs again next time
                done(job, failed_record(job, "CRASH", f"the Ray task failed: {one_line(exc)}", 0.0))
                continue
            (logs / f"{job.key}.log").write_bytes(log)
            if archive:
                _unpack(archive, Path(job.out))
            done(job, record)
        cpus = sum(int(n.get("Resources", {}).get("CPU", 0)) for n in nodes)
        return f"ray at {address}: {len(nodes)} node(s), {cpus} CPU(s), {threads} CPU(s) per cell"
    finally:
        ray.shutdown()
