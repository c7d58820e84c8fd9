"""Training batches from sample_data's train split, with the usual MNIST augmentation (small shifts)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from edgekit.data.captions import read_captions, tokenize
from edgekit.data.mnist import read_split
from edgekit.errors import EdgekitError

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]
Batches = Callable[[int], list[Batch]]  # epoch -> that epoch's batches (seeded by the epoch)


def shift(images: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (pad and crop)."""
    padded = F.pad(images[:, 0], [max_shift] * 4, value=float(images.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=gen)
    grid = torch.arange(images.shape[-1])
    rows = (offsets[:, :1] + grid)[:, :, None]
    cols = (offsets[:, 1:] + grid)[:, None, :]
    return padded[torch.arange(images.shape[0])[:, None, None], rows, cols].unsqueeze(1)


def digit_batches(batch_size: int = 64, seed: int = 0) -> Batches:
    train = read_split("train")
    images, labels = torch.from_numpy(train.normalized()), torch.from_numpy(train.labels)

    def batches(epoch: int) -> list[Batch]:
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(labels), generator=gen)
        return [((shift(images[idx], gen),), labels[idx]) for idx in order.split(batch_size)]
    return batches


def fusion_batches(batch_size: int = 64, pairings: int = 3, seed: int = 0) -> Batches:
    """Each epoch pairs every train image with ``pairings`` fresh random captions."""
    train = read_split("train")
    images, labels = torch.from_numpy(train.normalized()), torch.from_numpy(train.labels)
    captions = read_captions()
    tokens = torch.from_numpy(np.stack([tokenize(c.text) for c in captions]))
    numbers = torch.tensor([c.number for c in captions])

    def batches(epoch: int) -> list[Batch]:
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        image_idx = torch.randperm(len(labels), generator=gen).repeat(pairings)
        caption_idx = torch.randint(0, len(captions), (len(image_idx),), generator=gen)
        out = []
        for sel in torch.arange(len(image_idx)).split(batch_size):
            i, c = image_idx[sel], caption_idx[sel]
            out.append(((shift(images[i], gen), tokens[c]), (labels[i] + numbers[c]) % 10))
        return out
    return batches


TRAIN_BATCHES: dict[str, Callable[..., Batches]] = {"mnist": digit_batches, "mnist-fusion": fusion_batches}


def train_batches(task: str | None, **kwargs) -> Batches:
    if task not in TRAIN_BATCHES:
        raise EdgekitError(f"no training data for task {task!r}: recovery needs a model with a task "
                           f"({', '.join(TRAIN_BATCHES)})")
    return TRAIN_BATCHES[task](**kwargs)
