"""``timm:NAME[?weights=FILE|none]``: a timm architecture by name, with real weights from a file the user names or
from the Hugging Face cache timm itself fills (offline: never a download), and timm's own preprocessing (the
pretrained config's input size, interpolation, mean, std and crop) and ImageNet class names."""
from __future__ import annotations

from pathlib import Path

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


def _timm():
    ensure_torchvision_importable()
    try:
        import timm
        import timm.data
    except ImportError:
        raise EdgekitError("timm: sources need timm: pip install 'edgekit[vision]'") from None
    return timm


def _cached_weights(model, source: str) -> Path:
    """The file timm's ``pretrained=True`` would read from the Hugging Face cache, or a one-line error."""
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = model.pretrained_cfg.get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename) if hub_id else None
        if isinstance(found, str):
            return Path(found)
    raise EdgekitError(f"{source}: no weights of {hub_id or 'this model'} in the Hugging Face cache "
                       f"({constants.HF_HUB_CACHE}); pass {source}?weights=FILE (.safetensors or .pth), or "
                       "?weights=none for random weights")


def preprocess_of(config: dict) -> Preprocess:
    """timm's resolved data config as edgekit's Preprocess."""
    crop = config.get("crop_pct") if config.get("crop_mode", "center") == "center" else None
    return Preprocess(tuple(config["input_size"][1:]), config["input_size"][0] == 1, 1 / 255,
                      tuple(config["mean"]), tuple(config["std"]), crop,
                      "bicubic" if config.get("interpolation") == "bicubic" else "bilinear")


def load(source: str) -> ModelSpec:
    name, options = split_options("timm", source, ("weights",))
    timm = _timm()
    if not timm.is_model(name):
        raise no_such_model("timm", name, timm.list_models())
    model = timm.create_model(name, pretrained=False)
    weights = options.get("weights")
    if weights != "none":
        load_weights(model, Path(weights) if weights else _cached_weights(model, f"timm:{name}"), f"timm:{name}")
    config = timm.data.resolve_model_data_config(model)
    labels: tuple[str, ...] = ()
    if model.num_classes == 1000:
        info = timm.data.ImageNetInfo()
        labels = tuple(info.index_to_description(i) for i in range(1000))
    pre = preprocess_of(config)
    return ModelSpec(model.eval(), example_images(pre.size, pre.channels()), ("image",), labels=labels,
                     preprocess=pre)
