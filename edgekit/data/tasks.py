"""Tasks: real labelled inputs for a model, by split, so validation measures task accuracy."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.data.captions import read_pairs
from edgekit.data.mnist import read_split
from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class TaskData:
    inputs: dict[str, np.ndarray]  # by model input name, batch first
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


def mnist(split: str, root: Path | None = None) -> TaskData:
    digits = read_split(split, root)
    return TaskData({"image": digits.normalized()}, digits.labels)


def mnist_fusion(split: str, root: Path | None = None) -> TaskData:
    """Digit images paired with captions; target = (digit + caption number) mod 10."""
    files, tokens, targets = read_pairs(split, root)
    digits = read_split(split, root)
    order = {f: i for i, f in enumerate(digits.files)}
    images = digits.normalized()[[order[f] for f in files]]
    return TaskData({"image": images, "tokens": tokens}, targets)


TASKS: dict[str, Callable[..., TaskData]] = {"mnist": mnist, "mnist-fusion": mnist_fusion}


def load_task(name: str, split: str, root: Path | None = None) -> TaskData:
    if name not in TASKS:
        raise EdgekitError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](split, root)
