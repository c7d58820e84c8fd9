"""The backend Protocol and the registry. Backend modules are imported on first use, so a user who installs
only one runtime (``pip install edgekit[onnx]``) never imports the others."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.artifact import Manifest
from edgekit.config import QUANTIZED_PRECISIONS, QuantRecipe, RuntimeOptions, TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types; opening an artifact needs neither torch nor pillow
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec


class Session(Protocol):
    """A loaded artifact on its runtime. Inputs and outputs by name, in the artifact's own layout and dtypes."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def effective(self) -> dict[str, Any]:
        """What the runtime reports it runs with: at least ``precision`` and ``threads``."""


@dataclass(frozen=True)
class Option:
    """A profile key that a backend applies: for which precisions (None: all), with which values (None: any)."""

    precisions: tuple[str, ...] | None = None
    values: tuple[Any, ...] | None = None


# Keys that edgekit itself applies, whatever the backend: threads, and the calibration data it draws.
COMMON_OPTIONS = {
    "runtime.threads": Option(),
    "quantization.samples": Option(("int8",)),
    "quantization.seed": Option(("int8",)),
    "quantization.augment": Option(("int8",)),
    "quantization.keep_float": Option(QUANTIZED_PRECISIONS),
    "quantization.mixed_precision": Option(QUANTIZED_PRECISIONS),
    "quantization.max_float_layers": Option(QUANTIZED_PRECISIONS),
    "quantization.search_samples": Option(QUANTIZED_PRECISIONS),
    "quantization.speed_check": Option(QUANTIZED_PRECISIONS),
    "quantization.rank_by": Option(QUANTIZED_PRECISIONS),
    "quantization.weight_rounding": Option(("int8",)),
    "quantization.distill_steps": Option(("int8",)),
    "quantization.distill_lr": Option(("int8",)),
}


def _set_keys(profile: TargetProfile) -> list[tuple[str, Any]]:
    """The runtime and quantization keys the profile sets: written in its TOML, or different from the default."""
    found = []
    for section, value, default in (("runtime", profile.runtime, RuntimeOptions()),
                                    ("quantization", profile.quantization, QuantRecipe())):
        for f in fields(value):
            key = f"{section}.{f.name}"
            if key in profile.explicit or getattr(value, f.name) != getattr(default, f.name):
                found.append((key, getattr(value, f.name)))
    return found


def unsupported_option(profile: TargetProfile, backend: Backend) -> str | None:
    """Why the profile asks for something the backend would not apply, or None. A key the backend cannot honour
    is refused up front rather than recorded in a manifest as if it had been applied."""
    options = {**COMMON_OPTIONS, **getattr(backend, "options", {})}
    where = f"{profile.path or profile.name}: [{{}}] {{}}"
    for key, value in _set_keys(profile):
        section, name = key.split(".")
        option = options.get(key)
        if option is None:
            return where.format(section, f"{name} is not applied by the {backend.name} backend; remove it")
        if option.precisions is not None and profile.precision not in option.precisions:
            return where.format(section, f"{name} applies to {' / '.join(option.precisions)} on the "
                                         f"{backend.name} backend, not to {profile.precision}; remove it")
        if option.values is not None and value not in option.values:
            return where.format(section, f"{name} = {value!r}: the {backend.name} backend supports "
                                         f"{', '.join(map(repr, option.values))}")
    return None


class Backend(Protocol):
    name: str
    extra: str  # the pip extra that installs its runtime
    runtime_package: str  # the one package a device needs to run an artifact (versions[...] holds its version)
    # Optional: runtime_requires, packages the runtime needs beside it on a device, e.g. ("torch",) for a runtime
    # that cannot run without torch; bundles list them to install, and the session module imports them
    precisions: tuple[str, ...]  # precisions this backend can produce
    options: dict[str, Option]  # the profile keys it applies, beyond COMMON_OPTIONS
    # a standalone file (numpy + the runtime and what it requires, no edgekit) with open_session(model_path,
    # runtime, threads): the backend's open() uses it and bundles carry it, so host and device open an artifact
    # the same way
    session_module: Path

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        """Write the artifact's files into ``folder`` and describe them, with the precision read back."""

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        """Turn the fp32 artifact in ``folder`` into the profile's int8 / int8-dynamic one (calibrated with
        ``calib`` for static int8) and describe it again."""

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> Session:
        """Load the artifact on its runtime with the options its manifest records (``manifest.extra["runtime"]``,
        read by the backend's session module, the same file a bundle runs with); ``threads`` overrides the
        recorded thread count (e.g. 1 for single-thread latency)."""

    # the profiles `edgekit demo` runs for this backend, by precision (e.g. {"fp32": "onnx-cpu-fp32", ...})
    demo_targets: dict[str, str]
    # Optional: converter_modules, the modules its export and quantize import, imported once in edgekit's process
    # before an export worker forks (each worker would import them again: 1-5 s each)
    # Optional: fork_hazards, shared libraries whose thread pools a forked worker inherits dead: when this process
    # has one loaded (it ran the runtime itself, as a notebook or a test may), the export runs here instead

    # Optional, for `edgekit check`: check(spec, profile, program) -> list[edgekit.findings.Finding] converts the
    # torch.export program in memory and says what the converter or the runtime refuses; nothing is written.

    # Optional, for the int8 peers benchmark (benchmarks/int8_peers.py): stock_int8(spec, fp32, manifest, calib,
    # folder) -> Manifest quantizes the fp32 artifact in folder ``fp32`` (described by ``manifest``; ``spec`` for a
    # runtime that quantizes in torch) with the runtime's own quantizer as its documentation shows it, defaults
    # kept, calibrated with ``calib``; writes an ordinary target folder (model files + manifest.json, target
    # "<backend>-stock-int8", its quantization record naming the tool and every setting) that open() runs.


ENTRY_POINTS = "edgekit.backends"  # the entry-point group a backend package declares itself in


def _installed() -> dict[str, str]:
    """Backend name -> module, from the installed packages' entry points: edgekit's own backends are declared in
    its pyproject.toml exactly as a third-party backend package declares its own."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINTS)}


_MODULES = _installed()
_LOADED: dict[str, Backend] = {}


def register(module_path: str, name: str) -> None:
    """Add a backend module (one that defines ``BACKEND``) under ``name``; user plugins call this."""
    _MODULES[name] = module_path
    _LOADED.pop(name, None)


PLUGINS_ENV = "EDGEKIT_PLUGINS"


def load_plugins() -> None:
    """Import the modules named in ``$EDGEKIT_PLUGINS`` (comma-separated); each calls :func:`register`. The
    variable is inherited by bench workers, so a user's backend runs there too."""
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise EdgekitError(f"${PLUGINS_ENV}: cannot import plugin module {name!r} ({exc})") from None


def check_options(profile: TargetProfile) -> None:
    """Refuse (exit 2) a profile that names no registered backend or asks its backend for something it cannot
    do. A registered backend whose runtime is not installed here is left to fail at export, as a row."""
    if profile.backend not in _MODULES:
        load_plugins()
    if profile.backend not in _MODULES:
        raise EdgekitError(f"{profile.path or profile.name}: unknown backend {profile.backend!r}; registered: "
                           f"{', '.join(_MODULES)}")
    try:
        backend = get_backend(profile.backend)
    except EdgekitError:
        return
    if profile.precision not in backend.precisions:
        raise EdgekitError(f"{profile.path or profile.name}: the {backend.name} backend cannot make "
                           f"{profile.precision}; it makes {', '.join(backend.precisions)}")
    problem = unsupported_option(profile, backend)
    if problem:
        raise EdgekitError(problem)


def registered() -> list[str]:
    return list(_MODULES)


def preload(backend: Backend) -> None:
    """Import the backend's converter modules here (see ``converter_modules``); a missing one is left for its
    export to report, as a row."""
    for name in getattr(backend, "converter_modules", ()):
        try:
            importlib.import_module(name)
        except ImportError:
            return


def fork_safe(backend: Backend) -> bool:
    """Whether an export worker forked from this process can run the backend: none of its ``fork_hazards`` is
    loaded here. (edgekit's own command line never loads one before exporting.)"""
    hazards = getattr(backend, "fork_hazards", ())
    if not hazards:
        return True
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return not any(name in maps for name in hazards)


def demo_targets(precisions: tuple[str, ...] = ("fp32", "int8")) -> list[str]:
    """Every installed backend's demo profiles, all fp32 first (a backend whose runtime is missing is left out)."""
    backends = []
    for name in registered():
        try:
            backends.append(get_backend(name))
        except EdgekitError:
            continue
    return [b.demo_targets[p] for p in precisions for b in backends if p in getattr(b, "demo_targets", {})]


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        load_plugins()
    if name not in _MODULES:
        known = ", ".join(_MODULES) or f"none (no package declares the {ENTRY_POINTS!r} entry points: pip install -e .)"
        raise EdgekitError(f"unknown backend {name!r}; registered: {known}")
    if name not in _LOADED:
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            if (exc.name or "").split(".")[0] == "edgekit":  # our own bug, not a missing runtime
                raise
            raise EdgekitError(f"backend {name!r} needs a package that is not installed ({exc.name}): "
                               f"pip install 'edgekit[{name}]'") from None
        _LOADED[name] = module.BACKEND
    return _LOADED[name]
