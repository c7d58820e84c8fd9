"""The user's data for a model, one option per role: ``--calib DATA`` (calibration) and ``--data DATA``
(validation and bench accuracy). DATA is

- an image folder, read recursively with pillow through the model's preprocessing; with class sub-folders it also
  gives labels, as torchvision's ImageFolder does (by the model's label names where they match, else sorted);
- a ``.npz`` of arrays named by the model's inputs (optional ``labels``), for any modality;
- a text file, ``.txt`` (one sentence a line), ``.jsonl`` or ``.csv`` (a ``text`` field, optional ``text_pair``
  and ``label``), through the model's own tokenizer (edgekit.data.text);
- ``file.py:factory`` / ``package.module:factory``: a function returning an iterable of input dicts (one sample or
  one batch each; an optional ``label`` / ``labels`` entry), e.g. sentences through the model's own tokenizer;
- ``task:SPLIT`` of the built-in tasks.

Draws are seeded; every Dataset says where it came from."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgekit.data.pixels import image_to_input
from edgekit.data.preprocess import Preprocess
from edgekit.data.tasks import load_task
from edgekit.data.text import TEXT_SUFFIXES, label_indices, read_text
from edgekit.errors import EdgekitError, one_line
from edgekit.fsutil import read_npz

if TYPE_CHECKING:
    from edgekit.spec import Tokenize

METADATA_SUFFIXES = {".csv", ".json", ".md", ".txt", ".toml", ".npz", ".npy"}
# a folder of splits (image sub-folders calib/ and val/) gives its calib/ split to --calib, its val/ split to --data
SPLIT_FOLDERS = {"--calib": "calib", "--data": "val"}
KINDS = ("an image folder, a .npz of named arrays, a text file (.txt, .jsonl, .csv), FILE.py:FACTORY / "
         "module:FACTORY, or task:SPLIT")


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]  # by model input name, batch first
    labels: np.ndarray | None  # int64 [N] when the data has labels
    origin: str  # e.g. "200 images from photos/", "mnist-fusion val split"

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}

    def split(self, at: int) -> tuple[Dataset, Dataset]:
        """The first ``at`` samples and the rest, labels (if any) alongside."""
        def part(rows: slice) -> Dataset:
            labels = None if self.labels is None else self.labels[rows]
            return Dataset({k: v[rows] for k, v in self.inputs.items()}, labels, self.origin)
        return part(slice(0, at)), part(slice(at, None))

    def draw(self, samples: int, seed: int) -> Dataset:
        """At most ``samples`` of them, a seeded draw kept in the original order."""
        if len(self) <= samples:
            return self
        order = np.sort(np.random.default_rng(seed).permutation(len(self))[:samples])
        return Dataset({k: v[order] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[order], self.origin)


@dataclass(frozen=True)
class InputInfo:
    """What the data must fit: the model's input names, example shapes and dtypes, task, preprocessing."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    task: str | None = None
    labels: tuple[str, ...] = ()  # the model's class names
    preprocess: Preprocess | None = None  # resolved for the image input
    tokenize: Tokenize | None = None  # the model's tokenizer, for text files

    @staticmethod
    def of(spec) -> InputInfo:
        """From a loaded ModelSpec (its example inputs give shapes and dtypes)."""
        return InputInfo(spec.input_names, tuple(tuple(t.shape) for t in spec.example_inputs),
                         tuple(str(t.dtype).removeprefix("torch.") for t in spec.example_inputs), spec.task,
                         spec.labels, spec.preprocess if isinstance(spec.preprocess, Preprocess) else None,
                         spec.tokenize)

    def image_inputs(self) -> list[str]:
        return [n for n, s, d in zip(self.names, self.shapes, self.dtypes) if len(s) == 4 and d.startswith("float")]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in METADATA_SUFFIXES)


def _class_labels(folder: Path, files: list[Path], names: tuple[str, ...]) -> np.ndarray | None:
    """ImageFolder's rule: every image sits in a direct sub-folder, one per class. The class index is the model's
    label of that name, else the folder's number, else its rank among the sorted folders."""
    classes = [p.relative_to(folder).parts for p in files]
    if any(len(parts) != 2 for parts in classes):
        return None
    folders = sorted({parts[0] for parts in classes})
    if len(folders) < 2:
        return None
    if all(f in names for f in folders):
        index = {f: names.index(f) for f in folders}
    elif all(f.isdigit() for f in folders):
        index = {f: int(f) for f in folders}
    else:
        index = {f: i for i, f in enumerate(folders)}
    return np.array([index[parts[0]] for parts in classes], np.int64)


def _read_image(path: Path, pre: Preprocess) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return image_to_input(image, pre.size, pre.grayscale, pre.scale, pre.mean, pre.std, pre.center_crop,
                                  pre.interpolation)
    except Image.DecompressionBombError as exc:  # an image of hundreds of megapixels: refused before decoding
        raise EdgekitError(f"{path}: too large to read safely ({one_line(exc)})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise EdgekitError(f"{path} is not an image pillow can read ({exc.__class__.__name__})") from None


def _image_folder(folder: Path, info: InputInfo, role: str, samples: int, seed: int) -> Dataset:
    images = info.image_inputs()
    if len(info.names) != 1 or len(images) != 1:
        raise EdgekitError(f"{role} {folder}: an image folder feeds a model with one image input; this one has "
                           f"{', '.join(info.names)}: give a .npz of named arrays or a FILE.py:FACTORY of samples")
    if info.preprocess is None:
        raise EdgekitError(f"{role} {folder}: the model declares no preprocessing for its images: pass "
                           "--preprocess imagenet|inception|mnist|FILE.toml")
    files = _image_files(folder)
    if not files:
        raise EdgekitError(f"{role} {folder}: the folder holds no images")
    labels = _class_labels(folder, files, info.labels)
    picked = np.sort(np.random.default_rng(seed).permutation(len(files))[:samples])
    arrays = np.stack([_read_image(files[i], info.preprocess) for i in picked])
    return Dataset({images[0]: arrays}, None if labels is None else labels[picked],
                   f"{len(picked)} images from {folder}" + (" (labels from class folders)" if labels is not None
                                                            else ""))


def _fit(name: str, value, info: InputInfo, where: str) -> np.ndarray:
    """A sample or a batch for input ``name``, as a batch in the model's dtype."""
    i = info.names.index(name)
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.ndim == len(info.shapes[i]) - 1:
        array = array[None]
    if array.ndim != len(info.shapes[i]) or array.shape[1:] != tuple(info.shapes[i][1:]):
        raise EdgekitError(f"{where}: input {name!r} is {'x'.join(map(str, array.shape))}, the model's example is "
                           f"{'x'.join(map(str, info.shapes[i]))} (batch first)")
    return array.astype(info.dtypes[i], copy=False)


def _npz(path: Path, info: InputInfo, role: str) -> Dataset:
    arrays = read_npz(path, role)
    missing = [n for n in info.names if n not in arrays]
    if missing:
        raise EdgekitError(f"{role} {path}: no array for input(s) {', '.join(missing)} (it has "
                           f"{', '.join(arrays) or 'none'})")
    inputs = {n: _fit(n, arrays[n], info, f"{role} {path}") for n in info.names}
    labels = arrays.get("labels")
    return Dataset(inputs, None if labels is None else labels.astype(np.int64), f"{path.name}")


def _text_file(path: Path, info: InputInfo, role: str) -> Dataset:
    """Sentences (or pairs) through the model's tokenizer, at its example's length."""
    if info.tokenize is None:
        raise EdgekitError(f"{role} {path}: a text file needs the model's tokenizer, and this model has none (an "
                           "hf: source has one): give a .npz of named arrays or a FILE.py:FACTORY of samples")
    rows = read_text(path, role)
    try:
        tokens = info.tokenize(rows.texts, rows.pairs)
    except Exception as exc:
        raise EdgekitError(f"{role} {path}: the model's tokenizer failed on it: {one_line(exc)}") from None
    inputs = {n: _fit(n, tokens[n], info, f"{role} {path}") for n in info.names}
    labels = None if rows.labels is None else label_indices(rows.labels, info.labels, f"{role} {path}")
    what = "sentence pairs" if rows.pairs is not None else "sentences"
    return Dataset(inputs, labels, f"{len(rows.texts)} {what} from {path}")


def _factory(source: str, info: InputInfo, role: str) -> Dataset:
    from edgekit.source import call_factory

    items = call_factory(source, what="data factory")
    parts: dict[str, list[np.ndarray]] = {n: [] for n in info.names}
    labels: list[np.ndarray] = []
    try:
        for item in items:
            if not isinstance(item, dict):
                raise EdgekitError(f"{role} {source}: the factory must yield dicts of input arrays, got "
                                   f"{type(item).__name__}")
            missing = [n for n in info.names if n not in item]
            if missing:
                raise EdgekitError(f"{role} {source}: a sample has no {', '.join(missing)}")
            batch = {n: _fit(n, item[n], info, f"{role} {source}") for n in info.names}
            for n, v in batch.items():
                parts[n].append(v)
            label = item.get("label", item.get("labels"))
            if label is not None:
                labels.append(np.atleast_1d(np.asarray(label, np.int64)))
    except EdgekitError:
        raise
    except Exception as exc:
        raise EdgekitError(f"{role} {source}: the factory failed: {one_line(exc)}") from None
    if not parts[info.names[0]]:
        raise EdgekitError(f"{role} {source}: the factory gave no samples")
    inputs = {n: np.concatenate(v) for n, v in parts.items()}
    n = len(inputs[info.names[0]])
    return Dataset(inputs, np.concatenate(labels) if labels and sum(map(len, labels)) == n else None,
                   f"{n} samples from {source}")


def load_data(data: str | Path, info: InputInfo, role: str, samples: int, seed: int = 0) -> Dataset:
    """Up to ``samples`` of DATA for a model, seeded; ``role`` ("--calib", "--data") names the option in errors."""
    text = str(data)
    if text.startswith("task:"):
        if info.task is None:
            raise EdgekitError(f"{role} {text}: this model has no built-in task; give an image folder, a .npz "
                               "of named arrays or a FILE.py:FACTORY of samples")
        task = load_task(info.task, text[5:])
        missing = [n for n in info.names if n not in task.inputs]
        if missing:
            raise EdgekitError(f"{role} {text}: task {info.task!r} has no data for input(s) {', '.join(missing)}")
        found = Dataset({n: task.inputs[n] for n in info.names}, task.labels, f"{info.task} {text[5:]} split")
    elif Path(text).is_dir():
        folder = Path(text)
        split = folder / SPLIT_FOLDERS.get(role, "")
        return _image_folder(split if split != folder and split.is_dir() else folder, info, role, samples, seed)
    elif text.endswith(".npz"):
        if not Path(text).is_file():
            raise EdgekitError(f"{role} {text} does not exist")
        found = _npz(Path(text), info, role)
    elif text.lower().endswith(TEXT_SUFFIXES):
        found = _text_file(Path(text), info, role)
    elif ":" in text and not Path(text).exists():
        found = _factory(text, info, role)
    else:
        raise EdgekitError(f"{role} {text}: not {KINDS}" + ("" if Path(text).exists() else " (no such path)"))
    return found.draw(samples, seed)
