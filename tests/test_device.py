"""device-bench over real ssh: an sshd started by the test on 127.0.0.1 with keys made in a temp dir; the bundle is
copied with scp, checked and benched there, and the rows land in the run's reports."""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from edgekit.bundle.device import device_bench, record
from edgekit.bundle.make import bundle
from edgekit.cli import main

from .conftest import BACKENDS, fp32_profile

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists():
        pytest.fail("openssh-server is not installed; `make test` installs Debian's openssh-server")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {d / 'sshd.pid'}
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "wb"))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "identity": str(d / "user"),
           "known_hosts": str(d / "known_hosts"), "root": d}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fusion_bundles(zoo_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("b")
    # names unique on the "device" (this machine's home folder)
    folders = {b: bundle(zoo_run("fusion").folder, fp32_profile(b), root / f"fusion-{b}-{os.getpid()}")
               for b in BACKENDS}
    yield folders
    for folder in folders.values():
        shutil.rmtree(Path.home() / "edgekit-bundles" / folder.name, ignore_errors=True)


@pytest.fixture
def fusion_bundle(fusion_bundles) -> Path:
    return fusion_bundles["onnx"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_bench_over_ssh_adds_rows_to_the_report(sshd, fusion_bundles, zoo_run, tmp_path, backend):
    fusion_bundle = fusion_bundles[backend]
    result = device_bench(fusion_bundle, sshd["url"], python=sys.executable, seconds=0.05,
                          identity=sshd["identity"], known_hosts=sshd["known_hosts"])
    assert result.device == sshd["url"] and result.target == fp32_profile(backend)
    assert result.check["status"] == "PASS" and result.check["samples"] == 16
    assert 0 < result.bench["latency_1t"]["median_ms"] <= result.bench["latency_1t"]["p99_ms"]
    remote = Path.home() / "edgekit-bundles" / fusion_bundle.name / "run.py"
    assert remote.is_file()  # it really went through scp to the "device"

    run = tmp_path / "run"
    shutil.copytree(zoo_run("fusion").folder, run)
    record(run, result)
    report = json.loads((run / "report.json").read_text())
    assert [d["device"] for d in report["devices"]] == [result.device]
    assert "## On devices" in (run / "report.md").read_text()
    assert result.device in (run / "report.html").read_text()


def test_unreachable_device_is_one_clear_line(fusion_bundle, sshd, capsys):
    code = main(["device-bench", str(fusion_bundle), "--device", "ssh://nobody@127.0.0.1:1",
                 "--identity", sshd["identity"], "--known-hosts", sshd["known_hosts"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is not reachable" in err[0]


def test_device_without_the_runtime_is_one_clear_line(fusion_bundle, sshd, tmp_path, capsys):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python with neither numpy nor onnxruntime
    code = main(["device-bench", str(fusion_bundle), "--device", sshd["url"], "--python", str(bare / "bin/python"),
                 "--identity", sshd["identity"], "--known-hosts", sshd["known_hosts"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "lacks the bundle's runtime" in err[0] and "numpy" in err[0]


def test_bench_on_device_script(sshd, fusion_bundle, zoo_run, tmp_path):
    """tools/bench_on_device.sh, the script users run against their own device, over the same sshd."""
    run = tmp_path / "run"
    shutil.copytree(zoo_run("fusion").folder, run)
    script = Path(__file__).parents[1] / "tools" / "bench_on_device.sh"
    env = {**os.environ, "EDGEKIT_SSH_KEY": sshd["identity"], "EDGEKIT_KNOWN_HOSTS": sshd["known_hosts"],
           "EDGEKIT_SECONDS": "0.05", "EDGEKIT": str(Path(sys.executable).parent / "edgekit")}
    done = subprocess.run([str(script), str(fusion_bundle), sshd["url"].removeprefix("ssh://"), str(run),
                           sys.executable], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "check PASS" in done.stdout
    assert json.loads((run / "report.json").read_text())["devices"][0]["target"] == fp32_profile("onnx")


def test_device_bench_local_leaves_no_copy_behind(fusion_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = device_bench(fusion_bundle, "local", python=sys.executable, seconds=0.05)
    assert result.check["status"] == "PASS" and result.bench["latency_1t"]["median_ms"] > 0
    assert list(tmp_path.glob("edgekit-device-*")) == []


def test_a_bundle_whose_manifest_is_not_json_is_one_line(fusion_bundle, tmp_path, capsys):
    broken = tmp_path / "bundle"
    shutil.copytree(fusion_bundle, broken)
    (broken / "manifest.json").write_text("{nope")
    assert main(["device-bench", str(broken), "--device", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json: not a bundle manifest" in err[0]


def test_a_device_farm_benches_every_device_and_a_dead_one_is_its_row(fusion_bundle, sshd, zoo_run, tmp_path,
                                                                     capsys):
    farm = tmp_path / "farm.toml"
    farm.write_text(f"""
[[device]]
uri = "{sshd['url']}"
name = "board-a"
python = "{sys.executable}"
identity = "{sshd['identity']}"
known_hosts = "{sshd['known_hosts']}"

[[device]]
uri = "local"
name = "host"
python = "{sys.executable}"

[[device]]
uri = "ssh://nobody@127.0.0.1:1"
name = "unplugged"
identity = "{sshd['identity']}"
known_hosts = "{sshd['known_hosts']}"
""")
    run = tmp_path / "run"
    shutil.copytree(zoo_run("fusion").folder, run)
    code = main(["device-bench", str(fusion_bundle), "--devices", str(farm), "--seconds", "0.05", "--run", str(run)])
    out = capsys.readouterr().out
    assert code == 1  # a device could not be benched
    devices = {d["device"]: d for d in json.loads((run / "report.json").read_text())["devices"]}
    assert set(devices) == {"board-a", "host", "unplugged"}
    for name in ("board-a", "host"):
        assert devices[name]["check"]["status"] == "PASS" and devices[name]["bench"]["latency_1t"]["median_ms"] > 0
    assert "is not reachable" in devices["unplugged"]["error"] and not devices["unplugged"]["bench"]
    assert "unplugged" in (run / "report.md").read_text() and "ERROR" in (run / "report.html").read_text()
    assert "unplugged " + fp32_profile("onnx") + ": ERROR" in out


@pytest.mark.parametrize("text, says", [
    ("[[device]]\nname = 'x'\n", "uri ="),
    ("[[device]]\nuri = 'ftp://x'\n", "use local, ssh://"),
    ("[[device]]\nuri = 'local'\ncolour = 'red'\n", "unknown key 'colour'"),
    ("[[device]]\nuri = 'local'\n[[device]]\nuri = 'local'\n", "two devices are named"),
    ("title = 1\n", "expected [[device]]"),
])
def test_a_bad_farm_file_is_one_line(fusion_bundle, tmp_path, capsys, text, says):
    farm = tmp_path / "farm.toml"
    farm.write_text(text)
    assert main(["device-bench", str(fusion_bundle), "--devices", str(farm)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
