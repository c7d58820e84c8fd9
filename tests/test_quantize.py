"""Post-training quantization on every backend that has it, and the calibration data rules."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.cli import main
from edgekit.config import load_profile
from edgekit.data.calib import load_calibration
from edgekit.data.preprocess import PRESETS, resolve
from edgekit.data.sources import InputInfo
from edgekit.errors import EdgekitError
from tests.conftest import BACKENDS, write_digits

MNIST = resolve(PRESETS["mnist"], "image", (2, 1, 28, 28))
IMAGE = InputInfo(("image",), ((2, 1, 28, 28),), ("float32",), "mnist", preprocess=MNIST)
FUSION = InputInfo(("image", "tokens"), ((2, 1, 28, 28), (2, 8)), ("float32", "int64"), "mnist-fusion",
                   preprocess=MNIST)
INT8 = [b for b in BACKENDS if (Path(__file__).parents[1] / "targets" / f"{b}-cpu-int8.toml").is_file()]


@pytest.fixture(scope="module")
def int8_runs(tmp_path_factory):
    """zoo:attention quantized static and dynamic on every backend that has int8 profiles."""
    names = [f"{b}-cpu-{mode}" for b in INT8 for mode in ("int8", "int8-dynamic")
             if (Path(__file__).parents[1] / "targets" / f"{b}-cpu-{mode}.toml").is_file()]
    names.append("onnx-cpu-fp32")
    return export("zoo:attention", [load_profile(n) for n in names], tmp_path_factory.mktemp("q") / "run",
                  calib="task:calib")


@pytest.mark.parametrize("backend", INT8)
def test_static_int8_keeps_accuracy_and_shrinks_the_file(int8_runs, backend):
    rows = {r.target: r for r in int8_runs.rows}
    row = rows[f"{backend}-cpu-int8"]
    assert row.stage is None, row.reason
    assert row.precision.compute == "int8" and row.precision.weights == "int8"
    assert int8_runs.torch_accuracy - row.accuracy <= 0.005
    logits = next(s for s in row.outputs if s.name == "logits")
    attention = next(s for s in row.outputs if s.name == "attention")
    assert logits.top1_agreement >= 0.98 and attention.cosine >= 0.99
    manifest = read_manifest(int8_runs.folder / row.target / "manifest.json")
    q = manifest.extra["quantization"]
    assert q["calibration_samples"] == 200 and "calib" in q["calibration"]
    # the record holds what reached the quantizer: each option the profile sets, and nothing it does not apply
    profile = load_profile(row.target)
    assert q["per_channel"] is profile.quantization.per_channel and q["method"] == profile.quantization.method
    assert ("reduce_range" in q) == ("quantization.reduce_range" in profile.explicit)
    weights = manifest.precision.evidence["weight_elements"]
    assert weights["int8"] >= 0.9 * sum(weights.values())  # the weights really are stored in int8
    # files shrink less than 4x on a 90 KB model: graph, scales and (OpenVINO) XML topology stay
    assert sum(f.bytes for f in manifest.files) < 0.6 * q["fp32_bytes"]
    if backend == "openvino":  # NNCF's overflow fix: off where this CPU's int8 products are exact, and recorded
        from edgekit.backends.openvino_session import exact_int8_products

        exact = exact_int8_products()[0]
        assert q["overflow_fix"]["applied"] == ("disable" if exact else "first_layer_only")
        assert manifest.extra["runtime"].get("exact_int8_products", False) is exact


@pytest.mark.parametrize("backend", INT8)
def test_dynamic_int8_needs_no_calibration(int8_runs, backend):
    row = {r.target: r for r in int8_runs.rows}.get(f"{backend}-cpu-int8-dynamic")
    if row is None:
        pytest.skip(f"{backend} has no int8-dynamic profile")
    assert row.stage is None, row.reason
    assert int8_runs.torch_accuracy - row.accuracy <= 0.005
    q = read_manifest(int8_runs.folder / row.target / "manifest.json").extra["quantization"]
    # it is given the calibration data, and records it only where it judged something on it (OpenVINO's group size)
    assert (q["calibration_samples"] > 0) == ("tried" in q.get("dynamic_groups", {}))


def test_int8_without_calibration_says_how(capsys, tmp_path):
    model = Path(__file__).parent / "fixtures" / "user_models.py"
    code = main(["export", f"{model}:build", "--target", "onnx-cpu-int8", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "int8 needs calibration data: pass --calib DATA" in err
    assert not (tmp_path / "r").exists()


def test_a_zoo_model_calibrates_on_its_task_by_default(tmp_path):
    result = export("zoo:cnn", "onnx-cpu-int8", tmp_path / "r")
    assert not result.failed, [r.reason for r in result.rows]
    quant = read_manifest(tmp_path / "r" / "onnx-cpu-int8" / "manifest.json").extra["quantization"]
    assert quant["calibration"] == "mnist calib split" and quant["calibration_samples"] == 200


def test_calibration_from_an_image_folder_is_seeded_and_normalized(tmp_path):
    digits = sorted(write_digits("calib", tmp_path / "png", class_folders=False, limit=12).glob("*.png"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, path in enumerate(digits):
        Image.open(path).resize((56, 56)).save(folder / f"{i}.jpg")  # other size and format: resized
    (folder / "labels.csv").write_text("ignored metadata\n")
    a = load_calibration(folder, IMAGE, samples=8, seed=1)
    b = load_calibration(folder, IMAGE, samples=8, seed=1)
    assert a.inputs["image"].shape == (8, 1, 28, 28) and a.inputs["image"].dtype == np.float32
    assert np.array_equal(a.inputs["image"], b.inputs["image"])
    assert a.inputs["image"].min() < -0.3 and a.inputs["image"].max() > 2.0  # MNIST normalization


def test_a_folder_with_a_calib_split_uses_it(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")  # a folder of splits: calib/ (200 digits) and val/ (1000)
    write_digits("calib", folder / "calib", class_folders=False)
    write_digits("val", folder / "val", class_folders=False)
    data = load_calibration(folder, IMAGE, samples=500)
    assert len(data) == 200 and "calib" in data.origin


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "ok.png")
    (tmp_path / "notes.bin").write_bytes(b"\x00not an image")
    with pytest.raises(EdgekitError, match="notes.bin is not an image"):
        load_calibration(tmp_path, IMAGE, samples=10)


def test_paired_inputs_need_named_arrays_or_the_task_split(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "ok.png")
    with pytest.raises(EdgekitError, match="give a .npz of named arrays or a FILE.py:FACTORY"):
        load_calibration(tmp_path, FUSION, samples=10)
    fusion = load_calibration("task:calib", FUSION, samples=50)
    assert fusion.inputs["tokens"].shape == (50, 8) and fusion.inputs["image"].shape == (50, 1, 28, 28)


def test_augmentation_changes_images_deterministically():
    from edgekit.data.calib import Augment

    plain = load_calibration("task:calib", IMAGE, samples=20)
    aug = load_calibration("task:calib", IMAGE, samples=20, aug=Augment(flip=True, crop=2, brightness=0.2))
    again = load_calibration("task:calib", IMAGE, samples=20, aug=Augment(flip=True, crop=2, brightness=0.2))
    assert not np.array_equal(plain.inputs["image"], aug.inputs["image"])
    assert np.array_equal(aug.inputs["image"], again.inputs["image"])


def _relu6_net():
    """Two convs, each clamped by a ReLU6, whose pre-clamp outputs span far more than [0, 6] (as EfficientNet's
    stem does: [-53, 61])."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU6(), torch.nn.Conv2d(8, 8, 3),
                              torch.nn.ReLU6(), torch.nn.Flatten(), torch.nn.Linear(8 * 24 * 24, 10)).eval()
    with torch.no_grad():
        net[0].weight *= 20
        net[2].weight *= 20
    return net


@pytest.mark.skipif("executorch" not in INT8, reason="the executorch backend is not installed")
def test_executorch_int8_gives_each_relu6_the_clamped_range():
    """XNNPACKQuantizer fuses only relu into a conv's pattern: a ReLU6 took the conv's pre-clamp scale and most of
    its 256 levels fell outside [0, 6]. Each clamp now has its own int8 range, and the logits follow."""
    import torch

    from edgekit.backends.executorch_quant import quantize
    from edgekit.config import QuantRecipe
    from edgekit.data.mnist import read_split
    from edgekit.data.sources import Dataset
    from edgekit.spec import ModelSpec
    from edgekit.validate.metrics import output_stats

    def digits(split: str) -> np.ndarray:
        return (read_split(split).images[:64, None] / np.float32(255)).astype(np.float32)

    net, calib = _relu6_net(), digits("calib")
    spec = ModelSpec(net, (torch.from_numpy(calib[:2]),), ("image",), ("logits",))
    converted, _ = quantize(spec, QuantRecipe(), Dataset({"image": calib}, None, "MNIST calib"))
    clamped = [n for n in converted.graph.nodes if "quantize_per_tensor" in str(n.target)
               and getattr(n.args[0], "target", None) == torch.ops.aten.hardtanh.default]
    assert len(clamped) == 2 and all(n.args[1] <= 6 / 127 * 1.01 for n in clamped)
    val = torch.from_numpy(digits("val"))
    with torch.no_grad():
        stats = output_stats("logits", net(val).numpy(), converted(val).numpy())
    assert stats.sqnr_db > 25, stats
