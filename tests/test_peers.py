"""The int8 peers benchmark (benchmarks/int8_peers.py), run as a user runs it on a zoo model: every backend with a
stock peer makes it from its fp32 artifact, the peer runs on its runtime and is int8 there, and the table has a row
with a finite SQNR for every artifact."""
import json
import math
import subprocess
import sys
from pathlib import Path

from edgekit.artifact import read_manifest
from edgekit.backends import get_backend
from edgekit.errors import EdgekitError

from .conftest import BACKENDS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "int8_peers.py"


def _backends_with_peers() -> list[str]:
    """The registered backends that ship int8 profiles and have a stock peer (not the test plugins, which other
    tests in this process register and which inherit the onnx backend's peer)."""
    found = []
    for name in BACKENDS:
        try:
            backend = get_backend(name)
        except EdgekitError:  # its runtime is not installed here
            continue
        if hasattr(backend, "stock_int8") and (SCRIPT.parents[1] / "targets" / f"{name}-cpu-int8.toml").is_file():
            found.append(name)
    return found


def _page(path: Path, name: str) -> Path:
    path.write_text(f"# A page\n\nbefore\n<!-- peers {name} -->\nold table\n<!-- /peers {name} -->\nafter\n")
    return path


def test_every_stock_peer_runs_is_int8_and_has_its_row(tmp_path):
    backends = _backends_with_peers()
    assert backends, "no installed backend has a stock peer"
    page, readme = _page(tmp_path / "page.md", "zoo-cnn"), _page(tmp_path / "readme.md", "headline")
    subprocess.run([sys.executable, str(SCRIPT), "--source", "zoo:cnn", "--data", "task:val", "--out", str(tmp_path),
                    "--backends", ",".join(backends), "--calib-samples", "16", "--val-samples", "32",
                    "--rounds", "2", "--warmup", "1", "--per-turn", "1", "--page", f"{page}#zoo-cnn",
                    "--headline", f"{readme}#headline"],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads((tmp_path / "peers.json").read_text())
    rows = {a["name"]: a for a in result["artifacts"]}
    table = (tmp_path / "peers.md").read_text()
    for backend in backends:
        for name in (f"{backend}-cpu-fp32", f"{backend}-cpu-int8", f"{backend}-stock-int8"):
            row = rows[name]
            assert row["error"] is None, f"{name}: {row['error']}"
            assert math.isfinite(row["quality"]["sqnr_db"]) and row["quality"]["sqnr_db"] > 10, name
            assert row["timing"]["1"]["median_ms"] > 0, name
            assert f"| {name} |" in table
        peer = read_manifest(tmp_path / "peers" / f"{backend}-stock-int8" / "manifest.json")
        assert peer.target == f"{backend}-stock-int8"
        assert peer.precision.declared == "int8" and peer.precision.compute == "int8", peer.precision
        record = peer.extra["quantization"]
        assert record["tool"].startswith("stock ") and record["tool"].endswith(" defaults")
        assert record["settings"] and record["calibration_samples"] == 16
    assert result["cpu"] and result["commit"] and result["command"].startswith("python benchmarks/int8_peers.py")
    # one command regenerates the results page's section and the README's table, and nothing around them
    written = page.read_text()
    assert written.startswith("# A page\n\nbefore\n<!-- peers zoo-cnn -->\n") and written.endswith(
        "<!-- /peers zoo-cnn -->\nafter\n") and "old table" not in written
    assert written.split("<!-- peers zoo-cnn -->\n")[1].split("<!-- /peers")[0] == table
    headline = readme.read_text()
    for backend in backends:
        assert f"| {backend} | " in headline
    assert "**Command:** `python benchmarks/int8_peers.py" in headline and "old table" not in headline


def test_a_page_without_its_section_is_refused_before_any_work(tmp_path):
    page = _page(tmp_path / "page.md", "other")
    done = subprocess.run([sys.executable, str(SCRIPT), "--source", "zoo:cnn", "--data", "task:val",
                           "--out", str(tmp_path / "out"), "--page", f"{page}#zoo-cnn"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.strip().splitlines()[-1].startswith(f"int8_peers.py: {page} has no '<!-- peers zoo-cnn -->'")
