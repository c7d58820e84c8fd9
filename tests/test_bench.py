"""The bench: every artifact in its own worker process, timed, checked, and explained; crashes and hangs become
rows; the report files are complete and consistent."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from edgekit.bench.run import TORCH_ROW, Timing, bench
from edgekit.cli import main
from edgekit.cpu import resolve_threads
from edgekit.validate.gates import Status
from edgekit.validate.validate import Stage

from .conftest import BACKENDS, fp32_profile

REPO = Path(__file__).parents[1]


def test_every_backend_row_is_measured_and_passes(benched):
    assert [r.target for r in benched.rows] == [fp32_profile(b) for b in BACKENDS]
    for row in benched.rows:
        assert row.validation.status is Status.PASS, (row.target, row.validation.reason)
        m = row.measurement
        assert m is not None
        for latency in (m.latency_1t, m.latency_all):
            assert latency.runs >= 50 and 0 < latency.median_ms <= latency.p90_ms <= latency.p99_ms
        assert m.throughput.inferences > 0 and m.throughput.per_second > 0
        assert 0 < m.baseline_rss_mb < m.peak_rss_mb
        manifest = json.loads((benched.folder / row.target / "manifest.json").read_text())
        assert m.artifact_bytes == sum(f["bytes"] for f in manifest["files"])
        assert row.validation.accuracy == pytest.approx(benched.torch_accuracy, abs=0.002)
        # the bench session ran with what the manifest records, as the runtime reports it
        assert m.applied["threads"] == m.threads_all == resolve_threads(manifest["extra"]["runtime"]["threads"])
        hint = manifest["precision"]["evidence"].get("inference_precision_hint")
        assert hint is None or m.applied["precision"] == hint == "float32"


def test_workers_for_artifacts_do_not_import_torch(benched):
    """An artifact's worker holds numpy + one runtime; the torch row's worker holds torch. Their peak memory
    shows it (torch alone is > 150 MB resident)."""
    from edgekit.backends import get_backend

    torch_rss = benched.torch.measurement.peak_rss_mb
    free = [r for r in benched.rows
            if "torch" not in getattr(get_backend(r.validation.backend), "runtime_requires", ())]
    assert free and all(r.measurement.peak_rss_mb < torch_rss for r in free)


def test_torch_row_is_the_original_and_the_speed_baseline(benched):
    torch_row = benched.torch
    assert torch_row.target == TORCH_ROW and torch_row.validation.status is Status.PASS
    assert all(s.max_abs_error <= 1e-5 for s in torch_row.validation.outputs)
    report = json.loads((benched.folder / "report.json").read_text())
    for row in report["rows"]:
        m = row["measurement"]
        expected = report["torch"]["measurement"]["latency_1t"]["median_ms"] / m["latency_1t"]["median_ms"]
        assert m["speedup_vs_torch_1t"] == pytest.approx(expected)


def test_attention_and_occlusion_agree_with_torch_in_fp32(benched):
    for row in benched.rows:
        assert row.attention, row.target
        for head in row.attention:
            assert head.js_divergence < 1e-6 and head.topk_overlap == 1.0 and abs(head.entropy_shift) < 1e-4
        assert row.occlusion.cosine > 0.999 and row.occlusion.top_patch_agreement == 1.0
    e = benched.explanation
    assert e.torch_maps.shape == (len(e.plan.samples), *e.plan.grid)
    assert e.saliency.shape == e.images[:, 0].shape
    assert -1.0 <= e.saliency_vs_occlusion <= 1.0


def test_report_files_are_complete(benched):
    folder = benched.folder
    report = json.loads((folder / "report.json").read_text())
    assert report["schema"] == "edgekit.report/4"
    assert [r["target"] for r in report["rows"]] == [r.target for r in benched.rows]
    for row in report["rows"]:  # every artifact row was profiled, or says in one line why not
        profile = row["profile"]
        assert profile["top"] or profile["error"], row["target"]
        assert "\n" not in profile["error"] and row["slower_than_fp32"] is None  # fp32 rows only here
        assert len(profile["top"]) <= 10 and all(op["ms"] > 0 for op in profile["top"])
    assert report["explanation"]["grid"] == list(benched.explanation.plan.grid)
    suite = ET.parse(folder / "junit.xml").getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(benched.rows)
    assert int(suite.get("failures")) == 0
    html = (folder / "report.html").read_text()
    assert all(f'id="row-{r.target}"' in html for r in benched.rows)
    assert html.count("data:image/png;base64,") == 3  # attention over the image, bars per class, occlusion
    md = (folder / "report.md").read_text()
    assert all(r.target in md for r in benched.rows) and "JS divergence" in md
    assert "## Top layers by time" in md and "<h2>Top layers by time</h2>" in html
    assert all(f"### {r.target}\n" in md for r in benched.rows)


def test_crashing_and_hanging_workers_become_rows(zoo_run, tmp_path, monkeypatch):
    """Two extra targets whose runtime aborts the process / never answers: CRASH and TIMEOUT rows, the others
    complete and pass."""
    run = tmp_path / "run"
    shutil.copytree(zoo_run("cnn").folder, run)
    source = run / fp32_profile("onnx")
    for backend in ("crashing", "hanging"):
        target = run / f"onnx-{backend}"
        shutil.copytree(source, target)
        manifest = json.loads((target / "manifest.json").read_text())
        (target / "manifest.json").write_text(json.dumps({**manifest, "backend": backend, "target": target.name}))
        profile = (target / "profile.toml").read_text().replace(f'name = "{source.name}"', f'name = "{target.name}"')
        (target / "profile.toml").write_text(profile.replace('backend = "onnx"', f'backend = "{backend}"'))
    meta = json.loads((run / "run.json").read_text())
    # one real row beside the two faulty ones (every backend's rows are benched by the test above)
    meta["targets"] = ["onnx-crashing", "onnx-hanging", fp32_profile("onnx")]
    (run / "run.json").write_text(json.dumps(meta))
    monkeypatch.setenv("EDGEKIT_PLUGINS", "tests.plugins")
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = bench(run, timing=Timing(min_runs=20, min_seconds=0.05, throughput_seconds=0.1, timeout=12),
                   explain=False, torch_row=False)
    rows = {r.target: r.validation for r in result.rows}
    assert rows["onnx-crashing"].stage is Stage.CRASH and "SIGABRT" in rows["onnx-crashing"].reason
    assert rows["onnx-hanging"].stage is Stage.TIMEOUT and "12 s" in rows["onnx-hanging"].reason
    assert rows[fp32_profile("onnx")].status is Status.PASS
    assert result.failed
    suite = ET.parse(run / "junit.xml").getroot()
    failures = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert failures["onnx-crashing"].get("type") == "CRASH" and failures["onnx-hanging"].get("type") == "TIMEOUT"
    # per-stage totals, typed from the worker's answer on this side of the process boundary
    totals = {p.get("name"): int(p.get("value")) for p in suite.iter("property")}
    assert totals["edgekit.total.CRASH"] == 1 and totals["edgekit.total.TIMEOUT"] == 1
    assert totals["edgekit.total.PASS"] + totals["edgekit.total.WARN"] == 1
    report = json.loads((run / "report.json").read_text())
    assert report["totals"] == {k.removeprefix("edgekit.total."): v for k, v in totals.items()}


def test_cli_bench_exits_1_when_a_gate_fails(zoo_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(zoo_run("cnn").folder, run)
    profile = run / fp32_profile("onnx") / "profile.toml"
    text = profile.read_text()
    assert "max_rel_error" in text
    lines = [ln if not ln.strip().startswith("max_rel_error") else "max_rel_error = { warn = 1e-12, fail = 1e-11 }"
             for ln in text.splitlines()]
    profile.write_text("\n".join(lines) + "\n")
    assert main(["bench", str(run), "--quick", "--no-explain"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "MISMATCH" in out


def test_cli_bench_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]


def test_export_survives_a_runtime_that_aborts(tmp_path, monkeypatch):
    """export validates every artifact in a worker too: a backend that aborts the process when it loads a model
    becomes a CRASH row of the run; the other target is exported and passes."""
    from edgekit.api import export
    from edgekit.config import load_profile, parse_profile

    monkeypatch.setenv("EDGEKIT_PLUGINS", "tests.plugins")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    onnx = load_profile(fp32_profile("onnx"))
    crashing = parse_profile(onnx.text.replace('name = "onnx-cpu-fp32"', 'name = "crashing-fp32"')
                             .replace('backend = "onnx"', 'backend = "crashing"'))
    run = export("zoo:cnn", [crashing, onnx], tmp_path / "run")
    rows = {r.target: r for r in run.rows}
    assert rows["crashing-fp32"].stage is Stage.CRASH and "SIGABRT" in rows["crashing-fp32"].reason
    assert rows["onnx-cpu-fp32"].status is Status.PASS and run.failed


def test_torch_row_of_a_compressed_run_is_the_original(tmp_path):
    """After pruning, the reference is the pruned model; the torch row is still the original (the baseline the
    issue asks for), so it is not gated on matching the pruned outputs."""
    from edgekit.api import export
    from edgekit.compress.recipe import CompressionRecipe
    from edgekit.config import load_profile

    run = export("zoo:cnn", [load_profile(fp32_profile("onnx"))], tmp_path / "run",
                 compression=CompressionRecipe.parse("channels:0.5", "finetune", 1))
    result = bench(run.folder, timing=Timing(min_runs=20, min_seconds=0.05, throughput_seconds=0.1), explain=False)
    torch_row = result.torch.validation
    assert torch_row.status is Status.PASS and "before compression" in torch_row.warnings[0]
    assert torch_row.accuracy == pytest.approx(0.985, abs=0.002)  # the original's, not the pruned one's
    assert result.rows[0].validation.status is Status.PASS
    assert result.torch.measurement.artifact_bytes > result.rows[0].measurement.artifact_bytes


def _planted_row(target: str, backend: str, precision: str, median_ms: float, profile=None):
    """A bench row with an explicit measurement (a report unit test: the numbers are planted, not timed)."""
    from edgekit.artifact import Precision
    from edgekit.bench.measurement import Measurement
    from edgekit.bench.timing import Latency
    from edgekit.results import BenchRow, Validation

    latency = Latency(runs=100, warmup=10, first_ms=2 * median_ms, median_ms=median_ms, p90_ms=1.1 * median_ms,
                      p99_ms=1.2 * median_ms, mean_ms=median_ms, std_ms=0.01)
    compute = "float32" if precision == "fp32" else "int8"
    validation = Validation(target, backend, Status.PASS, samples=10, precision=Precision(precision, compute, compute))
    return BenchRow(validation, Measurement(1.0, latency, latency, 2, None, 200.0, 100.0, 1000, {}, profile))


def test_report_flags_quantized_rows_slower_than_their_fp32_row(tmp_path):
    """Planted rows: an int8 row 1.5x slower than the fp32 row of its backend is flagged (report.json, .md, .html);
    a faster int8-dynamic row, a slower row of a backend without an fp32 row and the fp32 rows are not. The top
    layers section lists a planted profile and says in one line why another row has none."""
    from edgekit.bench.measurement import OpProfile, OpTime
    from edgekit.report.render import write_bench_reports
    from edgekit.results import BenchResult

    ops = tuple(OpTime(f"op{i}", "Conv" if i % 2 else "Relu", f"block{i}" if i else None, 0.1 * (i + 1))
                for i in range(12))
    rows = (_planted_row("a-fp32", "a", "fp32", 1.0, OpProfile(ops, 50, 1)),
            _planted_row("a-int8", "a", "int8", 1.5, OpProfile((), 50, 1, "the profiler failed: planted")),
            _planted_row("a-int8-dynamic", "a", "int8-dynamic", 0.8),
            _planted_row("b-int8", "b", "int8", 9.0),
            _planted_row("c-fp32", "c", "fp32", 2.0))
    write_bench_reports(BenchResult("zoo:planted", tmp_path, None, None, None, rows), plots=False)

    report = json.loads((tmp_path / "report.json").read_text())
    flags = {r["target"]: r["slower_than_fp32"] for r in report["rows"]}
    assert flags["a-int8"]["fp32_target"] == "a-fp32" and flags["a-int8"]["ratio"] == pytest.approx(1.5)
    assert [t for t, f in flags.items() if f] == ["a-int8"]
    profile = report["rows"][0]["profile"]
    assert [op["name"] for op in profile["top"]] == [f"op{i}" for i in range(11, 1, -1)]  # the top 10, by time
    assert profile["ops"] == 12 and profile["total_ms"] == pytest.approx(7.8)
    assert profile["top"][0]["percent"] == pytest.approx(100 * 1.2 / 7.8)
    assert "profile" not in report["rows"][0]["measurement"]
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    for text in (md, html):
        assert "slower than fp32: 1.50x the median of a-fp32" in text
        assert "b-int8: slower" not in text and "a-int8-dynamic: slower" not in text
        assert "Top layers by time" in text and "not profiled: the profiler failed: planted" in text
    assert "| op11 | Conv | block11 | 1.2000 | 15.4% |" in md and "| op1 |" not in md


def test_report_says_how_near_a_tie_each_top1_flip_was(tmp_path):
    """A row whose logits flip on one near-tie sample: report.json carries torch's lead there and its median lead,
    and report.md's note says it in one phrase."""
    from dataclasses import replace

    from edgekit.report.render import write_bench_reports
    from edgekit.results import BenchResult
    from edgekit.validate.metrics import output_stats

    reference = np.array([[5.0, 2.0, 0.0], [0.0, 4.0, 1.0], [1.0, 1.1, 0.0]], dtype=np.float32)
    flipped = reference.copy()
    flipped[2] = (1.2, 1.0, 0.0)
    row = _planted_row("a-int8", "a", "int8", 1.0)
    row = replace(row, validation=replace(row.validation, outputs=(output_stats("logits", reference, flipped),)))
    write_bench_reports(BenchResult("zoo:planted", tmp_path, None, None, None, (row,)), plots=False)
    stats = json.loads((tmp_path / "report.json").read_text())["rows"][0]["outputs"][0]
    assert stats["flip_leads"] == pytest.approx([0.1]) and stats["median_lead"] == pytest.approx(3.0)
    assert "logits: 1 top-1 flip(s) where torch led by 0.1 (its median lead 3)" in (tmp_path / "report.md").read_text()
