"""``hf:PATH_OR_ID[?task=...&length=N]``: a transformers model from a ``save_pretrained`` folder or the local
Hugging Face cache, offline (``local_files_only`` everywhere: never a network call).

The folder's ``config.json`` says the task (``architectures[0]``: ``*ForSequenceClassification``,
``*ForImageClassification``, else a base model for feature extraction; Optimum's TasksManager cannot infer it from
a local folder) and the class names (``id2label``). The tokenizer gives the text inputs (its own input names that
the forward takes, padded to ``length`` tokens, dynamic in length) and the tokenizer of text data files; the image
processor gives ``pixel_values`` and its preprocessing (size, crop, rescale, mean, std). Attention is eager so that
the attention maps are outputs for the attention report. The tokenizer, processor and config files travel into
every target folder and bundle, so the device can tokenize as the host did."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.data.preprocess import Preprocess
from edgekit.errors import EdgekitError, one_line
from edgekit.sources import split_options
from edgekit.sources.vision import ensure_torchvision_importable
from edgekit.spec import ModelSpec

# task -> the transformers Auto class that builds it
TASKS = {"feature-extraction": "AutoModel", "text-classification": "AutoModelForSequenceClassification",
         "image-classification": "AutoModelForImageClassification"}
HEADS = {"ForSequenceClassification": "text-classification", "ForImageClassification": "image-classification"}
OPTIONS = {"task", "length"}
DEFAULT_LENGTH = 32  # tokens per example (padded); validation also runs at half of it
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# the files a device needs to turn text or a photo into the model's inputs, where the folder has them
ASSETS = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
          "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
          "preprocessor_config.json")
# two real sentences: the example inputs (batch 2 keeps the batch dynamic on every exporter)
EXAMPLE = ("Beautiful is better than ugly.", "Edge devices run small models close to the sensors they read.")


@dataclass(frozen=True)
class Tokenize:
    """Sentences (and optional second sentences of pairs) -> the model's text inputs, int64, padded or cut to
    ``length`` tokens: what example inputs and text data files go through."""

    tokenizer: Any
    names: tuple[str, ...]
    length: int

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(list(texts), None if pairs is None else list(pairs), padding="max_length",
                                 max_length=self.length, truncation=True, return_tensors="np")
        return {n: np.asarray(encoded[n], np.int64) for n in self.names}


def _transformers():
    ensure_torchvision_importable()  # transformers imports torchvision when it is installed
    try:
        import transformers
    except ImportError:
        raise EdgekitError("hf: sources need transformers: pip install 'edgekit[hf]'") from None
    return transformers


def _options(name: str) -> tuple[str, dict[str, str]]:
    """``./bert?task=feature-extraction&length=64`` -> ("./bert", {"task": ..., "length": "64"})."""
    where, options = split_options("hf", name, tuple(sorted(OPTIONS)))
    if not options.get("length", "0").isdigit():
        raise EdgekitError(f"hf:{name}: length={options['length']} is not a number of tokens")
    return where, options


def resolve(where: str) -> Path:
    """A ``save_pretrained`` folder, else the snapshot of a model id in the local Hugging Face cache."""
    path = Path(where).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EdgekitError(f"hf:{where}: {path} is a file; give the folder save_pretrained wrote")
        if not (path / "config.json").is_file():
            raise EdgekitError(f"hf:{where}: {path} has no config.json (not a save_pretrained folder)")
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(where, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        raise EdgekitError(f"hf:{where}: no such folder, and no model {where!r} in the Hugging Face cache "
                           f"{constants.HF_HUB_CACHE} (edgekit never downloads: save_pretrained it first)") from None


def _config(folder: Path, where: str):
    try:
        return _transformers().AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise EdgekitError(f"hf:{where}: transformers cannot read {folder / 'config.json'}: {one_line(exc)}") from None


def _task(config, override: str | None, where: str) -> str:
    if override is not None:
        if override not in TASKS:
            raise EdgekitError(f"hf:{where}: unknown task {override!r}; edgekit knows {', '.join(TASKS)}")
        return override
    architecture = (getattr(config, "architectures", None) or [""])[0]
    for suffix, task in HEADS.items():
        if architecture.endswith(suffix):
            return task
    if not architecture or ("For" not in architecture and architecture.endswith("Model")
                            and not architecture.endswith("LMHeadModel")):
        return "feature-extraction"
    raise EdgekitError(f"hf:{where}: architecture {architecture} is no task edgekit knows (feature-extraction: "
                       "a base *Model, text-classification: *ForSequenceClassification, image-classification: "
                       "*ForImageClassification); ?task=feature-extraction exports its base model")


def _model(folder: Path, task: str, where: str) -> torch.nn.Module:
    """In eval mode with eager attention (the fused kernels return no attention maps), where the model has it."""
    auto = getattr(_transformers(), TASKS[task])
    try:
        try:
            model = auto.from_pretrained(folder, local_files_only=True, attn_implementation="eager",
                                         output_attentions=True)
        except ValueError:  # a model without eager attention: no attention maps, the model all the same
            model = auto.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise EdgekitError(f"hf:{where}: transformers cannot build it as {task}: {one_line(exc)}") from None
    return model.eval()


def _forward_names(model: torch.nn.Module) -> list[str]:
    return list(inspect.signature(model.forward).parameters)


def _text(folder: Path, model: torch.nn.Module, config, length: int, where: str) -> Tokenize:
    try:
        tokenizer = _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise EdgekitError(f"hf:{where}: {folder} has no tokenizer or image processor transformers can load "
                           f"({one_line(exc)}); write a FILE.py:FACTORY") from None
    accepted = _forward_names(model)
    names = tuple(n for n in accepted if n in TEXT_INPUTS and n in tokenizer.model_input_names)
    if "input_ids" not in names:
        raise EdgekitError(f"hf:{where}: the model's forward takes no input_ids ({', '.join(accepted[:4])}, ...)")
    limits = [n for n in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length)
              if isinstance(n, int) and n < 1_000_000]
    if not 2 <= length <= min(limits, default=length):
        raise EdgekitError(f"hf:{where}: length {length} must lie in 2..{min(limits, default=length)} (the model's "
                           "longest input)")
    return Tokenize(tokenizer, names, length)


def _size(value) -> tuple[int | None, int | None, int | None]:
    """(height, width, shortest_edge) of a processor's size or crop_size (a dict or an int)."""
    if value is None:
        return None, None, None
    if isinstance(value, int):
        return value, value, None
    get = value.get if isinstance(value, dict) else lambda k: getattr(value, k, None)
    return get("height"), get("width"), get("shortest_edge")


def preprocess_of(processor, channels: int) -> Preprocess:
    """The image processor's resize, centre crop, rescale, normalization and filter as edgekit's Preprocess. A
    processor that resizes to height x width before its crop is read as a resize of the shorter side (the same on
    square images; on others edgekit keeps the aspect ratio where the processor stretches)."""
    height, width, shortest = _size(getattr(processor, "size", None))
    crop = getattr(processor, "do_center_crop", False) and _size(getattr(processor, "crop_size", None))
    center_crop = None
    if crop and crop[0]:
        resized = shortest or height
        height, width, center_crop = crop[0], crop[1], min(1.0, crop[0] / resized) if resized else None
    elif shortest and not height:
        height = width = shortest
    if not (height and width):
        raise EdgekitError(f"the image processor {type(processor).__name__} gives no image size edgekit reads")
    normalize = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if normalize else (0.0,)
    std = tuple(processor.image_std) if normalize else (1.0,)
    scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    resample = getattr(processor, "resample", None)  # pillow's filter number: 3 is bicubic
    return Preprocess(size=(int(height), int(width)), grayscale=channels == 1, scale=scale, mean=mean, std=std,
                      center_crop=center_crop, interpolation="bicubic" if resample == 3 else "bilinear")


def _image(folder: Path, config, where: str) -> Preprocess:
    try:
        processor = _transformers().AutoImageProcessor.from_pretrained(folder, local_files_only=True,
                                                                       backend="pil")
    except Exception as exc:
        raise EdgekitError(f"hf:{where}: cannot load the image processor of {folder}: {one_line(exc)}") from None
    return preprocess_of(processor, getattr(config, "num_channels", 3))


def _labels(config, task: str) -> tuple[str, ...]:
    """``id2label`` in class order, unless a base model's or transformers' defaults (LABEL_0, LABEL_1, ...)."""
    names = dict(getattr(config, "id2label", None) or {})
    labels = tuple(str(names[i]) for i in sorted(names))
    if task == "feature-extraction" or labels == tuple(f"LABEL_{i}" for i in range(len(labels))):
        return ()
    return labels


def _attention_outputs(model: torch.nn.Module, example: dict[str, torch.Tensor], where: str) -> tuple[str, ...]:
    """The attention maps' output names as edgekit.source.FlatOutputs names a tuple under a key."""
    try:
        with torch.no_grad():
            out = model(**example)
    except Exception as exc:  # e.g. a model that needs more inputs than a tokenizer or a processor gives
        raise EdgekitError(f"hf:{where}: the model does not run on {', '.join(example)} alone: {one_line(exc)}; "
                           "write a FILE.py:FACTORY") from None
    maps = out.get("attentions") if hasattr(out, "get") else None
    return tuple(f"attentions_{i}" for i in range(len(maps or ())))


def load(name: str) -> ModelSpec:
    """The ModelSpec of ``hf:NAME``: the model with its example inputs, labels, preprocessing or tokenizer,
    dynamic length for text, attention outputs and the files to carry."""
    where, options = _options(name)
    folder = resolve(where)
    config = _config(folder, where)
    task = _task(config, options.get("task"), where)
    model = _model(folder, task, where)
    tokenize, preprocess, dynamic = None, None, {}
    if (folder / "preprocessor_config.json").is_file() and "pixel_values" in _forward_names(model):
        preprocess = _image(folder, config, where)
        shape = (2, preprocess.channels(), *preprocess.size)
        example = {"pixel_values": torch.randn(shape, generator=torch.Generator().manual_seed(0))}
    else:
        tokenize = _text(folder, model, config, int(options.get("length", DEFAULT_LENGTH)), where)
        example = {k: torch.from_numpy(v) for k, v in tokenize(list(EXAMPLE)).items()}
        dynamic = {n: (1,) for n in example}
    return ModelSpec(model, tuple(example.values()), tuple(example), labels=_labels(config, task),
                     attention_outputs=_attention_outputs(model, example, where), preprocess=preprocess,
                     dynamic_axes=dynamic, tokenize=tokenize,
                     assets=tuple(folder / f for f in ASSETS if (folder / f).is_file()))
