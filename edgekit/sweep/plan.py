"""A sweep file (sources x recipes x targets) read into cells, each with a content-addressed key.

```toml
[sweep]
timing = "quick"         # or "full": the bench timing of every cell
threads = 1              # cores per cell: each cell is pinned to its own
cell_timeout = 1800      # seconds; a cell over it is a TIMEOUT row

[[source]]
source = "zoo:cnn"       # any model source; `calib` and `data` as for `edgekit export` (zoo: task:calib)
name = "cnn"             # optional: the row label

[recipe.fp32]            # a recipe is compression + a precision; the precision picks the profile
[recipe.int8]
precision = "int8"
[recipe.channels50-int8]
prune = "channels:0.5"
recover = "finetune"
epochs = 1
precision = "int8"

[targets]
families = ["BACKEND-cpu", "DEVICE-BACKEND"]   # FAMILY-PRECISION names a profile (`edgekit profiles`)
```

A cell's key hashes everything its result depends on: the source's files, its data, the recipe, the profile's
text, and the versions of edgekit (its code too), torch and the runtime. A rerun skips the cells whose key has a
result; anything that changed runs again."""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from edgekit._version import __version__
from edgekit.compress.recipe import CompressionRecipe
from edgekit.config import TargetProfile, known_profiles, load_profile
from edgekit.errors import EdgekitError

TIMINGS = ("quick", "full")
_SWEEP_KEYS = {"timing", "threads", "cell_timeout"}
_SOURCE_KEYS = {"source", "name", "calib", "data", "dynamic"}
_RECIPE_KEYS = {"prune", "recover", "epochs", "lr", "precision"}


@dataclass(frozen=True)
class SourceEntry:
    name: str
    source: str
    calib: str | None = None
    data: str | None = None
    dynamic: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    precision: str = "fp32"
    prune: str | None = None
    recover: str | None = None
    epochs: int = 3
    lr: float = 2e-3

    def compression(self) -> CompressionRecipe | None:
        return CompressionRecipe.parse(self.prune, self.recover, self.epochs, self.lr)


@dataclass(frozen=True)
class Cell:
    """One job: a source under a recipe on a target profile."""

    key: str
    source: SourceEntry
    recipe: Recipe
    family: str
    profile: TargetProfile

    @property
    def label(self) -> str:
        return f"{self.source.name} / {self.recipe.name} / {self.profile.name}"


@dataclass(frozen=True)
class Sweep:
    path: str
    timing: str
    threads: int
    cell_timeout: float
    sources: tuple[SourceEntry, ...]
    recipes: tuple[Recipe, ...]
    families: tuple[str, ...]
    cells: tuple[Cell, ...]


def _table(where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise EdgekitError(f"{where} must be a table")
    return value


def _only(where: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise EdgekitError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _string(where: str, table: dict, key: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise EdgekitError(f"{where}: {key} must be a string")
    return value


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _tree_digest(root: Path, pattern: str) -> str:
    files = sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    return _digest(*(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in files))


def edgekit_digest() -> str:
    """The package's own code: a result made by other edgekit code is not this edgekit's result."""
    return _tree_digest(Path(__file__).resolve().parents[1], "*.py")


def _path_digest(path: Path) -> str:
    return _tree_digest(path, "*") if path.is_dir() else _digest(path.read_bytes())


def source_digest(source: str) -> str:
    """What the model's result depends on, as far as it can be read without running it: the zoo's weights (its
    code is edgekit's, in every key), the user's file, an installed package's version, or the .pt2 itself. A file
    a user's module imports from beside it is not read (a caveat the docs state)."""
    from edgekit.data.mnist import sample_data_root

    if source.startswith("zoo:"):
        return _digest(source.encode(), _path_digest(sample_data_root() / "weights").encode())
    target = source.rpartition(":")[0] or source
    path = Path(target)
    if path.is_file():
        return _digest(source.encode(), path.read_bytes())
    package = target.split(".")[0]
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "unversioned"
    return _digest(source.encode(), version.encode())


def _data_digest(value: str | None) -> str:
    """A data folder's or file's contents, a data factory (FILE.py:FN) by its file, anything else by its text."""
    if value is None:
        return ""
    for candidate in (Path(value), Path(value.rpartition(":")[0])):
        if str(candidate) not in ("", ".") and candidate.exists():
            return _digest(value.encode(), _path_digest(candidate).encode())
    return _digest(value.encode())


def runtime_versions(backend: str) -> dict[str, str]:
    """edgekit, torch and the backend's runtime, as installed here (the runtime is looked up by its backend)."""
    from edgekit.backends import get_backend

    versions = {"edgekit": __version__, "torch": metadata.version("torch")}
    try:
        package = get_backend(backend).runtime_package
        versions[package] = metadata.version(package)
    except (EdgekitError, metadata.PackageNotFoundError):
        versions[backend] = "not installed"
    return versions


def cell_key(source: SourceEntry, recipe: Recipe, profile: TargetProfile, source_hash: str, code_hash: str) -> str:
    record = {
        "source": source.source, "source_hash": source_hash, "calib": _data_digest(source.calib),
        "data": _data_digest(source.data), "dynamic": source.dynamic,
        "recipe": {k: v for k, v in asdict(recipe).items() if k != "name"},
        "profile": profile.text, "versions": runtime_versions(profile.backend), "edgekit_code": code_hash,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def _sources(raw: object) -> tuple[SourceEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise EdgekitError("the sweep needs at least one [[source]] with source = \"...\"")
    entries = []
    for i, item in enumerate(raw):
        where = f"[[source]] #{i + 1}"
        table = _table(where, item)
        _only(where, table, _SOURCE_KEYS)
        source = _string(where, table, "source")
        if not source:
            raise EdgekitError(f"{where}: source = \"zoo:NAME | FILE.py:FACTORY | ...\" is required")
        name = _string(where, table, "name", source.removeprefix("zoo:"))
        # a zoo model brings its own calibration split, as in `edgekit demo`
        calib = _string(where, table, "calib", "task:calib" if source.startswith("zoo:") else None)
        entries.append(SourceEntry(name, source, calib, _string(where, table, "data"),
                                   _string(where, table, "dynamic")))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise EdgekitError(f"two sources are named {next(n for n in names if names.count(n) > 1)!r}: give a name")
    return tuple(entries)


def _recipes(raw: object) -> tuple[Recipe, ...]:
    table = _table("[recipe]", raw if raw is not None else {"fp32": {}})
    recipes = []
    for name, value in table.items():
        where = f"[recipe.{name}]"
        body = _table(where, value)
        _only(where, body, _RECIPE_KEYS)
        recipe = Recipe(name, _string(where, body, "precision", "fp32"), _string(where, body, "prune"),
                        _string(where, body, "recover"), body.get("epochs", 3), body.get("lr", 2e-3))
        if not isinstance(recipe.epochs, int) or not isinstance(recipe.lr, (int, float)):
            raise EdgekitError(f"{where}: epochs must be an integer and lr a number")
        try:
            recipe.compression()
        except EdgekitError as exc:
            raise EdgekitError(f"{where}: {exc}") from None
        recipes.append(recipe)
    if not recipes:
        raise EdgekitError("[recipe] is empty: name at least one, e.g. [recipe.fp32]")
    return tuple(recipes)


def _profile(family: str, precision: str) -> TargetProfile:
    name = f"{family}-{precision}"
    if name not in known_profiles():
        raise EdgekitError(f"target family {family!r} has no {precision} profile ({name}); "
                           "see `edgekit profiles`")
    return load_profile(name)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every error is one line naming the file (bad input, exit 2)."""
    from edgekit.backends.base import check_options

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgekitError(f"sweep file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"sweep file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EdgekitError(f"{path}: not valid TOML: {exc}") from None
    try:
        _only("the sweep file", raw, {"sweep", "source", "recipe", "targets"})
        settings = _table("[sweep]", raw.get("sweep", {}))
        _only("[sweep]", settings, _SWEEP_KEYS)
        timing = _string("[sweep]", settings, "timing", "quick")
        threads, timeout = settings.get("threads", 1), settings.get("cell_timeout", 1800)
        if timing not in TIMINGS:
            raise EdgekitError(f"[sweep] timing must be one of {', '.join(TIMINGS)}")
        if not isinstance(threads, int) or threads < 1:
            raise EdgekitError("[sweep] threads must be an integer >= 1")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise EdgekitError("[sweep] cell_timeout must be a positive number of seconds")
        sources, recipes = _sources(raw.get("source")), _recipes(raw.get("recipe"))
        targets = _table("[targets]", raw.get("targets", {}))
        _only("[targets]", targets, {"families"})
        families = targets.get("families")
        if not isinstance(families, list) or not families or not all(isinstance(f, str) for f in families):
            raise EdgekitError("[targets] families = [\"onnx-cpu\", ...] is required (FAMILY-PRECISION names a "
                               "profile)")
        hashes, code = {s.name: source_digest(s.source) for s in sources}, edgekit_digest()
        cells = []
        for source in sources:
            for recipe in recipes:
                for family in families:
                    profile = _profile(family, recipe.precision)
                    check_options(profile)
                    cells.append(Cell(cell_key(source, recipe, profile, hashes[source.name], code), source, recipe,
                                      family, profile))
    except EdgekitError as exc:
        raise EdgekitError(f"{path}: {exc}") from None
    return Sweep(str(path), timing, threads, float(timeout), sources, recipes, tuple(families), tuple(cells))
