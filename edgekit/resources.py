"""Where the files edgekit ships live: the target profiles and the sample data (zoo weights, MNIST, captions).

The repository keeps them at its top level (``targets/``, ``sample_data/``); the wheel carries them as
``edgekit/_data/targets`` and ``edgekit/_data/sample_data`` (hatchling's force-include). One resolver finds them
either way, so an installed wheel and an editable checkout read the same files."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _root() -> Path:
    packaged = Path(str(files("edgekit"))) / "_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1]  # a checkout (editable install): the repository's top level


def targets_dir() -> Path:
    """The folder of the profiles edgekit ships."""
    return _root() / "targets"


def sample_data_dir() -> Path:
    """The folder of the sample data edgekit ships: ``mnist/``, ``captions/``, ``weights/``."""
    return _root() / "sample_data"
