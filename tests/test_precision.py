"""The precision manifest says what each runtime really computes in, read back from the runtime."""
from pathlib import Path

import pytest

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.cli import main
from edgekit.config import known_profiles, load_profile, parse_profile
from edgekit.validate.gates import Status

TARGETS = Path(__file__).parents[1] / "targets"
OPENVINO_DEFAULTS = """
name = "openvino-cpu-defaults"
backend = "openvino"
precision = "fp32"
[runtime]
device = "CPU"
"""


@pytest.fixture(scope="module")
def cnn_variants(tmp_path_factory):
    """zoo:cnn under profiles that change precision or layout, exported once."""
    folder = tmp_path_factory.mktemp("variants")
    names = ["openvino-cpu-fp32", "openvino-cpu-fp16", "tflite-cpu-fp32", "tflite-cpu-fp16", "rpi4-tflite-fp32",
             "openvino-intel-igpu-fp16"]
    profiles = [parse_profile(OPENVINO_DEFAULTS)] + [load_profile(n) for n in names]
    result = export("zoo:cnn", profiles, folder / "run")
    return result, {row.target: row for row in result.rows}


def manifest_of(result, target):
    return read_manifest(result.folder / target / "manifest.json")


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_reports_the_precision_it_ran_in(cnn_variants):
    """bf16 where the CPU has it and the profile leaves the default; f32 when the profile asks for f32."""
    result, rows = cnn_variants
    default = manifest_of(result, "openvino-cpu-defaults").precision
    explicit = manifest_of(result, "openvino-cpu-fp32").precision
    assert default.compute == ("bfloat16" if cpu_has_bf16() else "float32")
    assert default.evidence["inference_precision_hint"] == default.compute
    assert explicit.compute == "float32" and explicit.evidence["inference_precision_hint"] == "float32"
    assert sum(explicit.evidence["executed_layer_precisions"].values()) > 0
    assert default.weights == "float16" and explicit.weights == "float32"  # save_model's fp16 default
    assert any("INFERENCE_PRECISION_HINT left at the runtime default" in w for w in default.warnings)
    assert any("compress_weights_to_fp16 left at OpenVINO's default" in w for w in default.warnings)
    assert explicit.warnings == ()
    assert rows["openvino-cpu-defaults"].status is Status.WARN  # visible in the validation output
    assert rows["openvino-cpu-fp32"].status is Status.PASS


def test_fp16_profiles_store_half_weights_and_say_where_compute_stays_float32(cnn_variants):
    result, rows = cnn_variants
    for target, fp32_target in (("tflite-cpu-fp16", "tflite-cpu-fp32"), ("openvino-cpu-fp16", "openvino-cpu-fp32")):
        fp16, fp32 = manifest_of(result, target), manifest_of(result, fp32_target)
        assert fp16.precision.weights == "float16"
        size16 = sum(f.bytes for f in fp16.files)
        size32 = sum(f.bytes for f in fp32.files)
        assert size16 < 0.7 * size32  # weights halve; graph and signatures do not
        if fp16.precision.compute != "float16":
            assert any("computes in" in w for w in fp16.precision.warnings)
        row = rows[target]
        assert row.stage is None and row.outputs[0].max_abs_error < 1e-2
        assert row.accuracy == pytest.approx(result.torch_accuracy, abs=0.003)


def test_tflite_nhwc_profile(cnn_variants):
    result, rows = cnn_variants
    manifest = manifest_of(result, "rpi4-tflite-fp32")
    assert manifest.layout == "NHWC"
    assert manifest.inputs[0].shape == ("batch", 28, 28, 1)
    assert manifest.batch_sizes == (1,)
    assert rows["rpi4-tflite-fp32"].status is Status.PASS
    assert rows["rpi4-tflite-fp32"].outputs[0].max_abs_error < 1e-4


def test_device_missing_here_fails_at_load_with_the_reason(cnn_variants):
    result, rows = cnn_variants
    row = rows["openvino-intel-igpu-fp16"]
    assert row.stage.value == "LOAD" and "device 'GPU' is not available here" in row.reason
    assert (result.folder / "openvino-intel-igpu-fp16" / "model.xml").is_file()  # made for the device anyway
    assert manifest_of(result, "openvino-intel-igpu-fp16").precision.compute == "unknown"


@pytest.mark.parametrize("path", sorted(TARGETS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_bundled_profile_parses_and_names_itself(path):
    profile = load_profile(str(path))
    assert profile.name == path.stem
    assert profile.gates.for_output("logits"), "every profile gates its outputs"
    assert profile.gates.task


def test_profiles_command_lists_each_in_one_line(capsys):
    assert main(["profiles"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(known_profiles())
    assert {"onnx-cpu-fp32", "openvino-cpu-fp32", "openvino-cpu-fp16", "tflite-cpu-fp32",
            "tflite-cpu-fp16"} <= set(known_profiles())
