"""The docs site builds with ``mkdocs build --strict`` (a broken link or anchor, a reference page out of date with the
code, or a profile key without a documented meaning fails), its generated pages cover the CLI and every profile
key, and the README stays short."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


# a script or model source of this repository, named by its path (not a part of a longer path such as a/tools/b.py)
_REPO_FILE = re.compile(r"(?<![\w./-])((?:tools|benchmarks|examples|dev)/[\w./-]*\w\.(?:py|sh|toml))")


def test_every_script_the_docs_name_exists():
    """The results pages' commands and the guides name scripts and model sources by path: a moved file fails here."""
    texts = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md"))]
    missing = sorted({f"{text.relative_to(ROOT)}: {path}" for text in texts
                      for path in _REPO_FILE.findall(text.read_text(encoding="utf-8")) if not (ROOT / path).is_file()})
    assert not missing, f"the docs name files that do not exist: {missing}"


def test_report_schema_names_every_run_record_field():
    from edgekit.runfolder import RunRecord

    page = (ROOT / "docs" / "reference" / "report-schema.md").read_text(encoding="utf-8")
    missing = [f.name for f in dataclasses.fields(RunRecord) if f"`{f.name}`" not in page]
    assert not missing, f"docs/reference/report-schema.md does not describe run.json field(s) {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return out


def _commands(parser) -> list[str]:
    """The subcommands as the CLI page's hook walks them (docs/hooks/cli_reference.py's ``commands``)."""
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook.commands(parser)


def test_cli_page_has_every_subcommand(site):
    from edgekit.cli import build_parser

    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = _commands(build_parser())
    assert "export" in commands and "profiles show" in commands
    missing = [c for c in commands if f'id="edgekit-{c.replace(" ", "-")}"' not in html]
    assert not missing, f"the CLI reference has no section for {missing}"
    for action in build_parser()._actions:  # the top-level options too (--version, -v); -h is everywhere
        for flag in action.option_strings if action.dest != "help" else ():
            assert f"<code>{flag}" in html, f"the CLI reference does not mention {flag}"


def test_profile_page_has_every_profile_key(site):
    from edgekit import config

    html = (site / "reference" / "profile-keys" / "index.html").read_text(encoding="utf-8")
    keys = set(config._TOP_KEYS) - {"runtime", "gates", "quantization", "validation", "limits"}
    for cls in (config.RuntimeOptions, config.QuantRecipe, config.Augment, config.Limits):
        keys |= {f.name for f in dataclasses.fields(cls)} - {"augment"}  # [quantization.augment] is a table
    assert "[quantization.augment]" in html
    keys |= config.OUTPUT_METRICS | config.TASK_METRICS | {"samples", "warn", "fail", "outputs", "task"}
    missing = sorted(k for k in keys if f"<code>{k}</code>" not in html)
    assert not missing, f"the profile reference does not list {missing}"
    assert "**undocumented**" not in html and "undocumented" not in re.sub(r"<[^>]+>", "", html)


def test_shipped_profiles_page_lists_every_profile(site):
    from edgekit.resources import targets_dir

    html = (site / "reference" / "profiles" / "index.html").read_text(encoding="utf-8")
    missing = [p.stem for p in sorted(targets_dir().glob("*.toml")) if f"<code>{p.stem}</code>" not in html]
    assert not missing, f"the shipped-profiles page does not list {missing}"
