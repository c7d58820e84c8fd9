"""A target profile is data: whatever its TOML says, edgekit imports and runs nothing it names (a backend is
looked up among the registered ones; plugins come only from $EDGEKIT_PLUGINS, which the user sets)."""
import sys

import pytest

from edgekit.cli import main
from edgekit.config import load_profile

SENTINEL = "edgekit_sentinel_module"


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """An importable module that leaves a file behind if anything imports it."""
    marker = tmp_path / "imported"
    (tmp_path / f"{SENTINEL}.py").write_text(f"open({str(marker)!r}, 'w').write('yes')\nBACKEND = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('backend = "onnx"', f'backend = "{SENTINEL}"'),
    lambda t: t.replace('backend = "onnx"', f'backend = "{SENTINEL}:BACKEND"'),
    lambda t: t + f'\n[runtime.plugin]\nmodule = "{SENTINEL}"\n',
    lambda t: t + f'\nplugins = ["{SENTINEL}"]\n',
    lambda t: t.replace('description = "', f'description = "__import__(\\"{SENTINEL}\\") '),
], ids=["backend-name", "backend-path", "runtime-table", "top-level-key", "string-value"])
def test_a_profile_cannot_make_edgekit_import_anything(sentinel, tmp_path, capsys, edit):
    text = edit(load_profile("onnx-cpu-fp32").text).replace('name = "onnx-cpu-fp32"', 'name = "mine"')
    profile = tmp_path / "mine.toml"
    profile.write_text(text)
    code = main(["export", "zoo:cnn", "--target", str(profile), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 2:  # refused before anything ran, in one line
        assert len(err) == 1 and err[0].startswith("edgekit: error:")
    else:  # a harmless string: exported as the onnx profile it is
        assert code == 0 and "__import__" in load_profile(str(profile)).description
    assert not sentinel.exists() and SENTINEL not in sys.modules
