"""Read the MNIST splits of sample_data/ into arrays: one ``mnist/{split}.npz`` per split (train, val, calib),
holding ``images`` (uint8 [N, 28, 28]), ``labels`` (int64 [N]) and ``files`` (the digits' ids, e.g.
"val/0003.png", by which captions/*_pairs.csv pair them). dev/make_sample_data.py writes them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fsutil import read_npz
from edgekit.resources import sample_data_dir

MEAN, STD = 0.1307, 0.3081
ARRAYS = ("images", "labels", "files")


def sample_data_root() -> Path:
    """The sample data edgekit ships (the wheel's copy, or the checkout's sample_data/)."""
    return sample_data_dir()


@dataclass(frozen=True)
class DigitSplit:
    files: tuple[str, ...]
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]

    def normalized(self) -> np.ndarray:
        """float32 [N, 1, 28, 28], normalized as the zoo models were trained."""
        return ((self.images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


def read_split(split: str, root: Path | None = None) -> DigitSplit:
    path = (root or sample_data_root()) / "mnist" / f"{split}.npz"
    arrays = read_npz(path, f"MNIST split {split!r}:")
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise EdgekitError(f"MNIST split {split!r}: {path} has no array {', '.join(missing)}")
    images, labels, files = arrays["images"], arrays["labels"], arrays["files"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) \
            or labels.shape != (len(images),) or files.shape != (len(images),):
        raise EdgekitError(f"MNIST split {split!r}: {path} does not hold uint8 [N, 28, 28] images with N labels "
                           "and N files")
    return DigitSplit(tuple(files.tolist()), images, labels.astype(np.int64, copy=False))
