"""Atomic writes: a reader (or a crash) never sees a half-written file or run folder."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a report is as readable as any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def read_npz(path: Path, what: str = "") -> dict[str, Any]:
    """Every array of an .npz file, read now (no pickles): a missing, truncated or corrupt file is one line
    naming it, whatever layer of the zip or the array format breaks."""
    import zipfile
    import zlib

    import numpy as np

    label = f"{what} {path}" if what else str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise EdgekitError(f"{label} is missing") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgekitError(f"{label}: not a readable .npz ({reason})") from None


MAX_JSON_BYTES = 64 << 20  # edgekit's own records and reports are far smaller


def read_json(path: Path, kind: type | None = dict) -> Any:
    """A JSON file edgekit wrote, read back: missing, oversized, truncated, not UTF-8 or not a ``kind`` (None: any
    value, for a caller that types it itself) is one line naming the file."""
    try:
        size = path.stat().st_size
        text = path.read_text(encoding="utf-8") if size <= MAX_JSON_BYTES else None
    except FileNotFoundError:
        raise EdgekitError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"{path}: not readable ({exc})") from None
    if text is None:
        raise EdgekitError(f"{path}: {size} bytes, over the {MAX_JSON_BYTES >> 20} MB an edgekit record may be")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EdgekitError(f"{path}: not valid JSON ({exc})") from None
    if kind is not None and not isinstance(value, kind):
        raise EdgekitError(f"{path}: a JSON {'object' if kind is dict else 'list'} is expected")
    return value


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")


RUN_MARKER = "run.json"
OWNER_FILE = ".edgekit-owner"  # the pid of the process building a staging folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_stages(out: Path) -> list[Path]:
    """The staging and scratch folders an earlier edgekit left beside ``out`` when it was killed (kill -9, power
    loss): those whose owner process is gone, newest first. A live concurrent run's folder is not one."""
    found = []
    for folder in list(out.parent.glob(f".{out.name}.partial-*")) + list(out.parent.glob(f".{out.name}.old-*")):
        try:
            stale = not _alive(int((folder / OWNER_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            # killed before the owner was written, or a concurrent run about to write it: give it a minute
            stale = time.time() - folder.stat().st_mtime > 60
        if stale:
            found.append(folder)
    found += _stale_scratch(out)
    return sorted(found, key=lambda f: f.stat().st_mtime, reverse=True)


def _stale_scratch(out: Path) -> list[Path]:
    """Scratch folders beside ``out`` (their owner's pid in the name) whose owner is gone."""
    found = []
    for folder in out.parent.glob(f".{out.name}.tmp-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(folder)
    return found


def remove_stale_stages(out: Path, keep: Path | None = None) -> None:
    for folder in stale_stages(out):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def scratch_beside(folder: Path) -> Iterator[Path]:
    """Everything temporary while a command works on ``folder`` goes to ``.NAME.tmp-PID`` beside it: Python's
    tempfile (edgekit's, the converters' and quantizers') and, through TMPDIR, every worker. kill -9 then leaves
    nothing in the system's temporary folder, and the next command on ``folder`` removes what a dead one left."""
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_scratch(folder):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(scratch), str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(scratch, ignore_errors=True)


_HELD: dict[Path, int] = {}  # the folders this process has locked, and how many times (a CLI command locks,
# then the API function it calls locks again)


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """One edgekit at a time on ``folder`` (an export's --out, a run a bench reads and writes, a sweep folder):
    another one is refused with one line naming its pid and what it does. The lock is ``.NAME.lock`` beside the
    folder (which an export replaces), held with flock: the kernel releases it when its process dies, kill -9
    included, and the next owner takes the file over and removes it when done."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another edgekit"
            os.close(fd)
            raise EdgekitError(f"{folder} is in use by {holder}; wait for it to finish or choose another "
                               "folder") from None
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break  # else the owner before removed the file between our open and our lock: lock the new one
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"edgekit pid {os.getpid()} ({what})".encode(), 0)
    _HELD[folder] = 1
    try:
        yield
    finally:
        del _HELD[folder]
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


MIN_FREE = 1 << 20  # bytes; a file system with less left is full for any artifact


def full_disk(path: Path) -> str | None:
    """"the disk is full: ..." when the file system holding ``path`` has less than MIN_FREE bytes left, else
    None. Converters say it in their own words, or not at all (OpenVINO: "basic_ios::clear: iostream error")."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    return f"the disk is full: {free // 1024} KB left on the file system of {path}" if free < MIN_FREE else None


@contextlib.contextmanager
def staged_folder(out: Path, marker: str = RUN_MARKER, keep: Path | None = None) -> Iterator[Path]:
    """Build a folder beside ``out`` and move it into place only when the block succeeds. Stale staging folders
    of killed runs are removed first, but for ``keep`` (a run being resumed from).

    An existing ``out`` is replaced only if it is empty or edgekit made it (it has ``marker``)."""
    out = out.resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        what = "run folder" if marker == RUN_MARKER else "bundle"
        raise EdgekitError(f"{out} exists and is not an edgekit {what}; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(out, keep)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    os.chmod(stage, 0o777 & ~_UMASK)
    (stage / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    try:
        yield stage
        (stage / OWNER_FILE).unlink()
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            (trash / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
            os.replace(out, trash / "old")
            os.replace(stage, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
