"""The run folder is typed: run.json is read through one class that names the file and the field for any
malformation, so validate, bench and bundle give one line and exit 2, never a traceback."""
import json
import shutil

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.runfolder import RunFolder, RunRecord


@pytest.fixture
def run(zoo_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(zoo_run("cnn").folder, folder)
    return folder


def test_the_record_reads_back_as_written(run):
    record = RunFolder(run).record()
    assert record.source == "zoo:cnn" and record.inputs == ("image",) and record.task == "mnist"
    assert record == RunRecord.from_json(json.loads((run / "run.json").read_text()), "run.json")


@pytest.mark.parametrize("text, message", [
    ("{}", "schema None is not 'edgekit.run/1'"),
    ("[1, 2]", "not a run record"),
    ("{not json", "not valid JSON"),
    ('{"schema": "edgekit.run/1", "source": "zoo:cnn"}', "missing inputs, outputs, targets"),
    ('{"schema": "edgekit.run/1", "source": "zoo:cnn", "inputs": "image", "outputs": [], "targets": []}',
     "inputs must be a list of str"),
    ('{"schema": "edgekit.run/1", "source": 7, "inputs": [], "outputs": [], "targets": []}', "source must be a str"),
])
def test_a_malformed_run_json_is_one_line_naming_the_file(run, capsys, text, message):
    (run / "run.json").write_text(text)
    with pytest.raises(EdgekitError, match="run.json"):
        RunFolder(run).record()
    for command in (["validate", str(run)], ["bench", str(run), "--quick"],
                    ["bundle", str(run), "--target", "onnx-cpu-fp32", "--out", str(run.parent / "b")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and str(run / "run.json") in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("text, message", [
    ("{broken", "not valid JSON"),
    ('{"stage": "EXPLODED", "reason": "x"}', "unknown stage 'EXPLODED'"),
    ("[]", "a JSON object is expected"),
])
def test_a_failed_target_with_a_malformed_validation_json_is_one_line(run, capsys, text, message):
    target = run / RunFolder(run).record().targets[0]  # the first: no other target is validated before it
    (target / "manifest.json").unlink()  # as after a failed export: only validation.json says why
    (target / "validation.json").write_text(text)
    assert main(["validate", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "validation.json" in err[-1]


def _truncated(path):
    path.write_bytes(path.read_bytes()[:5000])


def _corrupted(path):  # the zip's directory intact, an array's bytes overwritten
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncated, _corrupted, lambda p: p.write_text("")])
def test_a_damaged_reference_npz_is_one_line_naming_it(run, capsys, damage):
    damage(run / "reference.npz")
    for command in (["validate", str(run)], ["bench", str(run), "--quick"], ["ledger", str(run)],
                    ["bundle", str(run), "--target", "onnx-cpu-fp32", "--out", str(run.parent / "b")]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert "reference.npz" in err[-1] and "Traceback" not in "\n".join(err), (command, err[-3:])
    assert not (run.parent / "b").exists()


@pytest.mark.parametrize("text", ["", '{"schema": "edgekit.manifest/1", "source"', "[]"])
def test_a_damaged_manifest_is_one_line_naming_it(run, capsys, text):
    (run / "onnx-cpu-fp32" / "manifest.json").write_text(text)
    for command in (["bundle", str(run), "--target", "onnx-cpu-fp32", "--out", str(run.parent / "b")],
                    ["ledger", str(run)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert "manifest.json" in err[-1] and "Traceback" not in "\n".join(err), (command, err[-3:])


DAMAGES = {
    "empty": lambda data: b"",
    "first-byte": lambda data: data[:1],
    "half": lambda data: data[: len(data) // 2],
    "all-but-last": lambda data: data[:-1],
    "flipped-25%": lambda data: _flip(data, len(data) // 4),
    "flipped-75%": lambda data: _flip(data, 3 * len(data) // 4),
}
FILES = ["run.json", "onnx-cpu-fp32/manifest.json", "onnx-cpu-fp32/profile.toml", "reference.npz",
         "failed/validation.json"]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.fixture
def one_target_run(run):
    """The run with one exported target and one that failed at export (only validation.json says why)."""
    failed = run / "failed"
    failed.mkdir()
    shutil.copy(run / "onnx-cpu-fp32" / "profile.toml", failed / "profile.toml")
    (failed / "profile.toml").write_text((failed / "profile.toml").read_text().replace(
        'name = "onnx-cpu-fp32"', 'name = "failed"'))
    (failed / "validation.json").write_text(json.dumps({
        "target": "failed", "backend": "onnx", "status": "FAIL", "stage": "EXPORT", "reason": "a converter error"}))
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "targets": ["onnx-cpu-fp32", "failed"]}))
    return run


def _still_reads(path) -> bool:
    """Whether a damaged file still parses as its kind: a TOML cut at a line end is a shorter valid profile (a run's
    profile is the user's to edit, so it is not hashed), a JSON without its final newline is the same JSON."""
    from edgekit.config import parse_profile
    from edgekit.fsutil import read_npz

    try:
        if path.suffix == ".toml":
            parse_profile(path.read_text(encoding="utf-8"))
        elif path.suffix == ".npz":
            read_npz(path)
        else:
            json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, EdgekitError):
        return False
    return True


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_every_file_validate_reads_back_is_guarded(one_target_run, capsys, name, damage):
    """Each file `edgekit validate` reads, truncated at several offsets or with a byte flipped: exit 2 and one line
    naming the file, never a traceback, unless the damaged file still parses (then it is validated as it reads)."""
    path = one_target_run / name
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    code = main(["validate", str(one_target_run)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("edgekit:")]  # the others are progress lines
    assert "Traceback" not in "\n".join(err)
    if _still_reads(path):
        assert code in (0, 1) and errors == [], err[-3:]
    else:
        assert code == 2 and len(errors) == 1 and path.name in errors[0], err[-3:]


@pytest.mark.parametrize("name, schema", [("run.json", "edgekit.run/1"),
                                          ("onnx-cpu-fp32/manifest.json", "edgekit.manifest/1")])
def test_a_file_from_another_edgekit_version_is_one_line_naming_it(one_target_run, capsys, name, schema):
    path = one_target_run / name
    path.write_text(path.read_text().replace(schema, schema[:-1] + "2"))
    assert main(["validate", str(one_target_run)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgekit:")]
    assert len(errors) == 1 and path.name in errors[0] and "is not" in errors[0]
