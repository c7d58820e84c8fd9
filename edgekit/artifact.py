"""Artifacts: a model file (or files) in a target folder, described by a manifest."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

MANIFEST_SCHEMA = "edgekit.manifest/1"
ASSETS = "assets"  # the target folder's sub-folder of files that travel with the model (a tokenizer's)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str is a dynamic dimension, e.g. "batch"
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class Precision:
    """What was asked for, and what the runtime really uses, read back from the runtime, not assumed."""

    declared: str
    compute: str  # e.g. "float32", "bf16", "int8"
    weights: str  # storage type of the weights, e.g. "float32", "float16", "int8"
    evidence: dict[str, Any] = field(default_factory=dict)  # what the read-back saw (op/tensor type counts, hints)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the target folder
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    source: str
    target: str
    backend: str
    layout: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: Precision
    files: tuple[FileEntry, ...]
    versions: dict[str, str]
    batch_sizes: tuple[int, ...] | None = None  # fixed batch sizes (one signature each), None when dynamic
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = MANIFEST_SCHEMA

    @property
    def model_file(self) -> str:
        return self.files[0].path

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"


def file_entry(folder: Path, relative: str) -> FileEntry:
    data = (folder / relative).read_bytes()
    return FileEntry(relative, hashlib.sha256(data).hexdigest(), len(data))


def read_manifest(path: Path) -> Manifest:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgekitError(f"{path}: not a readable manifest ({exc})") from None
    return manifest_from(raw, str(path))


def manifest_from(raw: Any, where: str) -> Manifest:
    """The manifest in parsed JSON (a file's, or a worker's answer); one line naming ``where`` if it is not one."""
    try:
        if not isinstance(raw, dict):
            raise ValueError("a JSON object is expected")
        if raw.get("schema") != MANIFEST_SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r} is not {MANIFEST_SCHEMA}")
        specs = lambda items: tuple(TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in items)  # noqa: E731
        p = raw["precision"]
        return Manifest(
            raw["source"], raw["target"], raw["backend"], raw["layout"], specs(raw["inputs"]), specs(raw["outputs"]),
            Precision(p["declared"], p["compute"], p["weights"], p.get("evidence", {}), tuple(p.get("warnings", ()))),
            tuple(FileEntry(**f) for f in raw["files"]), raw["versions"],
            tuple(raw["batch_sizes"]) if raw.get("batch_sizes") else None, raw.get("extra", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EdgekitError(f"{where}: not a readable manifest ({exc})") from None


def add_assets(folder: Path, manifest: Manifest, files: tuple[Path, ...]) -> Manifest:
    """Copy ``files`` into ``folder/assets/`` and list them, hashed, in the manifest's ``extra["assets"]``: beside
    the model files, not among them (they are no part of the model's size and no C array)."""
    if not files:
        return manifest
    (folder / ASSETS).mkdir(exist_ok=True)
    for path in files:
        shutil.copyfile(path, folder / ASSETS / path.name)  # follows the Hugging Face cache's symlinks
    entries = [asdict(file_entry(folder, f"{ASSETS}/{path.name}")) for path in files]
    return replace(manifest, extra={**manifest.extra, ASSETS: entries})


def asset_entries(manifest: Manifest) -> tuple[FileEntry, ...]:
    return tuple(FileEntry(**e) for e in manifest.extra.get(ASSETS, ()))


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Refuse paths outside the folder and files (model and assets) whose hash changed since export: the check
    of the one artifact runner (edgekit.backends.execute, a leaf module), which bundles run on the device too."""
    from edgekit.backends.execute import ArtifactError  # up a floor: a leaf (numpy only), the one artifact runner
    from edgekit.backends.execute import verify_files as verify

    try:
        verify(folder, (*manifest.files, *asset_entries(manifest)), str(folder))
    except ArtifactError as exc:
        raise EdgekitError(str(exc)) from None
