"""The user's data for any model: an image folder (class sub-folders give labels), a .npz of named arrays, a
samples factory, or task:SPLIT; validation says how many samples of what it used; preprocessing is declared once,
checked against the model's input and carried into the run and its bundles."""
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import export
from edgekit.bundle.make import bundle
from edgekit.cli import main
from edgekit.data.tasks import load_task
from edgekit.validate.gates import Status
from tests.conftest import write_digits

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """120 real val digits in class folders 0..9, as an ImageFolder."""
    return write_digits("val", tmp_path_factory.mktemp("digits"), every=8, limit=120)


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """A folder of splits: real digits in calib/ (200) and val/ (1000) image folders."""
    folder = tmp_path_factory.mktemp("splits")
    write_digits("calib", folder / "calib", class_folders=False)
    write_digits("val", folder / "val", class_folders=False)
    return folder


def test_an_image_folder_with_class_folders_validates_with_its_labels(digit_folder, tmp_path):
    result = export("zoo:cnn", "onnx-cpu-fp32", tmp_path / "run", data=str(digit_folder))
    row = result.rows[0]
    assert row.status is Status.PASS and row.samples == 120
    assert row.accuracy == result.torch_accuracy and 0.9 < result.torch_accuracy <= 1.0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"] == {"origin": f"120 images from {digit_folder} (labels from class folders)", "samples": 120,
                           "real": True, "labels": True}
    assert "validated on 120 samples" in (tmp_path / "run" / "report.md").read_text()


def test_a_samples_factory_and_a_npz_feed_a_two_input_model(tmp_path):
    """The fusion model (image + caption tokens): calibrated from a .npz, validated on a samples factory."""
    calib = load_task("mnist-fusion", "calib")
    np.savez(tmp_path / "calib.npz", image=calib.inputs["image"][:64], tokens=calib.inputs["tokens"][:64])
    result = export("zoo:fusion", "onnx-cpu-int8", tmp_path / "run", calib=str(tmp_path / "calib.npz"),
                    data=f"{FIXTURES}/fusion_samples.py:samples")
    row = result.rows[0]
    assert row.stage is None and row.samples == 120
    assert abs(row.accuracy - result.torch_accuracy) <= 0.02
    manifest = json.loads((tmp_path / "run" / "onnx-cpu-int8" / "manifest.json").read_text())
    assert manifest["extra"]["quantization"]["calibration"] == "calib.npz"
    assert manifest["extra"]["quantization"]["calibration_samples"] == 64


def test_without_real_data_the_reports_say_so_and_skip_task_gates(tmp_path):
    result = export(f"{FIXTURES}/user_models.py:build", "onnx-cpu-int8-dynamic", tmp_path / "run")
    assert result.validated_on.startswith("validated on the 4 example inputs only")
    assert not any(c.metric in ("top1_agreement", "accuracy_drop") for c in result.rows[0].checks)
    assert "example inputs only" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["zoo:cnn", "--preprocess", "imagenet"],
     "the preprocessing makes 3x28x28 (RGB) images, but the model's input 'image' is 1x28x28"),
    (["zoo:fusion", "--target", "onnx-cpu-int8", "--calib", "SPLIT_FOLDER"],
     "an image folder feeds a model with one image input; this one has image, tokens"),
    (["zoo:cnn", "--data", "nothing-here"], "--data nothing-here: not an image folder"),
    ([f"{FIXTURES}/user_models.py:build", "--calib", "task:calib", "--target", "onnx-cpu-int8"],
     "--calib task:calib: this model has no built-in task"),
])
def test_data_and_preprocessing_errors_are_one_line(capsys, request, tmp_path, args, message):
    if "SPLIT_FOLDER" in args:  # a folder of splits (calib/, val/): its calib/ split is an image folder
        args = [str(request.getfixturevalue("split_folder")) if a == "SPLIT_FOLDER" else a for a in args]
    target = [] if "--target" in args else ["--target", "onnx-cpu-fp32"]
    code = main(["export", *args, *target, "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.lstrip().startswith("..")]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_the_bundle_carries_the_model_preprocessing(digit_folder, tmp_path):
    run = export("zoo:cnn", "onnx-cpu-fp32", tmp_path / "run", data=str(digit_folder))
    folder = bundle(run.folder, "onnx-cpu-fp32", tmp_path / "b")
    pre = json.loads((folder / "manifest.json").read_text())["preprocess"]
    assert pre["size"] == [28, 28] and pre["grayscale"] and pre["mean"] == [0.1307]


TOKENS = f"{FIXTURES}/user_models.py:build_tokens"


@pytest.mark.parametrize("dynamic, lengths, message", [
    ("input_ids", None, "each entry is INPUT:AXIS"),
    ("tokens:1", None, "dynamic axes name 'tokens', not an input (inputs: input_ids, attention_mask)"),
    ("input_ids:2", None, "dynamic axis input_ids:2: input_ids has axes 1..1 beyond the batch"),
    ("input_ids:1", "8,40", "lengths 8, 40 must lie in 2..12"),
])
def test_bad_dynamic_axes_are_one_line_errors(capsys, tmp_path, dynamic, lengths, message):
    args = ["export", TOKENS, "--target", "onnx-cpu-fp32", "--out", str(tmp_path / "run"), "--dynamic", dynamic]
    code = main(args + (["--lengths", lengths] if lengths else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


def test_dynamic_axes_export_and_validate_at_every_length_on_every_backend(tmp_path):
    from tests.conftest import BACKENDS, fp32_profile

    result = export(TOKENS, ",".join(fp32_profile(b) for b in BACKENDS), tmp_path / "run",
                    dynamic="input_ids:1,attention_mask:1", lengths=(5, 12))
    for row in result.rows:
        assert row.status is not Status.FAIL, (row.target, row.reason)
        assert [o.name for o in row.outputs] == ["output_0", "output_0@5"]
    # a fixed-shape artifact refuses a length it has no signature for, saying which it has
    fixed = [r.target for r in result.rows
             if json.loads((tmp_path / "run" / r.target / "manifest.json").read_text())["batch_sizes"]]
    for target in fixed:
        from edgekit.api import read_manifest
        from edgekit.backends import get_backend

        manifest = read_manifest(tmp_path / "run" / target / "manifest.json")
        session = get_backend(manifest.backend).open(tmp_path / "run" / target, manifest)
        with pytest.raises(ValueError, match="x length 5, 1 x length 12"):
            session.run({"input_ids": np.ones((1, 7), np.int32), "attention_mask": np.ones((1, 7), np.int32)})


def test_output_names_that_clash_with_graph_values_export_on_every_backend(tmp_path):
    from tests.conftest import BACKENDS, fp32_profile

    result = export(f"{FIXTURES}/user_models.py:build_output_named_embedding",
                    ",".join(fp32_profile(b) for b in BACKENDS), tmp_path / "run")
    for row in result.rows:
        assert row.status is Status.PASS, (row.target, row.reason)
        assert [o.name for o in row.outputs] == ["logits", "embedding"]
        manifest = json.loads((tmp_path / "run" / row.target / "manifest.json").read_text())
        assert [o["name"] for o in manifest["outputs"]] == ["logits", "embedding"]
