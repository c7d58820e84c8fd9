"""Bad input: a clear one-line error, exit code 2, and nothing half-written."""
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(capsys, *args):
    code = main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    return code, "\n".join(line for line in lines if not line.lstrip().startswith(".. "))  # drop progress lines


@pytest.mark.parametrize("source, message", [
    ("zoo:nope", "unknown zoo model 'nope'"),
    ("missing/model.py:build", "model file missing/model.py does not exist"),
    (f"{FIXTURES}/user_models.py:no_such_factory", "has no factory function 'no_such_factory'"),
    (f"{FIXTURES}/user_models.py:not_a_model", "must return a ModelSpec or (module, example_inputs)"),
    (f"{FIXTURES}/user_models.py:build_wrong_shape", "the model does not run on its example inputs (features 4x7"),
    ("no_such_package.models:build", "cannot import module 'no_such_package.models'"),
    ("model_without_factory", "must be zoo:NAME, FILE.py:FACTORY"),
    ("missing.pt2", "model file missing.pt2 does not exist"),
    (f"{FIXTURES}/user_models.py:exits", "called sys.exit(0); a factory returns its model"),
])
def test_bad_source(capsys, tmp_path, source, message):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "export", source, "--target", "onnx-cpu-fp32", "--out", str(out))
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("toml, message", [
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\nspeed = 3\n', "unknown key 'speed'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp64"\n', "precision 'fp64' is not one of"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[runtime]\nthreds = 2\n', "unknown key 'threds'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[gates.outputs."*"]\nmax_abs = { warn = 1, fail = 2 }\n',
     "unknown key 'max_abs'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[gates.task]\ntop1_agreement = { warn = 0.9, fail = 0.99 }\n',
     "beyond fail"),
    ('name = "x"\nbackend = "onnx"\n', "missing the string key 'precision'"),
    ('name = "x\n', "not valid TOML"),
    # options a backend would not apply are refused, not recorded as applied
    ('name = "x"\nbackend = "openvino"\nprecision = "int8"\n[quantization]\nreduce_range = true\n',
     "[quantization] reduce_range is not applied by the openvino backend"),
    ('name = "x"\nbackend = "openvino"\nprecision = "int8-dynamic"\n[quantization]\nper_channel = false\n',
     "[quantization] per_channel applies to int8 on the openvino backend, not to int8-dynamic"),
    ('name = "x"\nbackend = "tflite"\nprecision = "int8"\n[quantization]\nmethod = "entropy"\n',
     "[quantization] method = 'entropy': the tflite backend supports 'minmax'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[quantization]\nsamples = 10\n',
     "[quantization] samples applies to int8 on the onnx backend, not to fp32"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[runtime]\nlayout = "NHWC"\n',
     "[runtime] layout = 'NHWC': the onnx backend supports 'NCHW'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[runtime]\nbatch_sizes = [1]\n',
     "[runtime] batch_sizes is not applied by the onnx backend"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp16"\n', "the onnx backend cannot make fp16"),
    ('name = "x"\nbackend = "openvino"\nprecision = "fp32"\n[runtime]\nprecision_hint = "f16"\n',
     "precision_hint is no longer a profile key"),
    # wrong value types and ranges: the schema is the dataclasses' field types plus ranges
    ('name = "x"\nbackend = "tflite"\nprecision = "fp32"\n[runtime]\nbatch_sizes = ["eight"]\n',
     "batch_sizes must be an integer, not 'eight'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[runtime]\nthreads = -1\n',
     "threads = -1 is out of range (0..4096)"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[runtime]\nthreads = "four"\n',
     "threads must be an integer, not 'four'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[validation]\nsamples = "many"\n',
     "samples must be an integer, not 'many'"),
    ('name = "x"\nbackend = "onnx"\nprecision = "int8"\n[quantization]\nper_channel = "yes"\n',
     "per_channel must be true or false"),
    ('name = "x"\nbackend = "onnx"\nprecision = "int8"\n[quantization]\nkeep_float = ["fc("]\n',
     "keep_float pattern 'fc(' is not a regex"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\nruntime = 3\n', "[runtime] must be a table"),
    ('name = "x"\nbackend = "onnx"\nprecision = "fp32"\n[gates]\noutputs = 1\n', "outputs: must be a table"),
    ('name = "x"\nbackend = "tensorrt"\nprecision = "fp32"\n', "unknown backend 'tensorrt'; registered:"),
])
def test_bad_profile(capsys, tmp_path, toml, message):
    profile = tmp_path / "mine.toml"
    profile.write_text(toml)
    code, err = run_cli(capsys, "export", "zoo:cnn", "--target", str(profile), "--out", str(tmp_path / "run"))
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_unknown_target_name(capsys, tmp_path):
    code, err = run_cli(capsys, "export", "zoo:cnn", "--target", "onnx-cpu-fp64", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown target 'onnx-cpu-fp64'" in err


def test_refuses_to_overwrite_a_foreign_folder(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, err = run_cli(capsys, "export", "zoo:cnn", "--target", "onnx-cpu-fp32", "--out", str(tmp_path))
    assert code == 2 and "not an edgekit run folder" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_validate_rejects_a_non_run_folder(capsys, tmp_path):
    code, err = run_cli(capsys, "validate", str(tmp_path))
    assert code == 2 and "is not a run folder" in err


def test_real_process_exit_code(tmp_path):
    """The installed console entry point, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "edgekit", "export", "zoo:nope", "--target", "onnx-cpu-fp32",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1:] == ["edgekit: error: unknown zoo model 'nope'; the zoo has: "
                                                "cnn, attention, fusion, transformer"]
    assert "Traceback" not in proc.stderr


def test_a_reader_that_stops_early_is_no_error():
    """`edgekit profiles | head -1`: the pipe closes under edgekit; it stops quietly, as Unix tools do."""
    proc = subprocess.run(f"{sys.executable} -m edgekit profiles | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""


def test_version_and_profile_show(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("edgekit ")
    assert main(["profiles", "show", "onnx-cpu-int8"]) == 0
    assert 'name = "onnx-cpu-int8"' in capsys.readouterr().out
    code, err = run_cli(capsys, "profiles", "show", "no-such-profile")
    assert code == 2 and err.startswith("edgekit: error: unknown target 'no-such-profile'")


def test_a_renamed_profile_still_loads_with_a_notice(capsys):
    from edgekit.config import load_profile

    assert load_profile("rpi4-tflite-int8").name == "tflite-rpi4-int8"
    assert capsys.readouterr().err.strip() == ("edgekit: warning: target 'rpi4-tflite-int8' is now called "
                                               "'tflite-rpi4-int8'; the old name will be removed")
