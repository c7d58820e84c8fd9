"""Reliability: a killed export leaves nothing a later command mistakes for a result and the next export cleans
up after it; workers die with their parent; reports stay valid whatever text a runtime puts in a reason."""
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from edgekit.errors import one_line
from edgekit.validate.metrics import output_stats

REPO = Path(__file__).parents[1]


def _edgekit(*args: str, tmpdir: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    return subprocess.Popen([sys.executable, "-m", "edgekit", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, env=env)


def _wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_kill_9_during_export_then_a_rerun_leaves_one_complete_run_and_no_debris(tmp_path):
    """The staging folder, the log and every temporary file live beside --out: kill -9 leaves nothing in TMPDIR,
    and the next export to the same --out removes what it left."""
    out, tmpdir = tmp_path / "runs" / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _edgekit("export", "zoo:cnn", "--target", "onnx-cpu-fp32,tflite-cpu-fp32", "--out", str(out),
                    tmpdir=tmpdir)
    # killed once the reference is written and the first target is under way
    assert _wait_for(lambda: any(out.parent.glob(".run.partial-*/onnx-cpu-fp32")), 120), proc.stderr.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(out.parent.glob(".run.partial-*"))  # debris, but not a result
    assert list(out.parent.glob(".run.tmp-*")) and list(tmpdir.iterdir()) == []
    done = _edgekit("export", "zoo:cnn", "--target", "onnx-cpu-fp32", "--out", str(out), tmpdir=tmpdir)
    assert done.wait(300) == 0, done.stderr.read()
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"] and (out / "run.json").is_file()
    assert list(tmpdir.iterdir()) == []


def test_a_worker_dies_with_its_parent(tmp_path):
    """The worker asks the kernel for SIGKILL when its parent dies (kill -9 of edgekit included)."""
    code = ("import sys, time; from edgekit.isolation.worker import die_with_parent; die_with_parent(); "
            "print('ready', flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
                               f"{code!r}]); print(p.pid, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    parent.kill()
    parent.wait()
    assert _wait_for(lambda: not _alive(child), 10), "the worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_reasons_lose_their_control_characters():
    reason = one_line(RuntimeError("\x1b[1m\x1b[31mExportError\x1b[0m: \x07op not supported\nmore"))
    assert reason == "RuntimeError: ExportError: op not supported"
    suite = ET.fromstring(f'<testsuite><testcase name="x"><failure message="{reason}"/></testcase></testsuite>')
    assert suite.find("testcase/failure").get("message") == reason


def test_nan_outputs_are_named():
    torch_out = np.ones((4, 3), np.float32)
    runtime = torch_out.copy()
    runtime[1, 2] = np.nan
    stats = output_stats("logits", torch_out, runtime)
    assert stats.nonfinite == 1 and np.isnan(stats.max_abs_error)


def _workers_of(folder: Path) -> list[int]:
    """Live worker processes whose job runs an artifact of a run staged in ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"edgekit.isolation.worker" in args and str(folder) in Path(args[-2].decode()).read_text():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_sigterm_during_export_cleans_up_and_kills_its_worker(tmp_path):
    out = tmp_path / "run"
    proc = _edgekit("export", "zoo:cnn", "--target", "onnx-cpu-fp32", "--out", str(out))
    assert _wait_for(lambda: _workers_of(tmp_path), 180), proc.stderr.read()  # validating in its worker
    workers = _workers_of(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 143 and b"edgekit: terminated" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []  # the staging folder went with it
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 10)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (pillow reads the size before any pixel)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_in_a_calibration_folder_is_one_line_naming_it(tmp_path, capsys):
    from edgekit.cli import main

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "huge.png").write_bytes(_png_header(20000, 10000))
    code = main(["export", "zoo:cnn", "--target", "onnx-cpu-int8", "--calib", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "huge.png: too large to read safely" in err[-1] and not (tmp_path / "run").exists()


def test_bench_refuses_a_timeout_that_is_not_positive(tmp_path, capsys):
    import pytest

    from edgekit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(tmp_path), "--timeout", "-1"])
    assert exit_.value.code == 2 and "give a number of seconds > 0" in capsys.readouterr().err


def test_a_model_past_the_protobuf_limit_keeps_its_weights_beside_the_graph(tmp_path, monkeypatch):
    """The > 2 GB path with the limit forced down to 1 KB (a real 2 GB model is too slow for the suite): export
    writes model.onnx + model.onnx.data, validation opens both, the manifest hashes both, a bundle carries both."""
    from edgekit.api import export
    from edgekit.backends import onnx as onnx_backend
    from edgekit.bundle.make import bundle

    monkeypatch.setattr(onnx_backend, "EXTERNAL_DATA_BYTES", 1024)
    result = export(f"{Path(__file__).parent}/fixtures/user_models.py:build", "onnx-cpu-fp32", tmp_path / "run")
    assert result.rows[0].stage is None, result.rows[0].reason
    import json

    target = tmp_path / "run" / "onnx-cpu-fp32"
    files = [f["path"] for f in json.loads((target / "manifest.json").read_text())["files"]]
    assert files == ["model.onnx", "model.onnx.data"] and (target / "model.onnx.data").stat().st_size > 0
    folder = bundle(tmp_path / "run", "onnx-cpu-fp32", tmp_path / "bundle")
    assert (folder / "model.onnx.data").is_file()
    done = subprocess.run([sys.executable, str(folder / "run.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # per-row dynamic int8 rewrites the graph in memory: it writes it back with its weights outside too
    result = export("zoo:transformer", "onnx-cpu-int8-dynamic", tmp_path / "int8")
    assert result.rows[0].stage is None, result.rows[0].reason
    target = tmp_path / "int8" / "onnx-cpu-int8-dynamic"
    files = [f["path"] for f in json.loads((target / "manifest.json").read_text())["files"]]
    assert files == ["model.onnx", "model.onnx.data"]
    quant = json.loads((target / "manifest.json").read_text())["extra"]["quantization"]
    assert quant["row_search"]["chosen"].startswith("per row everywhere")  # no calibration data to judge on


def test_third_party_output_goes_to_the_run_log_and_the_terminal_keeps_edgekits_lines(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", "zoo:cnn", "--target", "openvino-cpu-int8",
                           "--calib", "task:calib", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("  .. ") for line in done.stderr.splitlines())  # edgekit's progress only
    assert "Statistics collection" not in done.stdout  # NNCF's progress bars
    assert "Statistics collection" in (out / "edgekit.log").read_text()
    assert "openvino-cpu-int8" in done.stdout  # the result table


def test_resume_reuses_the_targets_a_killed_export_had_finished(tmp_path):
    out = tmp_path / "run"
    targets = "onnx-cpu-fp32,tflite-cpu-fp32"
    proc = _edgekit("export", "zoo:cnn", "--target", targets, "--out", str(out))
    # killed after the first target is exported and validated, while the second is under way
    assert _wait_for(lambda: any(tmp_path.glob(".run.partial-*/tflite-cpu-fp32")), 180), proc.stderr.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = next(tmp_path.glob(".run.partial-*/onnx-cpu-fp32"))
    model = (finished / "model.onnx").stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", "zoo:cnn", "--target", targets, "--out",
                           str(out), "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "onnx-cpu-fp32: reusing the finished artifact" in done.stderr
    assert "tflite-cpu-fp32: exporting" in done.stderr  # unfinished: made again
    assert (out / "onnx-cpu-fp32" / "model.onnx").stat().st_mtime_ns == model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_second_edgekit_on_a_folder_in_use_is_refused_in_one_line(tmp_path):
    """A run being exported again: a second export into the same --out, or a bench of it, is refused with one line
    naming the first one's pid. SIGTERM then ends the first: the earlier run is as it was, no lock is left."""
    out = tmp_path / "run"
    earlier = _edgekit("export", "zoo:cnn", "--target", "onnx-cpu-fp32", "--out", str(out))
    assert earlier.wait(300) == 0, earlier.stderr.read()
    before = sorted(p.name for p in out.iterdir())
    # the first holds the folder: its converter hangs (up to its 120 s limit; stopped below with SIGTERM)
    hanging = tmp_path / "hanging.toml"
    hanging.write_text((REPO / "targets" / "onnx-cpu-fp32.toml").read_text().replace(
        'name = "onnx-cpu-fp32"', 'name = "hanging-export-fp32"').replace('backend = "onnx"',
                                                                         'backend = "hanging-export"'))
    first = subprocess.Popen([sys.executable, "-m", "edgekit", "export", "zoo:cnn", "--target", str(hanging),
                              "--out", str(out), "--limit", "export=120"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True,
                             env={**os.environ, "EDGEKIT_PLUGINS": "tests.plugins", "PYTHONPATH": str(REPO)})
    assert _wait_for(lambda: any(tmp_path.glob(".run.partial-*/hanging-export-fp32")), 120)
    for args in (("export", "zoo:cnn", "--target", "tflite-cpu-fp32", "--out", str(out)), ("bench", str(out))):
        second = subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"is in use by edgekit pid {first.pid} (export)" in lines[0]
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(60) == 143, first.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == before  # not a mixed folder: the earlier run, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hanging.toml", "run"]  # no lock, no staging left
