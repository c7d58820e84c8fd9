"""Where output goes on the command line: edgekit's own lines to the terminal, everything the converters,
quantizers and native runtimes print (progress bars, C++ logs, Python warnings) to ``edgekit.log`` in the folder
the command works on. ``-v`` keeps it all on the terminal."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

LOG_FILE = "edgekit.log"
_console: IO[str] | None = None


def console() -> IO[str]:
    """The stream edgekit's own progress lines go to (the terminal's stderr, even while fd 2 is the log)."""
    return _console or sys.stderr


@contextlib.contextmanager
def third_party_output(folder: Path | None) -> Iterator[None]:
    """File descriptors 1 and 2 (what native code and Python's print write to) go to a log while the block runs;
    the log is then moved into ``folder`` if it exists (``None``: nothing is redirected)."""
    global _console
    if folder is None or _console is not None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    # in tests sys.stderr is not fd 2: edgekit's lines then stay on that stream
    _console = os.fdopen(os.dup(saved[1]), "w", buffering=1) if _is_fd(sys.stderr, 2) else sys.stderr
    handle, log = tempfile.mkstemp(prefix="edgekit-", suffix=".log")
    try:
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, handle):
            os.close(fd)
        if _console is not sys.stderr:
            _console.close()
        _console = None
        _keep(Path(log), folder)


def _is_fd(stream: IO[str], fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _keep(log: Path, folder: Path) -> None:
    if folder.is_dir() and log.stat().st_size:
        with contextlib.suppress(OSError):
            shutil.move(str(log), folder / LOG_FILE)
            return
    log.unlink(missing_ok=True)
