"""Model sources: file factories, module factories, and .pt2 archives (never unpickled unless asked)."""
from pathlib import Path

import pytest
import torch

from edgekit.api import export, validate_run
from edgekit.errors import EdgekitError
from edgekit.source import load_source
from edgekit.validate.gates import Status

FIXTURES = Path(__file__).parent / "fixtures"


def test_file_factory_without_task_validates_on_example_inputs(tmp_path):
    result = export(f"{FIXTURES}/user_models.py:build", "onnx-cpu-fp32", tmp_path / "run")
    row = result.rows[0]
    assert row.status is Status.PASS
    assert row.accuracy is None and result.torch_accuracy is None
    assert row.outputs[0].name == "output_0" and row.outputs[0].max_abs_error < 1e-5


def test_dict_outputs_and_a_batch_of_one_export_on_every_backend(tmp_path):
    """Dict outputs (with a nested tuple and a None) are flattened with their keys as names; example inputs of
    batch 1, which torch.export would specialize, are repeated so every backend gets a dynamic batch."""
    from tests.conftest import BACKENDS, fp32_profile

    result = export(f"{FIXTURES}/user_models.py:build_dict_outputs_batch_one",
                    ",".join(fp32_profile(b) for b in BACKENDS), tmp_path / "run")
    assert [r.status for r in result.rows] == [Status.PASS] * len(BACKENDS), [r.reason for r in result.rows]
    assert result.rows[0].samples == 2
    for row in result.rows:
        assert [o.name for o in row.outputs] == ["logits", "hidden_states_0", "hidden_states_1"]


def test_module_factory(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    spec = load_source("user_models:build")
    assert spec.input_names == ("features",)
    assert spec.output_names == ("output_0",)


def test_pt2_is_not_unpickled_by_default(tmp_path):
    spec = load_source(f"{FIXTURES}/user_models.py:build")
    archive = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(spec.module, spec.example_inputs), archive)
    with pytest.raises(EdgekitError, match="loads with pickle; pass --allow-pickle"):
        load_source(str(archive))
    loaded = load_source(str(archive), allow_pickle=True)
    x = spec.example_inputs[0]
    assert torch.allclose(loaded.module(x), spec.module(x))


def test_validate_run_again_and_detect_tampering(zoo_run, tmp_path):
    import shutil

    run = zoo_run("cnn")
    copy = tmp_path / "cnn"
    shutil.copytree(run.folder, copy)
    again = validate_run(copy)
    assert [r.status for r in again.rows] == [r.status for r in run.rows]
    assert again.rows[0].outputs[0].max_abs_error == pytest.approx(run.rows[0].outputs[0].max_abs_error)
    model = next(copy.glob("onnx-cpu-fp32/model.onnx"))
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(EdgekitError, match="bytes, its manifest says .* \\(modified or corrupt\\)"):
        validate_run(copy)
    model.write_bytes(model.read_bytes()[:-1][::-1])  # the same size, other bytes
    with pytest.raises(EdgekitError, match="does not match its manifest hash"):
        validate_run(copy)


def test_failing_target_does_not_stop_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_PLUGINS", "tests.plugins")  # a registered backend whose converter fails
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad-backend"\nbackend = "failing"\nprecision = "fp32"\n')
    result = export(f"{FIXTURES}/user_models.py:build", f"{bad},onnx-cpu-fp32", tmp_path / "run")
    assert [r.target for r in result.rows] == ["bad-backend", "onnx-cpu-fp32"]
    assert result.rows[0].stage.value == "EXPORT" and "aten::mystery" in result.rows[0].reason
    # the failed target keeps small diagnostics only, not the half-written model
    assert sorted(p.name for p in (tmp_path / "run" / "bad-backend").iterdir()) == ["profile.toml", "validation.json"]
    assert result.rows[1].status is Status.PASS
    assert result.failed
