"""edgekit sweep: cells planned with content-addressed keys, a kill -9 midway resumed without redoing finished
cells, and the same sweep on a real two-node Ray cluster on 127.0.0.1 matching the local run."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.sweep.plan import load_sweep
from edgekit.sweep.report import pareto_keys
from edgekit.sweep.run import CELLS, sweep

SWEEP = """
[sweep]
timing = "quick"
[[source]]
source = "zoo:cnn"
[recipe.fp32]
[recipe.int8]
precision = "int8"
[targets]
families = ["onnx-cpu", "openvino-cpu"]
"""


def _write(folder: Path, text: str, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, says", [
    ("[[source]]\nsource = 'zoo:cnn'\n[targets]\nfamilies = ['no-such']\n", "has no fp32 profile"),
    ("[[source]]\nsource = 'zoo:cnn'\n[recipe.x]\nprune = 'channels:2'\n[targets]\nfamilies = ['onnx-cpu']\n",
     "[recipe.x]"),
    ("[[source]]\nsource = 'zoo:cnn'\n[recipe.x]\ncolour = 1\n[targets]\nfamilies = ['onnx-cpu']\n",
     "unknown key 'colour'"),
    ("[targets]\nfamilies = ['onnx-cpu']\n", "at least one [[source]]"),
    ("[[source]]\nsource = 'zoo:cnn'\n", "families"),
    ("[[source]]\nsource = 'zoo:cnn'\n[sweep]\nthreads = 0\n[targets]\nfamilies = ['onnx-cpu']\n", "threads"),
    ("not toml [", "not valid TOML"),
])
def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, text, says):
    path = _write(tmp_path, text)
    with pytest.raises(EdgekitError) as info:
        load_sweep(path)
    assert says in str(info.value) and "\n" not in str(info.value) and str(path) in str(info.value)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_keys_follow_what_a_result_depends_on(tmp_path):
    base = load_sweep(_write(tmp_path, SWEEP))
    assert [c.key for c in base.cells] == [c.key for c in load_sweep(_write(tmp_path, SWEEP, "again.toml")).cells]
    assert len({c.key for c in base.cells}) == 4
    other_recipe = load_sweep(_write(tmp_path, SWEEP.replace('precision = "int8"', 'precision = "int8"\n'
                                                              'prune = "channels:0.5"'), "pruned.toml"))
    changed = {c.key for c in other_recipe.cells} - {c.key for c in base.cells}
    assert len(changed) == 2  # only the int8 recipe's cells
    profile = tmp_path / "targets"
    profile.mkdir()
    text = (Path(__file__).parents[1] / "targets" / "onnx-cpu-fp32.toml").read_text()
    (profile / "mine-cpu-fp32.toml").write_text(text.replace('name = "onnx-cpu-fp32"', 'name = "mine-cpu-fp32"'))
    os.environ["EDGEKIT_TARGETS"] = str(profile)
    try:
        mine = load_sweep(_write(tmp_path, SWEEP.replace('"openvino-cpu"', '"mine-cpu"')
                                 .replace('[recipe.int8]\nprecision = "int8"\n', ''), "mine.toml"))
    finally:
        del os.environ["EDGEKIT_TARGETS"]
    onnx, other = mine.cells
    assert onnx.key == base.cells[0].key and other.key != onnx.key  # another profile text, another key


def test_the_pareto_front_is_per_source_and_family():
    def cell(key, q, ms, size, status="PASS", family="a"):
        return {"key": key, "source": "m", "family": family, "status": status, "accuracy": q, "latency_ms": ms,
                "size_bytes": size}
    cells = (cell("fast", 0.90, 1.0, 10), cell("good", 0.99, 3.0, 40), cell("worse", 0.89, 2.0, 50),
             cell("failed", 1.0, 0.1, 1, "FAIL"), cell("alone", 0.5, 9.0, 99, family="b"))
    assert pareto_keys(cells) == {"fast", "good", "alone"}


def _cell_processes(out: Path) -> list[int]:
    """Live cell processes of this sweep folder (their job files name it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"edgekit.sweep.cell" in args and str(out) in Path(args[-2].decode()).read_text():
                found.append(int(pid))
        except (OSError, IndexError, UnicodeDecodeError):
            continue
    return found


def _finished(out: Path) -> int:
    return len(list((out / CELLS).glob("*/cell.json")))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The sweep run locally with one slot, killed with kill -9 after its first cell, then run again."""
    folder = tmp_path_factory.mktemp("sweep")
    path, out = _write(folder, SWEEP), folder / "out"
    driver = subprocess.Popen([sys.executable, "-m", "edgekit", "sweep", str(path), "--out", str(out), "--jobs", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _finished(out) < 1 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    for _ in range(50):  # the running cell dies with its parent
        if not _cell_processes(out):
            break
        time.sleep(0.2)
    orphans = _cell_processes(out)
    before = _finished(out)  # counted once nothing of the sweep is left that could still finish a cell
    resumed = sweep(path, out)
    reports = {name: (out / name).read_text() for name in ("sweep.json", "sweep.md", "sweep.html")}
    again = sweep(path, out)
    return before, orphans, resumed, reports, again


def test_a_sweep_killed_midway_resumes_only_the_unfinished_cells(local_sweep):
    before, orphans, resumed, reports, again = local_sweep
    assert orphans == []
    assert 1 <= before < 4
    assert (resumed.reused, resumed.ran) == (before, 4 - before)
    assert [c["status"] for c in resumed.cells] == ["PASS"] * 4, [c.get("reason") for c in resumed.cells]
    assert not list((resumed.folder / CELLS).glob(".*partial*"))  # the killed cell's staging folder is gone
    report = json.loads(reports["sweep.json"])
    assert (report["reused"], report["ran"], report["cells_total"]) == (before, 4 - before, 4)
    assert all(c["latency_ms"] > 0 and c["size_bytes"] > 0 and c["precision"]["compute"] for c in report["cells"])
    assert {c["precision"]["weights"] for c in report["cells"] if c["recipe"] == "int8"} == {"int8"}
    assert f"{before} reused" in reports["sweep.md"]
    assert "data:image/png;base64," in reports["sweep.html"]
    assert (again.reused, again.ran) == (4, 0)
    assert [c["key"] for c in again.cells] == [c["key"] for c in resumed.cells]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all held open until every one is picked (closing each at once lets the next bind
    reuse it, and two Ray servers on one port is a GCS that never comes up)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


PORT_OPTIONS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def _ports(ports: list[int], node: int) -> list[str]:
    """Every port a node listens on, its own (Ray's defaults are fixed numbers that a second node would share)."""
    args = [a for name, port in zip(PORT_OPTIONS, ports) for a in (name, str(port))]
    start = 20000 + (os.getpid() % 100) * 200 + node * 100  # worker ports: a range per node
    return args + ["--min-worker-port", str(start), "--max-worker-port", str(start + 99)]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-600:]
    except OSError:
        return ""


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head and a second worker node on 127.0.0.1, each a `ray start --block` of its own (own ports, own
    temp dir), one CPU each; both stopped at the end, and only they."""
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.is_file():
        pytest.fail("ray is not installed: the test command installs edgekit[ray] (pip install 'edgekit[ray]')")
    temp = Path(tempfile.mkdtemp(prefix="ekray-", dir="/tmp"))  # short: Ray's unix socket paths must fit 107 bytes
    ports = _free_ports(1 + 2 * len(PORT_OPTIONS))
    address = f"127.0.0.1:{ports[0]}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--block"]
    logs = [temp / "head.log", temp / "worker.log"]
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--port", str(ports[0]), "--temp-dir", str(temp),
                             "--include-dashboard", "false", *_ports(ports[1:], 0), *common],
                            stdout=open(logs[0], "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    nodes = [head]

    def status() -> subprocess.CompletedProcess:
        return subprocess.run([str(ray_bin), "status", "--address", address], capture_output=True, text=True)

    try:
        deadline = time.monotonic() + 180
        while status().returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up: {_tail(logs[0])}")
            time.sleep(1)
        nodes.append(subprocess.Popen([str(ray_bin), "start", "--address", address,
                                       *_ports(ports[1 + len(PORT_OPTIONS):], 1), *common],
                                      stdout=open(logs[1], "wb"), stderr=subprocess.STDOUT, start_new_session=True))
        while True:
            done = status()
            if done.stdout.split("Active:")[-1].split("Pending:")[0].count("node_") == 2:
                break
            if nodes[1].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second Ray node did not join: {_tail(logs[1])} {done.stderr[-300:]}")
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(nodes):  # each node's whole process group: raylet, GCS, workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_the_same_sweep_on_a_two_node_ray_cluster_matches_the_local_run(ray_cluster, local_sweep, tmp_path):
    """The local sweep's int8 cells (the fp32 ones add nothing here but time), as Ray tasks on two one-CPU nodes."""
    local = [c for c in local_sweep[2].cells if c["recipe"] == "int8"]
    result = sweep(_write(tmp_path, SWEEP.replace("[recipe.fp32]\n", "")), tmp_path / "out", ray=ray_cluster)
    assert (result.reused, result.ran) == (0, 2)
    nodes = {c["node"]["ray_node"] for c in result.cells}
    assert len(nodes) == 2, nodes  # cells ran on both nodes
    assert [c["key"] for c in result.cells] == [c["key"] for c in local]
    for remote, here in zip(result.cells, local):
        assert remote["status"] == here["status"] == "PASS"
        assert remote["accuracy"] == here["accuracy"]
        assert remote["cosine"] == pytest.approx(here["cosine"], abs=1e-6)
        assert remote["precision"] == here["precision"]
        assert (result.folder / CELLS / remote["key"] / "run" / remote["target"] / "manifest.json").is_file()
    assert "2 node(s)" in json.loads((result.folder / "sweep.json").read_text())["where"]


@pytest.mark.skipif(not os.environ.get("EDGEKIT_SLOW_TESTS"), reason="the full zoo sweep: 36 cells, about 10 min "
                    "locally then on the cluster (EDGEKIT_SLOW_TESTS=1 runs it)")
def test_the_zoo_sweep_on_the_ray_cluster_matches_it_run_locally(ray_cluster, tmp_path):
    """examples/sweep-zoo.toml, the four zoo models x fp32 / int8 / 50% channels + int8 x the three CPU backends."""
    path = Path(__file__).parents[1] / "examples" / "sweep-zoo.toml"
    local = sweep(path, tmp_path / "local")
    remote = sweep(path, tmp_path / "ray", ray=ray_cluster)
    assert remote.ran == len(remote.cells) == 36 and len({c["node"]["ray_node"] for c in remote.cells}) == 2
    for here, there in zip(local.cells, remote.cells):
        assert (here["key"], here["status"], here["accuracy"]) == (there["key"], there["status"], there["accuracy"])
    assert not local.failed
