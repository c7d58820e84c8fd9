"""What the ``timm:`` and ``torchvision:`` sources share: importing torchvision beside this torch, weights from a
file the user names (never unpickled), the closest names for a typo, and an ImageNet-style example batch."""
from __future__ import annotations

import difflib
import functools
import glob
import importlib.util
import os
import sys
from pathlib import Path

import torch

from edgekit.errors import EdgekitError, one_line

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@functools.cache  # once a process: the probe dlopens torchvision's library, and the warning is one line
def ensure_torchvision_importable() -> None:
    """torchvision's compiled ops link CUDA libraries that the CPU build of torch lacks: the ops fail to load
    (quietly), then its fake-kernel registrations die on two schemas nothing defined, ``torchvision::nms`` and
    ``torchvision::qnms`` ("operator torchvision::nms does not exist"), and timm and transformers, which import
    torchvision, die with it. Defining those two schemas first lets the pure-Python part import: classification
    models and transforms work; ``torchvision.ops`` (nms, roi_align: detection) do not, and say so when called.
    Nothing happens when torchvision is absent or its ops load. Call it before importing timm or transformers."""
    found = importlib.util.find_spec("torchvision")
    if found is None or not found.submodule_search_locations:
        return
    for library in glob.glob(os.path.join(found.submodule_search_locations[0], "_C*.so")):
        try:
            torch.ops.load_library(library)
            return
        except (OSError, ImportError):
            break
    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # defined by an earlier call
            return
    print(f"edgekit: warning: torchvision's compiled ops do not load beside torch {torch.__version__}: "
          "classification models and transforms work, torchvision.ops (detection) do not", file=sys.stderr)


def no_such_model(library: str, name: str, known: list[str]) -> EdgekitError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return EdgekitError(f"{library} has no model {name!r}" + (f"; closest: {', '.join(close)}" if close else "")
                        + f" ({len(known)} known)")


def load_weights(module: torch.nn.Module, path: Path, source: str) -> None:
    """A state dict from ``.safetensors``, or from a torch checkpoint read with ``weights_only=True`` (tensors and
    plain containers only: no code runs), loaded strictly."""
    if not path.is_file():
        raise EdgekitError(f"{source}: weights file {path} does not exist")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise EdgekitError(f"{source}: weights {path.name}: give a {', '.join(WEIGHT_SUFFIXES)} file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgekitError(f"{source}: cannot read weights {path}: {one_line(exc)}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise EdgekitError(f"{source}: {path} holds no state dict")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EdgekitError(f"{source}: {path} does not fit the architecture: {len(result.missing_keys)} missing "
                           f"(e.g. {(result.missing_keys or ['-'])[0]}), {len(result.unexpected_keys)} unexpected "
                           f"(e.g. {(result.unexpected_keys or ['-'])[0]})")


def example_images(size: tuple[int, int], channels: int = 3) -> tuple[torch.Tensor]:
    """Two seeded normalized images: enough to trace and export; validation runs on the user's ``--data``."""
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(2, channels, *size, generator=generator),)
