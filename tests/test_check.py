"""`edgekit check`: per target, what will not convert or will not run, named with the module path of the op."""
from pathlib import Path

from edgekit.api import check
from edgekit.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
ALL_FP32 = "onnx-cpu-fp32,openvino-cpu-fp32,tflite-cpu-fp32"


def blocks(stdout: str) -> dict[str, str]:
    """The CLI's output, one block of lines per target (keyed by the target's name)."""
    found: dict[str, str] = {}
    current = None
    for line in stdout.splitlines():
        head = line.split(":")[0]
        if head in ALL_FP32.split(","):
            current = head
        if current:
            found[current] = found.get(current, "") + line + "\n"
    return found


def test_check_names_the_unsupported_op_and_its_module_path(capsys):
    code = main(["check", f"{FIXTURES}/check_models.py:build_det", "--target", ALL_FP32])
    out = blocks(capsys.readouterr().out)
    assert code == 1
    assert out["onnx-cpu-fp32"].startswith("onnx-cpu-fp32: OK")  # the ONNX exporter decomposes det
    for target in ("openvino-cpu-fp32", "tflite-cpu-fp32"):
        assert out[target].startswith(f"{target}: CANNOT WORK")
        assert "error   unsupported op: aten._linalg_det.default at head.solver: " in out[target]


def test_check_names_a_node_without_a_kernel():
    (result,) = check(f"{FIXTURES}/check_models.py:build_bf16", "onnx-cpu-fp32")
    assert not result.ok
    (finding,) = result.findings
    assert (finding.severity, finding.kind, finding.module_path) == ("error", "no kernel", "head.solver.fc")
    assert finding.op.startswith(("MatMul", "Gemm")) and "onnxruntime has no CPU kernel" in finding.message


def test_fusion_checks_ok_on_every_backend_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["check", "zoo:fusion", "--target", ALL_FP32])
    out = blocks(capsys.readouterr().out)
    assert code == 0
    assert out["onnx-cpu-fp32"].startswith("onnx-cpu-fp32: OK") and "error" not in "".join(out.values())
    # LiteRT pins the batch per signature: said, as a warning
    assert "warning pinned dim: the batch of image, tokens is dynamic in torch" in out["tflite-cpu-fp32"]
    assert list(tmp_path.iterdir()) == []  # a pre-flight: no artifact, no run folder, no log


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert main(["check", "zoo:nope", "--target", "onnx-cpu-fp32"]) == 2
    assert main(["check", "zoo:cnn", "--target", "onnx-cpu-fp64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("edgekit: error:")]
    assert len(errors) == 2 and "unknown zoo model 'nope'" in errors[0] and "unknown target" in errors[1]
    assert not any("Traceback" in line for line in err)
