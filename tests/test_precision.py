"""The precision manifest says what each runtime really computes in, read back from the runtime."""
from pathlib import Path

import pytest

from edgekit.api import export
from edgekit.artifact import read_manifest
from edgekit.cli import main
from edgekit.config import known_profiles, load_profile, parse_profile
from edgekit.validate.gates import Status

TARGETS = Path(__file__).parents[1] / "targets"
OPENVINO_MINIMAL = """
name = "openvino-cpu-minimal"
backend = "openvino"
precision = "fp32"
"""


@pytest.fixture(scope="module")
def cnn_variants(tmp_path_factory):
    """zoo:cnn under profiles that change precision or layout, exported once."""
    folder = tmp_path_factory.mktemp("variants")
    names = ["openvino-cpu-fp32", "openvino-cpu-fp16", "openvino-cpu-bf16", "tflite-cpu-fp32", "tflite-cpu-fp16",
             "tflite-rpi4-fp32", "openvino-intel-igpu-fp16"]
    profiles = [parse_profile(OPENVINO_MINIMAL)] + [load_profile(n) for n in names]
    result = export("zoo:cnn", profiles, folder / "run")
    return result, {row.target: row for row in result.rows}


def manifest_of(result, target):
    return read_manifest(result.folder / target / "manifest.json")


def cpu_capabilities() -> list[str]:
    from edgekit.backends.openvino_session import device_capabilities

    return device_capabilities("CPU")


def test_openvino_fp32_is_float32_whatever_the_profile_leaves_out(cnn_variants):
    """The CPU plugin's own default is bf16 on CPUs with bf16, and save_model's is fp16 weights: a fp32 profile
    gets float32 compute and weights even when it says nothing else."""
    result, rows = cnn_variants
    for target in ("openvino-cpu-minimal", "openvino-cpu-fp32"):
        precision = manifest_of(result, target).precision
        assert precision.compute == "float32" and precision.weights == "float32"
        assert precision.evidence["inference_precision_hint"] == "float32"
        assert set(precision.evidence["executed_layer_precisions"]) <= {"float32", "int32", "int64", "boolean"}
        assert precision.warnings == () and "choice" not in precision.evidence
        assert rows[target].status is Status.PASS


@pytest.mark.parametrize("target, native", [("openvino-cpu-fp16", "FP16"), ("openvino-cpu-bf16", "BF16")])
def test_openvino_half_precisions_never_run_lower_than_asked(cnn_variants, target, native):
    """f16 / bf16 compute only where the CPU has it natively; elsewhere float32, said in the manifest. Which
    branch runs depends on this CPU; the other is covered by test_compute_hint_* over given capabilities."""
    result, rows = cnn_variants
    precision = manifest_of(result, target).precision
    wanted = {"FP16": "float16", "BF16": "bfloat16"}[native]
    if native in cpu_capabilities():
        assert precision.compute == wanted and "choice" not in precision.evidence
    else:
        assert precision.compute == "float32"
        assert f"no native {native} compute" in precision.evidence["choice"]
    assert precision.compute != "bfloat16" or target == "openvino-cpu-bf16"
    assert precision.weights == ("float16" if native == "FP16" else "float32")
    assert rows[target].stage is None and rows[target].status is not Status.FAIL


def test_compute_hint_for_every_kind_of_cpu():
    from edgekit.backends.openvino_session import compute_hint

    avx2 = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]
    avx512_bf16 = ["BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # AMD Zen 4/5, Intel Cooper Lake
    amx_fp16 = ["BF16", "FP16", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # Intel Granite Rapids
    for caps in (avx2, avx512_bf16, amx_fp16):
        for precision in ("fp32", "int8", "int8-dynamic"):
            assert compute_hint(precision, caps) == ("f32", None)
    assert compute_hint("fp16", amx_fp16) == ("f16", None)
    assert compute_hint("bf16", avx512_bf16) == ("bf16", None)
    for precision, caps in (("fp16", avx2), ("fp16", avx512_bf16), ("bf16", avx2), ("bf16", [])):
        hint, note = compute_hint(precision, caps)
        assert hint == "f32" and "computes in float32" in note  # never bf16 for fp16, never lower than asked


def test_int8_products_are_exact_on_vnni_and_arm_and_not_on_plain_x86(cnn_variants, monkeypatch):
    """Whether NNCF's overflow fix is needed is read from the CPU that quantizes; an IR made without it says so, and
    a session on a CPU kind whose int8 products saturate warns instead of running it silently."""
    from edgekit.backends import openvino_session
    from edgekit.backends.openvino_session import OpenVinoSession, exact_int8_products

    assert exact_int8_products("x86_64", {"avx2", "fma"})[0] is False
    assert exact_int8_products("x86_64", {"avx512f", "avx512bw"})[0] is False  # AVX-512 without VNNI saturates too
    assert exact_int8_products("x86_64", {"avx2", "avx_vnni"})[0] is True
    assert exact_int8_products("x86_64", {"avx512_vnni"})[0] is True
    assert exact_int8_products("aarch64", None)[0] is True
    result, _ = cnn_variants
    model = result.folder / "openvino-cpu-fp32" / "model.xml"
    runtime = {**manifest_of(result, "openvino-cpu-fp32").extra["runtime"], "exact_int8_products": True}
    monkeypatch.setattr(openvino_session, "exact_int8_products", lambda: (False, "x86 without VNNI"))
    assert "may saturate" in OpenVinoSession(model, runtime).effective()["note"]
    monkeypatch.setattr(openvino_session, "exact_int8_products", lambda: (True, "x86 with VNNI"))
    assert OpenVinoSession(model, runtime).effective()["note"] is None


def test_fp16_profiles_store_half_weights(cnn_variants):
    result, rows = cnn_variants
    for target, fp32_target in (("tflite-cpu-fp16", "tflite-cpu-fp32"), ("openvino-cpu-fp16", "openvino-cpu-fp32")):
        fp16, fp32 = manifest_of(result, target), manifest_of(result, fp32_target)
        assert fp16.precision.weights == "float16"
        size16 = sum(f.bytes for f in fp16.files)
        size32 = sum(f.bytes for f in fp32.files)
        assert size16 < 0.7 * size32  # weights halve; graph and signatures do not
        row = rows[target]
        assert row.stage is None and row.outputs[0].max_abs_error < 1e-2
        assert row.accuracy == pytest.approx(result.torch_accuracy, abs=0.003)


def test_tflite_nhwc_profile(cnn_variants):
    result, rows = cnn_variants
    manifest = manifest_of(result, "tflite-rpi4-fp32")
    assert manifest.layout == "NHWC"
    assert manifest.inputs[0].shape == ("batch", 28, 28, 1)
    assert manifest.batch_sizes == (1,)
    assert rows["tflite-rpi4-fp32"].status is Status.PASS
    assert rows["tflite-rpi4-fp32"].outputs[0].max_abs_error < 1e-4


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
