"""Read the MNIST splits of sample_data/ (PNG files + a labels CSV) into normalized arrays."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgekit.errors import EdgekitError

MEAN, STD = 0.1307, 0.3081


def sample_data_root() -> Path:
    """The committed sample_data/ folder of this checkout."""
    return Path(__file__).resolve().parents[2] / "sample_data"


@dataclass(frozen=True)
class DigitSplit:
    files: tuple[str, ...]
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]

    def normalized(self) -> np.ndarray:
        """float32 [N, 1, 28, 28], normalized as the zoo models were trained."""
        return ((self.images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


def read_split(split: str, root: Path | None = None) -> DigitSplit:
    base = (root or sample_data_root()) / "mnist"
    labels_csv = base / f"{split}.csv"
    if not labels_csv.is_file():
        raise EdgekitError(f"no MNIST split {split!r}: {labels_csv} does not exist")
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.stack([np.asarray(Image.open(base / row["file"]).convert("L")) for row in rows])
    labels = np.array([int(row["label"]) for row in rows], dtype=np.int64)
    return DigitSplit(tuple(row["file"] for row in rows), images, labels)
