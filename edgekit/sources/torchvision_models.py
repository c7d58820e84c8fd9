"""``torchvision:NAME[?weights=FILE|ENUM|none]``: a torchvision classification model by name, with real weights
from a file the user names or from torch hub's cache (offline: never a download), and the weights' own
transforms (resize, crop, mean, std, interpolation) and class names."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch

from edgekit.data.preprocess import Preprocess
from edgekit.errors import EdgekitError
from edgekit.sources import split_options
from edgekit.sources.vision import (
    ensure_torchvision_importable,
    example_images,
    load_weights,
    no_such_model,
)
from edgekit.spec import ModelSpec


def _models():
    ensure_torchvision_importable()
    try:
        import torchvision.models
    except ImportError:
        raise EdgekitError("torchvision: sources need torchvision: pip install 'edgekit[vision]'") from None
    return torchvision.models


def _file_name(entry) -> str:
    return Path(urlparse(entry.url).path).name


def _weights(entries, choice: str | None, source: str):
    """(the weights entry whose transforms and classes apply, the file to load or None for random weights)."""
    default = entries.DEFAULT
    if choice == "none":
        return default, None
    if choice and Path(choice).suffix:  # a file: the entry of the same file name, else the default's transforms
        path = Path(choice)
        return next((e for e in entries if _file_name(e) == path.name), default), path
    if choice and choice not in entries.__members__:
        raise EdgekitError(f"{source}: no weights {choice!r}; known: {', '.join(entries.__members__)}, a file, "
                           "or none")
    entry = entries[choice] if choice else default
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _file_name(entry)
    if not cached.is_file():
        raise EdgekitError(f"{source}: {entry} is not in torch hub's cache ({cached}); pass {source}?weights=FILE "
                           "(.pth or .safetensors), or ?weights=none for random weights")
    return entry, cached


def preprocess_of(transforms) -> Preprocess:
    """torchvision's ImageClassification transforms as edgekit's Preprocess."""
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return Preprocess((crop, crop), False, 1 / 255, tuple(transforms.mean), tuple(transforms.std), crop / resize,
                      "bicubic" if transforms.interpolation.value == "bicubic" else "bilinear")


def load(source: str) -> ModelSpec:
    name, options = split_options("torchvision", source, ("weights",))
    models = _models()
    known = models.list_models(module=models)  # the classification models
    if name not in known:
        raise no_such_model("torchvision", name, known)
    entry, path = _weights(models.get_model_weights(name), options.get("weights"), f"torchvision:{name}")
    model = models.get_model(name, weights=None)
    if path is not None:
        load_weights(model, path, f"torchvision:{name}")
    pre = preprocess_of(entry.transforms())
    return ModelSpec(model.eval(), example_images(pre.size), ("image",),
                     labels=tuple(entry.meta["categories"]), preprocess=pre)
