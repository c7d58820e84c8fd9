"""Preprocessing: how an image file becomes a model input. Declared once (on the ModelSpec, or ``--preprocess
PRESET|FILE.toml``), checked against the model's image input before anything runs, written into every manifest
and bundle, and applied by calibration, validation data, ``run.py --input`` and ``example.py`` alike."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Preprocess:
    """``x = (pixel * scale - mean) / std`` per channel, channels first. ``size`` (height, width) None takes the
    model input's; ``center_crop`` None stretches the image to ``size``, a fraction f resizes the shorter side
    to size / f and cuts the centre (ImageNet's 0.875: 256 -> 224). ``interpolation`` is the resize filter
    (bilinear or bicubic, as the model's library resizes)."""

    size: tuple[int, int] | None = None
    grayscale: bool = False
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    center_crop: float | None = None
    interpolation: str = "bilinear"

    def channels(self) -> int:
        return 1 if self.grayscale else 3


PRESETS = {
    "mnist": Preprocess(grayscale=True, mean=(0.1307,), std=(0.3081,)),
    "imagenet": Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), center_crop=0.875),
    "inception": Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), center_crop=0.875),  # [-1, 1]
}
KEYS = {f.name for f in fields(Preprocess)}
INTERPOLATIONS = ("bilinear", "bicubic")


def from_table(table: dict, where: str) -> Preprocess:
    """A TOML table: ``preset = "imagenet"`` (optional) and any of the fields, which override it."""
    unknown = sorted(set(table) - KEYS - {"preset"})
    if unknown:
        raise EdgekitError(f"{where}: unknown key {unknown[0]!r} (allowed: preset, {', '.join(sorted(KEYS))})")
    base = PRESETS.get(table.get("preset", ""), Preprocess()) if "preset" in table else Preprocess()
    if "preset" in table and table["preset"] not in PRESETS:
        raise EdgekitError(f"{where}: unknown preset {table['preset']!r} (presets: {', '.join(PRESETS)})")
    values = {k: tuple(v) if k in ("size", "mean", "std") else v for k, v in table.items() if k != "preset"}
    try:
        pre = replace(base, **values)
    except TypeError as exc:
        raise EdgekitError(f"{where}: {exc}") from None
    if len(pre.mean) != len(pre.std) or len(pre.mean) not in (1, pre.channels()):
        raise EdgekitError(f"{where}: mean and std need 1 or {pre.channels()} values each")
    if pre.center_crop is not None and not 0 < pre.center_crop <= 1:
        raise EdgekitError(f"{where}: center_crop must be in (0, 1]")
    if pre.interpolation not in INTERPOLATIONS:
        raise EdgekitError(f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}")
    return pre


def parse(value: str | Preprocess | None, where: str = "--preprocess") -> Preprocess | None:
    """A preset name, a TOML file, or an already built Preprocess (what a ModelSpec may carry)."""
    if value is None or isinstance(value, Preprocess):
        return value
    if value in PRESETS:
        return PRESETS[value]
    path = Path(value)
    if path.suffix != ".toml":
        raise EdgekitError(f"{where} {value!r}: not a preset ({', '.join(PRESETS)}) or a .toml file")
    if not path.is_file():
        raise EdgekitError(f"{where}: {path} does not exist")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EdgekitError(f"{path}: not valid TOML: {exc}") from None
    return from_table(table, str(path))


def resolve(pre: Preprocess, name: str, shape: tuple[int, ...]) -> Preprocess:
    """The preprocessing made concrete for an image input of ``shape`` [batch, C, H, W], or a one-line error
    naming both shapes."""
    if len(shape) != 4:
        raise EdgekitError(f"preprocessing makes images, but input {name!r} is {'x'.join(map(str, shape))}")
    size = pre.size or (shape[2], shape[3])
    makes = f"{pre.channels()}x{size[0]}x{size[1]} ({'grayscale' if pre.grayscale else 'RGB'})"
    wants = "x".join(map(str, shape[1:]))
    if pre.channels() != shape[1] or tuple(size) != tuple(shape[2:]):
        raise EdgekitError(f"the preprocessing makes {makes} images, but the model's input {name!r} is {wants}: "
                           "pass --preprocess PRESET|FILE.toml that fits it")
    return replace(pre, size=(int(size[0]), int(size[1])))
