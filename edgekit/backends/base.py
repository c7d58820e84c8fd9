"""The backend Protocol and the registry. Backend modules are imported on first use, so a user who installs
only one runtime (``pip install edgekit[onnx]``) never imports the others."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekit.artifact import Manifest
from edgekit.config import TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types; opening an artifact needs neither torch nor pillow
    from edgekit.data.calib import CalibrationData
    from edgekit.spec import ModelSpec


class Session(Protocol):
    """A loaded artifact on its runtime. Inputs and outputs by name, in the artifact's own layout and dtypes."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str
    extra: str  # the pip extra that installs its runtime
    precisions: tuple[str, ...]  # precisions this backend can produce

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        """Write the artifact's files into ``folder`` and describe them, with the precision read back."""

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        """Turn the fp32 artifact in ``folder`` into the profile's int8 / int8-dynamic one (calibrated with
        ``calib`` for static int8) and describe it again."""

    def open(self, folder: Path, manifest: Manifest, profile: TargetProfile) -> Session:
        """Load the artifact on its runtime with the profile's options."""


_MODULES = {
    "onnx": "edgekit.backends.onnx",
    "openvino": "edgekit.backends.openvino",
    "tflite": "edgekit.backends.tflite",
}
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


def registered() -> list[str]:
    return list(_MODULES)


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        load_plugins()
    if name not in _MODULES:
        raise EdgekitError(f"unknown backend {name!r}; registered: {', '.join(_MODULES)}")
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
