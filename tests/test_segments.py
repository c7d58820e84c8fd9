"""Pipeline-parallel segments: zoo:fusion split at module boundaries, each segment on its own runtime, the chain
validated end to end against torch and benched as a pipeline against the unsplit model (structure only: speed
is measured, never asserted)."""
import json
import subprocess
import sys

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.reference import load_run_reference
from edgekit.results import Timing
from edgekit.runfolder import RunFolder
from edgekit.segments.export import export_segments
from edgekit.segments.record import SEGMENTS_FILE, read_segments
from edgekit.segments.split import parse_segments, split
from edgekit.source import load_source
from edgekit.validate.gates import Status

# two different runtimes, the fastest pair to export (a LiteRT conversion of zoo:fusion takes ~20 s here)
TARGETS = ("openvino-cpu-fp32", "onnx-cpu-fp32")
FAST = Timing(min_runs=20, min_seconds=0.05, throughput_seconds=0.1, timeout=120.0)


@pytest.fixture(scope="module")
def fusion_split(tmp_path_factory):
    """zoo:fusion in 2 segments (cuts balanced by FLOPs), OpenVINO then onnxruntime, with the unsplit baseline."""
    out = tmp_path_factory.mktemp("segments") / "fusion-seg"
    return export_segments("zoo:fusion", "2", ",".join(TARGETS), out, timing=FAST)


@pytest.fixture(scope="module")
def fusion_spec():
    return load_source("zoo:fusion")


def test_two_segments_on_two_runtimes_pass_end_to_end(fusion_split):
    r = fusion_split
    assert [s.validation.target for s in r.segments] == list(TARGETS)
    assert [s.validation.backend for s in r.segments] == ["openvino", "onnx"]
    assert r.chain.stage is None and r.chain.status is not Status.FAIL, r.chain.reason
    assert r.chain.backend == "openvino+onnx"
    # the model's two outputs against torch, gated by the fp32 profiles' gates
    assert {s.name for s in r.chain.outputs} == {"logits", "attention"}
    gated = {(c.subject, c.metric) for c in r.chain.checks}
    assert {("logits", "max_rel_error"), ("attention", "cosine"), ("task", "accuracy_drop")} <= gated
    assert all(s.max_rel_error < 1e-4 and s.cosine > 0.99999 for s in r.chain.outputs)
    assert r.chain.accuracy == pytest.approx(r.chain.torch_accuracy, abs=1e-3)
    # each segment alone, fed torch's values at its cuts, passes too
    assert all(s.validation.status is not Status.FAIL for s in r.segments)
    assert not r.failed


def test_cut_tensors_are_named_and_carried(fusion_split):
    r = fusion_split
    first, second = r.segments
    assert first.inputs == ("image",) and second.outputs == ("logits", "attention")
    cut = set(first.outputs)
    assert cut and cut <= set(second.inputs)
    tensors = {t.name: t for t in r.tensors}
    for name in cut:  # a cut tensor says who made it, who reads it, and its per-sample shape
        assert tensors[name].produced_by == 0 and tensors[name].used_by == (1,)
        assert tensors[name].shape[0] == "batch" and tensors[name].dtype == "float32"
    # the image branch's sequence, named after the variable of the forward that holds it
    assert "image_seq" in cut
    # tokens are read by segment 1 only: the runner carries them past segment 0
    assert tensors["tokens"].produced_by == -1 and tensors["tokens"].used_by == (1,)
    record, results = read_segments(r.folder)
    assert record.stages[0].carried == ("tokens",)
    assert record.stages[1].inputs == second.inputs and record.stages[1].target == TARGETS[1]
    assert [e.name for e in r.cut_errors] == list(first.outputs)
    assert all(e.cosine > 0.99999 for e in r.cut_errors)
    assert results["validation"]["status"] in ("PASS", "WARN")


def test_run_folder_is_a_run_of_the_unsplit_model_plus_one_per_segment(fusion_split):
    folder = fusion_split.folder
    run = RunFolder(folder)
    assert run.record().targets == TARGETS  # the baselines: the whole model on each segment's runtime
    assert [v.target for v in fusion_split.unsplit] == list(TARGETS)
    assert all(v.status is not Status.FAIL for v in fusion_split.unsplit)
    for i, target in enumerate(TARGETS):
        segment = RunFolder(folder / f"segment{i}")
        assert segment.record().targets == (target,)
        assert segment.has_manifest(target)
        assert (folder / f"segment{i}" / "report.json").is_file()
    assert (folder / "report.json").is_file() and (folder / "segments.md").is_file()
    assert "| end to end | chain |" in (folder / "segments.md").read_text(encoding="utf-8")


def test_pipeline_bench_has_numbers_against_the_unsplit_model(fusion_split):
    p = fusion_split.pipeline
    assert p is not None and p.stage is None, p.reason if p else "not benched"
    assert p.pipeline.per_second > 0 and p.sequential.per_second > 0
    assert p.pipeline.latency_median_ms > 0 and p.pipeline.latency_p90_ms >= p.pipeline.latency_median_ms
    assert len(p.stage_ms) == len(p.stage_alone_ms) == 2 and all(ms > 0 for ms in p.stage_alone_ms)
    assert p.balance >= 1.0 and p.stage_threads >= 1 and p.queue_size >= 1 and p.repeats >= 1
    assert [u.target for u in p.unsplit] == list(TARGETS)
    for u in p.unsplit:
        assert u.profile_threads.per_second > 0 and u.stage_threads.per_second > 0 and u.parallel.per_second > 0
        assert set(p.against(u.target)) == {"profile_threads", "stage_threads", "parallel"}
    raw = json.loads((fusion_split.folder / SEGMENTS_FILE).read_text(encoding="utf-8"))["pipeline"]
    assert raw["pipeline"]["per_second"] == p.pipeline.per_second


def test_a_broken_segment_is_a_row_not_a_crash(fusion_split, tmp_path):
    """The chain runs in a worker: an artifact that no longer matches its manifest (cut short: its size) is a LOAD
    row."""
    import shutil

    from edgekit.segments.export import validate_chain
    from edgekit.segments.worker import PIPELINE_FILE  # noqa: F401 - the worker module imports without torch

    copy = tmp_path / "run"
    shutil.copytree(fusion_split.folder, copy)
    model = next((copy / "segment1" / TARGETS[1]).glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-10])
    run = RunFolder(copy)
    reference = load_run_reference(run)
    spec = load_source("zoo:fusion")
    plan = split(spec, 2)
    from edgekit.config import load_profile

    row, cuts = validate_chain(copy, plan, [load_profile(t) for t in TARGETS], reference, {})
    assert row.status is Status.FAIL and row.stage is not None and row.stage.value == "LOAD"
    assert "segment1" in row.reason and "modified or corrupt" in row.reason
    assert cuts == ()


def test_bundle_chains_the_segments_without_edgekit(fusion_split, tmp_path):
    from edgekit.segments.bundle import bundle_segments

    out = bundle_segments(fusion_split.folder, tmp_path / "bundle")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [s["folder"] for s in manifest["stages"]] == ["segment0", "segment1"]
    assert (out / "segment0" / "manifest.json").is_file() and (out / "segment1" / "run.py").is_file()
    # the runner imports numpy and the runtimes only (neither edgekit nor torch), from anywhere
    code = ("import runpy, sys; sys.argv = ['run.py', '--check']\n"
            "try:\n    runpy.run_path(sys.argv_path, run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print(code, 'edgekit' in sys.modules, 'torch' in sys.modules, file=sys.stderr)")
    code = code.replace("sys.argv_path", repr(str(out / "run.py")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          check=False)
    assert done.stderr.strip().splitlines()[-1] == "0 False False", done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "PASS" and {c["output"] for c in result["checks"]} == {"logits", "attention"}
    # the chain runner and the one artifact runner it runs each segment through are current copies of edgekit's
    from edgekit.segments.bundle import FILES

    assert {"run.py", "edgekit_execute.py", "edgekit_cpu.py", "edgekit_pipeline.py"} <= set(FILES)
    assert [n for n, source in FILES.items() if (out / n).read_bytes() != source.read_bytes()] == []


def test_split_at_named_modules(fusion_spec):
    plan = split(fusion_spec, ("cross_norm", "head"), "zoo:fusion")
    assert [s.begins_at for s in plan.segments] == ["", "cross_norm", "head"]
    assert plan.segments[2].modules == ("head",)
    first, second, third = (s.spec for s in plan.segments)
    assert first.input_names == ("image", "tokens")
    # a module's output is MODULE.out; root-module values take the forward's variable, or the reading module
    assert set(first.output_names) == {"text_encoder.out", "image_seq", "mask", "count"}
    assert set(second.output_names) == {"head.in0", "head.in1", "head.in2", "attention"}
    assert third.input_names == ("head.in0", "head.in1", "head.in2") and third.output_names == ("logits",)
    assert plan.outputs == {"logits": 2, "attention": 1}
    assert plan.dropped(0) == ("image", "tokens")  # read by segment 0 only; all it made, segment 1 reads
    assert "attention" not in plan.dropped(1)  # a model output stays until the end
    assert plan.segments[0].flops > plan.segments[2].flops > 0
    # each segment is a module of its own that runs on its example inputs (batch 2)
    assert all(s.spec.example_inputs[0].shape[0] == 2 for s in plan.segments)


@pytest.mark.parametrize("value, message", [
    ("1", "at least 2 segments"),
    ("0", "at least 2 segments"),
    ("conv 2", "give a count (e.g. 2) or module names"),
    ("head,", "give a count (e.g. 2) or module names"),
    ("head,head", "a module is named twice"),
])
def test_bad_segments_value_is_one_line(value, message):
    with pytest.raises(EdgekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_segments(value)


def test_bad_segments_on_the_command_line_exit_2(capsys, tmp_path):
    out = tmp_path / "run"
    code = main(["export", "zoo:fusion", "--segments", "x y", "--target", "onnx-cpu-fp32", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("edgekit: error: --segments 'x y'") and len(err.splitlines()) == 1
    code = main(["export", "zoo:fusion", "--segments", "3", "--target", "onnx-cpu-fp32,onnx-cpu-fp32",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "makes 3 segments but --target names 2 target(s)" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_modules_that_cannot_be_cut(fusion_spec):
    with pytest.raises(EdgekitError, match="has no module 'nosuch' that runs; its top-level modules: conv1, conv2"):
        split(fusion_spec, ("nosuch",), "zoo:fusion")
    with pytest.raises(EdgekitError, match="conv1 begins the model"):
        split(fusion_spec, ("conv1",), "zoo:fusion")
    with pytest.raises(EdgekitError, match="does not run after the module named before it"):
        split(fusion_spec, ("head", "cross"), "zoo:fusion")
    with pytest.raises(EdgekitError, match="into at most 7 segments"):
        split(fusion_spec, 9, "zoo:fusion")


def test_the_stage_side_imports_no_torch():
    code = ("import sys, edgekit.segments.worker, edgekit.segments.pipeline, edgekit.segments.record; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_edgekit_bench_and_bundle_know_a_segmented_run(fusion_split, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fusion_split.folder, run)
    assert main(["bench", str(run), "--quick", "--no-explain"]) == 0
    out = capsys.readouterr().out
    assert "pipeline" in out.lower()  # the chain's table after the unsplit rows
    assert json.loads((run / SEGMENTS_FILE).read_text(encoding="utf-8"))["pipeline"]["pipeline"]["per_second"] > 0
    assert main(["bundle", str(run), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "run.py").is_file() and (tmp_path / "b" / "segment1" / "manifest.json").is_file()
    assert main(["bundle", str(fusion_split.folder / "segment0"), "--out", str(tmp_path / "c")]) == 2
