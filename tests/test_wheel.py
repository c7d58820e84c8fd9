"""The wheel is the product: it carries every profile, the zoo weights and the sample data, and an installed copy
finds them without the checkout. (CI also installs it into a clean venv: .ci/wheel-smoke.)"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
MAX_WHEEL_BYTES = 5_000_000


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="the dev extra installs build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes with the dev extra, so the test needs no package index
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True)
    return next(out.glob("edgekit-*.whl"))


def _tracked(folder: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in listed.stdout.splitlines() if line]


def test_wheel_carries_every_shipped_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [f"edgekit/_data/{path}" for folder in ("targets", "sample_data") for path in _tracked(folder)]
    expected += [path for path in _tracked("edgekit") if not path.endswith("/")]
    assert expected and not [p for p in expected if p not in names]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.endswith(".png")], "sample data ships as arrays, not image files"
    assert wheel.stat().st_size < MAX_WHEEL_BYTES


def test_installed_wheel_works_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    away = tmp_path / "elsewhere"
    away.mkdir()
    code = ("import edgekit.resources as r, edgekit.config as c, edgekit.zoo as z, edgekit.data.tasks as t\n"
            "assert r.targets_dir().parent.name == '_data', r.targets_dir()\n"
            "print(len(c.known_profiles()))\n"
            "print(len(t.load_task('mnist-fusion', 'val')))\n"
            "print(sum(p.numel() for p in z.load('cnn').module.parameters()))\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=away, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    profiles, samples, parameters = (int(n) for n in out.stdout.split())
    assert profiles == len(list((REPO / "targets").glob("*.toml")))
    assert samples == 1000
    assert parameters > 0
