"""A run folder, typed: one class owns its file names, its record (``run.json``, versioned), its reference data,
its compression record and each target's profile, manifest and earlier failure. Export writes one; validate,
bench and bundle read it through this class only."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgekit._version import __version__
from edgekit.config import TargetProfile, parse_profile, typed_value
from edgekit.errors import EdgekitError
from edgekit.fsutil import RUN_MARKER, read_json, write_json
from edgekit.results import Stage, Validation, failure

REFERENCE_FILE = "reference.npz"
PROFILE_FILE = "profile.toml"
MANIFEST_FILE = "manifest.json"
VALIDATION_FILE = "validation.json"
COMPRESSION_FILE = "compression.json"
RUN_SCHEMA = "edgekit.run/1"


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: what was exported, from what data, to which targets."""

    source: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    targets: tuple[str, ...]
    task: str | None = None
    attention_outputs: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # origin, samples, real, labels
    preprocess: dict[str, Any] | None = None
    dynamic_axes: dict[str, list[int]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    validated_lengths: tuple[int, ...] = ()
    torch_accuracy: float | None = None
    edgekit: str = __version__
    schema: str = RUN_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(raw: Any, where: str) -> RunRecord:
        """Check every field's type; a malformed record is a one-line error naming the file and the field."""
        if not isinstance(raw, dict):
            raise EdgekitError(f"{where}: not a run record (a JSON object is expected)")
        kind, _, version = str(raw.get("schema", "")).rpartition("/")
        if kind != RUN_SCHEMA.rpartition("/")[0]:
            raise EdgekitError(f"{where}: schema {raw.get('schema')!r} is not {RUN_SCHEMA!r}; is this a run folder?")
        if not version.isdigit() or int(version) > int(RUN_SCHEMA.rpartition("/")[2]):
            raise EdgekitError(f"{where}: schema {raw.get('schema')!r} is not {RUN_SCHEMA!r}: written by a newer "
                               "edgekit; upgrade edgekit to read it")
        values = {f.name: typed_value(where, f.name, raw[f.name], f.type, ranges={}) for f in fields(RunRecord)
                  if f.name in raw}
        missing = [n for n in ("source", "inputs", "outputs", "targets") if n not in values]
        if missing:
            raise EdgekitError(f"{where}: missing {', '.join(missing)}; the run folder is damaged: export it again")
        return RunRecord(**values)


class RunFolder:
    """The files of one run: ``run.json``, ``reference.npz``, ``compression.json`` and a folder per target."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / RUN_MARKER

    def record(self) -> RunRecord:
        if not self.record_path.is_file():
            raise EdgekitError(f"{self.path} is not a run folder (no {RUN_MARKER}); make one with `edgekit export`")
        return RunRecord.from_json(read_json(self.record_path, None), str(self.record_path))

    def write_record(self, record: RunRecord) -> None:
        write_json(self.record_path, record.to_json())

    @property
    def reference_path(self) -> Path:
        return self.path / REFERENCE_FILE

    def compression(self) -> dict | None:
        path = self.path / COMPRESSION_FILE
        if not path.is_file():
            return None
        return read_json(path, None)

    def target(self, name: str) -> Path:
        return self.path / name

    def profile(self, name: str) -> TargetProfile:
        """The profile a target of the run was exported under (copied into its folder)."""
        folder = self.target(name)
        if not folder.is_dir():
            raise EdgekitError(f"{folder} is missing from the run folder")
        path = folder / PROFILE_FILE
        if not path.is_file():
            raise EdgekitError(f"{folder}: {PROFILE_FILE} is missing; is this a run folder made by `edgekit export`?")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgekitError(f"{path}: not a readable profile ({exc})") from None
        return parse_profile(text, str(path))

    def has_manifest(self, name: str) -> bool:
        return (self.target(name) / MANIFEST_FILE).is_file()

    def earlier_failure(self, name: str, profile: TargetProfile) -> Validation:
        """A target without a manifest failed at export or quantization; its validation.json says which and why."""
        path = self.target(name) / VALIDATION_FILE
        data: Any = read_json(path) if path.is_file() else {}
        try:
            stage = Stage(data.get("stage") or "EXPORT")
        except ValueError:
            raise EdgekitError(f"{path}: unknown stage {data.get('stage')!r} (one of "
                               f"{', '.join(s.value for s in Stage)})") from None
        return failure(profile, stage, str(data.get("reason") or "no manifest.json: the export did not finish"))
