"""edgekit fuzz on a small seeded subset: every target classified, no silent mismatch, reproducible models, and a
planted wrong artifact caught by the independent check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.fuzz import judge, models
from edgekit.fuzz.run import target_names
from edgekit.results import Stage, Validation
from edgekit.validate.gates import Status

MODELS, SEED = 1, 0  # about 30 s a model on 2 cores (four backends): the suite stays short


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The CI subset, fp32 only, run folders kept for the planted-mismatch test."""
    out = tmp_path_factory.mktemp("fuzz")
    code = main(["fuzz", "--models", str(MODELS), "--seed", str(SEED), "--out", str(out), "--keep"])
    return code, json.loads((out / "fuzz.json").read_text()), out


def test_every_target_gets_a_classified_outcome(small_run):
    _, report, _ = small_run
    assert len(report["records"]) == MODELS
    assert report["targets"] == target_names(False) and report["targets"]
    for record in report["records"]:
        assert set(record["targets"]) == set(report["targets"])
        for outcome in record["targets"].values():
            assert outcome["outcome"] in judge.OUTCOMES
            if outcome["outcome"] not in ("PASS", "WARN"):
                assert outcome["reason"]
    assert sum(sum(row.values()) for row in report["counts"].values()) == MODELS * len(report["targets"])


def test_no_silent_mismatch(small_run):
    code, report, _ = small_run
    assert report["silent"] == 0 and code == 0
    checked = [o for r in report["records"] for o in r["targets"].values() if o["outcome"] in ("PASS", "WARN")]
    assert checked and all(o["check"] for o in checked)  # the independent check really ran on them


def test_same_seed_same_models(small_run):
    _, report, _ = small_run
    for record in report["records"]:
        assert models.build(SEED, record["index"]).summary()["blocks"] == record["blocks"]
    first, again = models.build(SEED, 1), models.build(SEED, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first.module.state_dict().values(),
                                                     again.module.state_dict().values()))
    assert models.build(SEED + 1, 1).summary() != first.summary()


def test_planted_wrong_artifact_is_a_silent_mismatch(small_run):
    """Real outputs of a kept artifact, then the same outputs made wrong: only the wrong ones are SILENT."""
    _, report, out = small_run
    index = report["records"][0]["index"]
    target = next(t for t, o in report["records"][0]["targets"].items() if o["outcome"] in ("PASS", "WARN"))
    built = models.build(SEED, index)
    fresh = models.random_inputs(built.inputs, 16, np.random.default_rng(123))
    expected = models.torch_outputs(built.module, fresh)
    actual, precision = judge.run_artifact(out / "work" / f"model_{index}" / "run" / target, fresh)
    passed = Validation(target, target.split("-")[0], Status.PASS)

    assert judge.classify(passed, expected, actual, precision).outcome == "PASS"
    (name, value), = actual.items()
    scale = max(1.0, float(np.abs(expected["output_0"]).max()))
    off = value.copy()
    off.flat[3] += 0.01 * scale  # one value off by 1% of the output's scale, ten times the criterion
    assert judge.classify(passed, expected, {name: off}, precision).outcome == "SILENT"
    nan = value.copy()
    nan.flat[0] = np.nan
    assert "NaN" in judge.classify(passed, expected, {name: nan}, precision).reason
    noise = np.random.default_rng(0).normal(size=value.shape) * np.abs(value).max()
    assert judge.classify(passed, expected, {name: value + 0.01 * noise}, "int8").outcome == "PASS"
    assert judge.classify(passed, expected, {name: value + 2 * noise}, "int8").outcome == "SILENT"
    wrong_shape = {name: value[:, :1]}
    assert judge.classify(passed, expected, wrong_shape, precision).outcome == "SILENT"


def test_a_failed_row_keeps_its_stage():
    row = Validation("onnx-cpu-fp32", "onnx", Status.FAIL, Stage.RUN, "shape mismatch")
    assert judge.classify(row, None, None, "fp32") == judge.Outcome("RUN", "shape mismatch")
    broken = Validation("onnx-cpu-fp32", "onnx", Status.PASS)
    assert judge.classify(broken, None, None, "fp32", check_error="ValueError: batch 32").outcome == "SILENT"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_a_model_past_its_timeout_is_killed_and_its_targets_are_timeouts(tmp_path):
    code = main(["fuzz", "--models", "1", "--seed", str(SEED), "--out", str(tmp_path), "--model-timeout", "2"])
    report = json.loads((tmp_path / "fuzz.json").read_text())
    outcomes = report["records"][0]["targets"]
    assert code == 0 and set(outcomes) == set(target_names(False))
    assert all(o["outcome"] == "TIMEOUT" and "more than 2 s" in o["reason"] for o in outcomes.values())
    assert not _processes_mentioning(str(tmp_path))  # the model's process group is gone, workers included


def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["fuzz", "--models", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("must be at least 1 and --model-timeout above 0")
