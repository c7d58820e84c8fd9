"""Reading a run folder: its run.json, and each target's profile and earlier failure. Shared by validate, bench and
bundle."""
from __future__ import annotations

import json
from pathlib import Path

from edgekit.config import TargetProfile, parse_profile
from edgekit.errors import EdgekitError
from edgekit.fsutil import RUN_MARKER
from edgekit.results import Stage, Validation
from edgekit.validate.validate import failure

REFERENCE_FILE = "reference.npz"
PROFILE_FILE = "profile.toml"
MANIFEST_FILE = "manifest.json"
VALIDATION_FILE = "validation.json"


def read_run(folder: Path) -> dict:
    marker = folder / RUN_MARKER
    if not marker.is_file():
        raise EdgekitError(f"{folder} is not a run folder (no {RUN_MARKER}); make one with `edgekit export`")
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EdgekitError(f"{marker}: not valid JSON ({exc})") from None


def target_profile(folder: Path) -> TargetProfile:
    """The profile a target of the run was exported under (copied into its folder)."""
    if not folder.is_dir():
        raise EdgekitError(f"{folder} is missing from the run folder")
    path = folder / PROFILE_FILE
    if not path.is_file():
        raise EdgekitError(f"{folder}: {PROFILE_FILE} is missing; is this a run folder made by `edgekit export`?")
    return parse_profile(path.read_text(encoding="utf-8"), str(path))


def earlier_failure(folder: Path, profile: TargetProfile) -> Validation:
    """A target without a manifest failed at export or quantization; its validation.json says which and why."""
    previous = folder / VALIDATION_FILE
    data = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {}
    stage = Stage(data.get("stage") or "EXPORT")
    return failure(profile, stage, data.get("reason") or "no manifest.json: the export did not finish")
