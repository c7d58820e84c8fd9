"""Plots for report.html, as base64 PNGs: attention over the image, attention bars per class, text-token
attention, heads side by side per runtime, occlusion and saliency maps. Torch first, then each runtime."""
from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

import numpy as np

from edgekit.validate.explain import image_input

if TYPE_CHECKING:
    from edgekit.results import BenchResult

SHOWN = 4  # samples per figure
MAX_GROUPS = 8


def png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _side(n: int) -> int | None:
    root = math.isqrt(n)
    return root if root * root == n and root > 1 else None


def spatial(attention: np.ndarray) -> tuple[np.ndarray, int] | None:
    """[batch, side*side] attention over image positions, or None when the keys are not a square grid.
    A key count of side*side + 1 is read as a class token first: its query row over the patches is used. Group
    axes are averaged (the last layer only, when there are layers and heads)."""
    keys = attention.shape[-1]
    if attention.ndim == 2:
        side = _side(keys)
        return (attention, side) if side else None
    if attention.ndim == 5:
        attention = attention[:, -1]
    side = _side(keys)
    if side:
        rows = attention.reshape(len(attention), -1, keys).mean(1)
    elif (side := _side(keys - 1)) and attention.shape[-2] == keys:
        rows = attention[..., 0, 1:].reshape(len(attention), -1, keys - 1).mean(1)
    else:
        return None
    return rows, side


def _rows(result: BenchResult) -> list[str]:
    return [r.target for r in result.rows if r.measurement is not None and r.target in result.outputs]


def _images(result: BenchResult) -> tuple[str, np.ndarray] | None:
    name = image_input(result.reference.inputs)
    return (name, result.reference.inputs[name]) if name else None


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(0) if image.shape[0] != 1 else image[0]


def _samples(result: BenchResult) -> list[int]:
    e = result.explanation
    return list(e.plan.samples[:SHOWN]) if e else list(range(SHOWN))


def attention_over_image(result: BenchResult, output: str) -> str | None:
    plt = pyplot()
    images = _images(result)
    ref = spatial(result.reference.outputs[output])
    if images is None or ref is None:
        return None
    names = ["torch"] + _rows(result)
    samples = _samples(result)
    fig, axes = plt.subplots(len(names), len(samples), figsize=(1.6 * len(samples), 1.7 * len(names)),
                             squeeze=False)
    for i, name in enumerate(names):
        maps = ref[0] if name == "torch" else spatial(result.outputs[name][output])[0]
        for j, s in enumerate(samples):
            ax = axes[i][j]
            image = _gray(images[1][s])
            ax.imshow(image, cmap="gray")
            ax.imshow(maps[s].reshape(ref[1], ref[1]), cmap="jet", alpha=0.45, interpolation="bilinear",
                      extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    return png(fig)


def attention_bars(result: BenchResult, output: str) -> str | None:
    """Mean attention per position for each class (true label), torch as bars and each runtime as markers."""
    plt = pyplot()
    ref = spatial(result.reference.outputs[output])
    labels = result.reference.labels
    if ref is None or labels is None:
        return None
    classes = np.unique(labels)
    cols = min(5, len(classes))
    fig, axes = plt.subplots(math.ceil(len(classes) / cols), cols, figsize=(3 * cols, 2.2 * math.ceil(
        len(classes) / cols)), squeeze=False)
    runtimes = {name: spatial(result.outputs[name][output])[0] for name in _rows(result)}
    for k, c in enumerate(classes):
        ax = axes[k // cols][k % cols]
        mask = labels == c
        positions = np.arange(ref[0].shape[1])
        ax.bar(positions, ref[0][mask].mean(0), color="#9ab", label="torch")
        for name, maps in runtimes.items():
            ax.plot(positions, maps[mask].mean(0), ".", markersize=4, label=name)
        ax.set_title(f"class {c}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=5)
    for k in range(len(classes), axes.size):
        axes[k // cols][k % cols].axis("off")
    return png(fig)


def token_attention(result: BenchResult, output: str) -> str | None:
    """Caption tokens (rows) over image positions (columns), heads averaged, one sample, per runtime."""
    plt = pyplot()
    att = result.reference.outputs[output]
    tokens = next((k for k, v in result.reference.inputs.items() if v.dtype.kind in "iu" and v.ndim == 2
                   and att.ndim >= 3 and v.shape[1] == att.shape[-2]), None)
    if tokens is None:
        return None
    sample = _samples(result)[0]
    words = _words(result, result.reference.inputs[tokens][sample])
    names = ["torch"] + _rows(result)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.6), squeeze=False)
    for i, name in enumerate(names):
        data = att if name == "torch" else result.outputs[name][output]
        grid = data[sample].reshape(-1, *data.shape[-2:]).mean(0)
        ax = axes[0][i]
        ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
        ax.set_title(name, fontsize=7)
        ax.set_yticks(range(len(words)), words if i == 0 else [""] * len(words), fontsize=6)
        ax.set_xlabel("image position", fontsize=6)
        ax.tick_params(labelsize=5)
    return png(fig)


def _words(result: BenchResult, ids: np.ndarray) -> list[str]:
    if result.task == "mnist-fusion":
        from edgekit.data.captions import decode_tokens

        # plot fonts may lack CJK glyphs: such words are labelled by code point
        return [w if w.isascii() else " ".join(f"U+{ord(ch):04X}" for ch in w) for w in decode_tokens(ids)]
    return [str(int(i)) for i in ids]


def heads_side_by_side(result: BenchResult, output: str) -> str | None:
    """Each group (layer/head) of one sample, per runtime: [query x key] heat maps."""
    from edgekit.validate.attention import group_names

    plt = pyplot()
    att = result.reference.outputs[output]
    groups = group_names(att.shape)
    if len(groups) < 2:
        return None
    groups = groups[:MAX_GROUPS]
    sample = _samples(result)[0]
    names = ["torch"] + _rows(result)
    fig, axes = plt.subplots(len(names), len(groups), figsize=(1.5 * len(groups), 1.6 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        data = att if name == "torch" else result.outputs[name][output]
        for j, (label, index) in enumerate(groups):
            ax = axes[i][j]
            ax.imshow(data[(sample, *index)], cmap="magma", vmin=0, aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    return png(fig)


def occlusion(result: BenchResult) -> str | None:
    e = result.explanation
    if e is None:
        return None
    plt = pyplot()
    names = list(e.maps)
    cols = 2 + (e.saliency is not None) + len(names)
    shown = min(SHOWN, len(e.plan.samples))
    fig, axes = plt.subplots(shown, cols, figsize=(1.5 * cols, 1.6 * shown), squeeze=False)
    for s in range(shown):
        # scaled per sample: one confident digit would wash out the others
        vmax = max(float(np.abs(e.torch_maps[s]).max()), 1e-9)
        panels = [("input", _gray(e.images[s]), "gray", None)]
        if e.saliency is not None:
            panels.append(("torch saliency", e.saliency[s], "hot", None))
        panels.append(("torch occlusion", e.torch_maps[s], "RdBu_r", vmax))
        panels += [(name, e.maps[name][s], "RdBu_r", vmax) for name in names]
        for j, (title, data, cmap, v) in enumerate(panels):
            ax = axes[s][j]
            ax.imshow(data, cmap=cmap, **({"vmin": -v, "vmax": v} if v else {}))
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_title(title, fontsize=6)
        axes[s][0].set_ylabel(f"class {e.classes[s]}", fontsize=7)
    return png(fig)


def figures(result: BenchResult) -> list[tuple[str, str]]:
    if result.reference is None:
        return []
    out = []
    for output in result.attention_outputs:
        if output not in result.reference.outputs:
            continue
        for title, make in ((f"{output}: attention over the input image (torch, then each runtime)",
                             attention_over_image),
                            (f"{output}: mean attention per position for each class (bars: torch; dots: runtimes)",
                             attention_bars),
                            (f"{output}: caption tokens attending over image positions", token_attention),
                            (f"{output}: layers and heads side by side, one sample", heads_side_by_side)):
            image = make(result, output)
            if image:
                out.append((title, image))
    if image := occlusion(result):
        out.append(("Occlusion sensitivity on each runtime (red: hiding the patch lowers the class probability), "
                    "with torch gradient saliency", image))
    return out
