"""Export and quantization in a forked worker, under the profile's ``[limits]``: a converter or quantizer that
hangs, aborts natively or runs out of memory becomes a TIMEOUT, CRASH or MEMORY row naming the stage, and
edgekit goes on with the other targets.

Forked, not spawned: the worker needs the model as edgekit holds it (pruned, its weights rounded, a user's own
class), and a fork hands it over without pickling it or importing torch again. Torch runs on one thread in the
worker: GNU OpenMP's thread pool does not survive a fork, and a child of a process that has run torch on several
threads hangs at its first parallel region (measured: a 512x512 matmul never returned). GPTQ and distillation run
before the fork, on every core; what runs inside is mostly the converters' tracing and the runtimes' own
quantizers, which start thread pools of their own."""
from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from edgekit.config import Limits
from edgekit.errors import one_line
from edgekit.isolation import process
from edgekit.isolation.worker import cap_memory, die_with_parent, memory_failure
from edgekit.results import Stage, StageFailed

Enter = Callable[[Stage], None]  # the worker says which stage it starts; that stage's limit then runs
SECONDS = {Stage.EXPORT: "export", Stage.QUANTIZE: "quantize"}  # stage -> its [limits] key


def in_worker(work: Callable[[Enter], Any], limits: Limits, first: Stage) -> Any:
    """``work(enter)`` in a forked child process (a process group of its own): its JSON-able result. Raises
    :class:`StageFailed` with the stage ``work`` raised, or TIMEOUT (the stage it was in took longer than its
    limit), MEMORY (over ``limits.memory_mb``) or CRASH (a signal or an exit without an answer)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its coverage is the rows the tests see
        os.close(read)
        _child(work, limits, write)
    os.close(write)
    try:
        return _watch(pid, read, limits, first)
    finally:
        os.close(read)
        process.kill_pid_group(pid)


def _child(work: Callable[[Enter], Any], limits: Limits, fd: int) -> None:
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        die_with_parent()
        process.OWN_SESSIONS = False  # its own workers stay in its group: a timeout kills them with it
        _one_torch_thread()
        out = os.fdopen(fd, "w", buffering=1)
        send = lambda kind, value: out.write(f"{kind} {json.dumps(value)}\n")  # noqa: E731
        cap_memory(limits.memory_mb)
        try:
            send("result", work(lambda stage: send("stage", stage.value)))
        except StageFailed as exc:
            send("failed", _failure(exc.stage, exc.reason, exc.__cause__, limits))
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the parent gets one line, never a hang
            send("failed", _failure(Stage.CRASH, one_line(exc), exc, limits))
        out.flush()
    finally:
        os._exit(0)  # no atexit handlers, no finalizers of the parent's objects (pytest's, ray's) in the child


def _failure(stage: Stage, reason: str, cause: BaseException | None, limits: Limits) -> dict[str, str]:
    if isinstance(cause, MemoryError):
        reason = f"MemoryError: {reason}"
    stage_name, reason = memory_failure(stage.value, reason, limits.memory_mb)
    return {"stage": stage_name, "reason": reason}


def _watch(pid: int, fd: int, limits: Limits, stage: Stage) -> Any:
    """Read the child's lines until its answer, moving the deadline at each stage it enters."""
    deadline, buffer, status = time.monotonic() + getattr(limits, SECONDS[stage]), b"", None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            seconds = getattr(limits, SECONDS[stage])
            raise StageFailed(Stage.TIMEOUT, f"{stage.value} took longer than {seconds:g} s ([limits] "
                                             f"{SECONDS[stage]}); the worker was killed")
        ready = select.select([fd], [], [], 0 if status is not None else min(left, 1.0))[0]
        chunk = os.read(fd, 1 << 16) if ready else b""
        if not chunk and (ready or status is not None):  # closed, or dead with nothing more to say
            raise StageFailed(Stage.CRASH, _death(pid, status, stage, limits))
        if not ready:  # a helper it started may hold the pipe open after it died
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            kind, value = _message(line)
            if kind == "stage":
                stage = Stage(value)
                deadline = time.monotonic() + getattr(limits, SECONDS[stage])
            elif kind == "failed":
                raise StageFailed(Stage(value["stage"]), value["reason"])
            else:
                return value


def _message(line: bytes) -> tuple[str, Any]:
    """One line of the worker's: (kind, value); anything else on its pipe is a CRASH row, not edgekit's crash."""
    kind, _, value = line.decode("utf-8", errors="replace").partition(" ")
    try:
        parsed = json.loads(value)
        if kind == "stage":
            Stage(parsed)
        elif kind == "failed":
            Stage(parsed["stage"]), str(parsed["reason"])
        elif kind != "result":
            raise ValueError(f"unknown message {kind!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise StageFailed(Stage.CRASH, f"the worker's answer did not read ({exc}): {line[:100]!r}") from None
    return kind, parsed


def _death(pid: int, status: int | None, stage: Stage, limits: Limits) -> str:
    """Why the worker left without an answer: it died."""
    if status is None:
        status = os.waitpid(pid, 0)[1]
    if os.WIFSIGNALED(status):
        memory = f" ([limits] memory_mb = {limits.memory_mb} was set)" if limits.memory_mb else ""
        return f"the worker died of {process.signal_name(os.WTERMSIG(status))} in {stage.value}{memory}"
    return f"the worker exited with code {os.WEXITSTATUS(status)} in {stage.value} without an answer"


def _one_torch_thread() -> None:
    import sys

    torch = sys.modules.get("torch")  # not imported by edgekit here: nothing to set
    if torch is not None:
        torch.set_num_threads(1)
