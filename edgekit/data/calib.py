"""Calibration data for int8: an image folder read with pillow, or the model's own task split (``task:calib``).

Sampling is deterministic (seeded). There is no default data: int8 without calibration data is an error."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgekit.data.pixels import image_to_input
from edgekit.data.tasks import load_task
from edgekit.errors import EdgekitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
METADATA_SUFFIXES = {".csv", ".json", ".md", ".txt", ".toml"}
HOW = ("pass --calib DIR (a folder of PNG/JPEG images; a folder with a calib/ subfolder uses that) "
       "or --calib task:calib (the model's own calibration split, e.g. the fusion model's image+caption pairs)")


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input: resized, converted, scaled and normalized."""

    size: tuple[int, int] = (28, 28)  # height, width
    grayscale: bool = True
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)


@dataclass(frozen=True)
class Augment:
    """Optional calibration augmentation (seeded): horizontal flips, random crops, brightness jitter."""

    flip: bool = False
    crop: int = 0  # pixels of random crop-and-pad
    brightness: float = 0.0  # +/- fraction


@dataclass(frozen=True)
class CalibrationData:
    inputs: dict[str, np.ndarray]  # by model input name, NCHW float32 / int64 tokens
    origin: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, size: int = 1):
        n = len(self)
        for start in range(0, n, size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}


def read_image(path: Path, pre: Preprocess) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return image_to_input(img, **asdict(pre))
    except (UnidentifiedImageError, OSError) as exc:
        raise EdgekitError(f"calibration file {path} is not an image pillow can read ({exc.__class__.__name__})") \
            from None


def image_files(folder: Path) -> tuple[Path, list[Path]]:
    """The folder used (its calib/ subfolder if it has one) and every file below it but metadata (CSV, JSON,
    ...); a file that is not an image is an error when it is read."""
    if (folder / "calib").is_dir():
        folder = folder / "calib"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() not in METADATA_SUFFIXES)
    if not files:
        raise EdgekitError(f"calibration folder {folder} holds no images; {HOW}")
    return folder, files


def augment(images: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()
    if aug.flip:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip][..., ::-1]
    if aug.crop:
        for i in range(len(out)):
            dy, dx = rng.integers(-aug.crop, aug.crop + 1, size=2)
            out[i] = np.roll(out[i], (dy, dx), axis=(-2, -1))
    if aug.brightness:
        out *= (1 + rng.uniform(-aug.brightness, aug.brightness, size=(len(out), 1, 1, 1))).astype(np.float32)
    return out


def load_calibration(calib: str | Path | None, input_names: tuple[str, ...], task: str | None, samples: int,
                     seed: int = 0, preprocess: Preprocess = Preprocess(), aug: Augment = Augment()) -> CalibrationData:
    if calib is None or str(calib) == "":
        raise EdgekitError(f"int8 needs calibration data: {HOW}")
    rng = np.random.default_rng(seed)
    text = str(calib)
    if text.startswith("task:"):
        if task is None:
            raise EdgekitError("--calib task:SPLIT needs a model with a task; give an image folder instead")
        data = load_task(task, text[5:])
        inputs = {k: data.inputs[k] for k in input_names}
        origin = f"{task} {text[5:]} split"
    else:
        folder = Path(text)
        if not folder.is_dir():
            raise EdgekitError(f"calibration folder {folder} does not exist; {HOW}")
        if len(input_names) != 1:
            raise EdgekitError(f"the model has {len(input_names)} inputs ({', '.join(input_names)}); an image folder "
                               "feeds one: use --calib task:calib for paired inputs")
        folder, files = image_files(folder)
        picked = [files[i] for i in sorted(rng.permutation(len(files))[:samples])]
        inputs = {input_names[0]: np.stack([read_image(p, preprocess) for p in picked])}
        origin = f"{len(picked)} images from {folder}"
    n = len(next(iter(inputs.values())))
    order = np.sort(rng.permutation(n)[:samples])
    inputs = {k: v[order] for k, v in inputs.items()}
    if aug != Augment():
        inputs = {k: augment(v, aug, rng) if v.ndim == 4 else v for k, v in inputs.items()}
    return CalibrationData(inputs, origin)
