"""Run a bench worker in its own process (and process group) and turn what happened into an outcome: measured,
a stage the worker reported, CRASH (a signal or an exit without a result) or TIMEOUT (killed after the limit)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.bench.measurement import Measurement, measurement_from
from edgekit.isolation.worker import OUTPUTS_FILE, RESULT_FILE, Job
from edgekit.results import Stage

JOB_FILE = "job.json"
# Workers get a session (and process group) of their own, so that Ctrl-C reaches edgekit alone and a timeout kills
# a worker with its helpers. A forked export worker clears it: its own workers then die with its group.
OWN_SESSIONS = True
STDERR_FILE = "stderr.txt"


@dataclass(frozen=True)
class Outcome:
    stage: Stage | None  # None when it ran; else LOAD / RUN (reported by the worker), CRASH / TIMEOUT
    reason: str = ""
    measurement: Measurement | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # "val:NAME" and "explain:NAME"
    seconds: float = 0.0

    def validation_outputs(self) -> dict[str, np.ndarray]:
        return {k[4:]: v for k, v in self.outputs.items() if k.startswith("val:")}


def _reported_stage(value: object) -> Stage:
    """The stage a worker wrote, typed again on this side of the process boundary."""
    try:
        return Stage(value)
    except ValueError:
        return Stage.CRASH


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def kill_pid_group(pid: int) -> None:
    """Kill the process group ``pid`` leads (the forked export worker and whatever it started) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_child(module: str, job_file: Path, log: Path, timeout: float, *, with_stdout: bool = False
              ) -> tuple[int | None, float]:
    """``python -m module JOB_FILE`` in a process group of its own, its stderr (and ``with_stdout``, its stdout)
    to ``log``: (exit code, seconds), the code None when it was killed at ``timeout``. Ctrl-C or SIGTERM of
    edgekit kills the group too (its own session gets no SIGINT); so does a timeout, since runtimes may have
    started helpers."""
    start = time.perf_counter()
    with open(log, "wb") as output:
        proc = subprocess.Popen([sys.executable, "-m", module, str(job_file)], stdin=subprocess.DEVNULL,
                                stdout=output if with_stdout else subprocess.DEVNULL, stderr=output,
                                start_new_session=OWN_SESSIONS, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = None
        except BaseException:
            kill_group(proc)
            raise
    return code, time.perf_counter() - start


def run_worker(job: Job, timeout: float, module: str = "edgekit.isolation.worker") -> Outcome:
    """Run ``python -m module JOB.json`` (a worker that writes result.json and outputs.npz into ``job.out``)."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    job.write(out / JOB_FILE)
    code, seconds = run_child(module, out / JOB_FILE, out / STDERR_FILE, timeout)
    if code is None:
        return Outcome(Stage.TIMEOUT, f"no answer within {timeout:g} s; the worker was killed", seconds=seconds)
    tail = last_line(out / STDERR_FILE)
    if code < 0:
        return Outcome(Stage.CRASH, f"the worker died of {signal_name(-code)}" + (f" ({tail})" if tail else ""),
                       seconds=seconds)
    result_path = out / RESULT_FILE
    if code != 0 or not result_path.is_file():
        return Outcome(Stage.CRASH, f"the worker exited with code {code} and no result" + (f": {tail}" if tail else ""),
                       seconds=seconds)
    result = json.loads(result_path.read_text(encoding="utf-8"))
    if result["stage"] is not None:
        return Outcome(_reported_stage(result["stage"]), result["reason"], seconds=seconds)
    with np.load(out / OUTPUTS_FILE, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    measured = result["measurement"]
    return Outcome(None, "", measurement_from(measured) if measured else None, outputs, seconds)
