"""[limits]: a converter that hangs or takes memory without end becomes a TIMEOUT or MEMORY row naming the stage,
its worker is gone, and the other targets are exported and pass (real processes, the onnx backend underneath)."""
import os
import time
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.config import load_profile, parse_profile
from edgekit.errors import EdgekitError
from edgekit.results import Stage, Status

REPO = Path(__file__).parents[1]


def _plugin_profile(tmp_path: Path, backend: str, limits: str = "") -> Path:
    onnx = load_profile("onnx-cpu-fp32").text
    text = onnx.replace('name = "onnx-cpu-fp32"', f'name = "{backend}-fp32"').replace(
        'backend = "onnx"', f'backend = "{backend}"')
    path = tmp_path / f"{backend}.toml"
    path.write_text(text + (f"\n[limits]\n{limits}\n" if limits else ""))
    return path


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setenv("EDGEKIT_PLUGINS", "tests.plugins")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def test_a_hanging_converter_is_a_timeout_row_and_the_other_target_passes(tmp_path, plugins, monkeypatch, capsys):
    pidfile = tmp_path / "worker.pid"
    monkeypatch.setenv("EDGEKIT_TEST_PIDFILE", str(pidfile))
    # the limit on the hanging target only: a loaded machine may take 4 s for a real export too
    hanging = _plugin_profile(tmp_path, "hanging-export", "export = 4")
    out = tmp_path / "run"
    start = time.monotonic()
    code = main(["export", "zoo:cnn", "--target", f"{hanging},onnx-cpu-fp32", "--out", str(out),
                 "--limit", "validate=300"])
    assert code == 1 and time.monotonic() - start < 120
    table = capsys.readouterr().out
    assert "TIMEOUT" in table and "PASS" in table
    row = (out / "hanging-export-fp32" / "validation.json").read_text()
    assert '"TIMEOUT"' in row and "EXPORT took longer than 4 s ([limits] export)" in row
    assert sorted(p.name for p in (out / "hanging-export-fp32").iterdir()) == ["profile.toml", "validation.json"]
    worker = int(pidfile.read_text())
    assert not _alive(worker), "the hanging converter's worker outlived its time limit"


def test_a_converter_over_the_memory_limit_is_a_memory_row(tmp_path, plugins):
    from edgekit.api import export

    greedy = load_profile(str(_plugin_profile(tmp_path, "greedy-export", "memory_mb = 600")))
    run = export("zoo:cnn", [greedy, load_profile("onnx-cpu-fp32")], tmp_path / "run")
    rows = {r.target: r for r in run.rows}
    row = rows["greedy-export-fp32"]
    assert row.stage is Stage.MEMORY and "EXPORT went over [limits] memory_mb = 600" in row.reason, row.reason
    assert rows["onnx-cpu-fp32"].status is Status.PASS


@pytest.mark.parametrize("limits, message", [
    ("export = 0", "export = 0 is out of range"),
    ("exprot = 10", "unknown key 'exprot'"),
    ('memory_mb = "lots"', "memory_mb must be an integer"),
])
def test_bad_limits_are_one_line_errors(limits, message):
    text = load_profile("onnx-cpu-fp32").text + f"\n[limits]\n{limits}\n"
    with pytest.raises(EdgekitError, match=message):
        parse_profile(text, "p.toml")


def test_limits_override_from_the_command_line_is_checked(capsys):
    assert main(["export", "zoo:cnn", "--target", "onnx-cpu-fp32", "--out", os.devnull + "x",
                 "--limit", "quantise=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--limit: unknown key 'quantise'" in err[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 450 KB file system (tmpfs): a real ENOSPC, as a full disk gives. Mounting needs root (CI runs as root);
    elsewhere the test is skipped, and says why."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=450k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing_behind(small_disk, tmp_path):
    import subprocess
    import sys

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", "zoo:cnn", "--target",
                           "onnx-cpu-fp32,openvino-cpu-fp32,tflite-cpu-fp32", "--out", str(small_disk / "run"),
                           "--limit", "export=120"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmpdir)})
    errors = [line for line in done.stderr.splitlines() if line.startswith("edgekit:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith("edgekit: error: the disk is full: ") and str(small_disk) in errors[0]
    assert list(small_disk.iterdir()) == [] and list(tmpdir.iterdir()) == []
