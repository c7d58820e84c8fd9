"""Local explanations, computed by running each artifact: occlusion sensitivity maps (grey out one patch at a
time, see how much the class probability drops), and gradient saliency of the torch original as the reference.

The occluded inputs are made once here (numpy only) and run by every bench worker, so each runtime's map comes
from its own outputs; all maps use the class torch predicts for the unoccluded sample."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 7  # patches per side
SAMPLES = 8


@dataclass(frozen=True)
class OcclusionPlan:
    image_input: str
    samples: tuple[int, ...]  # indices into the validation inputs
    patch: int
    grid: tuple[int, int]

    @property
    def per_sample(self) -> int:
        return 1 + self.grid[0] * self.grid[1]  # the unoccluded input first


@dataclass(frozen=True)
class MapAgreement:
    """A runtime's occlusion maps against torch's (the same samples, the same classes)."""

    cosine: float
    max_abs_error: float
    top_patch_agreement: float  # share of samples whose most important patch is the same


def image_input(inputs: dict[str, np.ndarray]) -> str | None:
    return next((k for k, v in inputs.items() if v.ndim == 4 and v.dtype.kind == "f"), None)


def occlusion_inputs(inputs: dict[str, np.ndarray], labels: np.ndarray | None,
                     samples: int = SAMPLES) -> tuple[dict[str, np.ndarray], OcclusionPlan] | None:
    """The batch every runtime runs: for each chosen sample, the sample itself, then one copy per patch with that
    patch set to the image's background (its minimum). None for models without an image input."""
    name = image_input(inputs)
    if name is None:
        return None
    n = len(inputs[name])
    # one sample per class first (when labelled), so the maps show different digits
    order = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)] if labels is not None else []
    chosen = tuple(dict.fromkeys(order + list(range(n))))[:min(samples, n)]
    _, _, height, width = inputs[name].shape
    patch = -(-max(height, width) // GRID)
    grid = (-(-height // patch), -(-width // patch))
    batch = {k: [] for k in inputs}
    for i in chosen:
        image = inputs[name][i]
        batch[name].append(image)
        for gy in range(grid[0]):
            for gx in range(grid[1]):
                occluded = image.copy()
                occluded[:, gy * patch:(gy + 1) * patch, gx * patch:(gx + 1) * patch] = image.min()
                batch[name].append(occluded)
        for k in inputs:
            if k != name:
                batch[k].extend([inputs[k][i]] * (1 + grid[0] * grid[1]))
    return {k: np.stack(v) for k, v in batch.items()}, OcclusionPlan(name, chosen, patch, grid)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def occlusion_maps(logits: np.ndarray, plan: OcclusionPlan, classes: np.ndarray) -> np.ndarray:
    """[samples, grid_h, grid_w]: the probability of ``classes[s]`` lost when each patch is hidden."""
    probs = softmax(logits).reshape(len(plan.samples), plan.per_sample, -1)
    picked = probs[np.arange(len(plan.samples)), :, classes]  # [samples, 1 + patches]
    return (picked[:, :1] - picked[:, 1:]).reshape(len(plan.samples), *plan.grid)


def predicted_classes(logits: np.ndarray, plan: OcclusionPlan) -> np.ndarray:
    return logits.reshape(len(plan.samples), plan.per_sample, -1)[:, 0].argmax(-1)


def agreement(reference: np.ndarray, actual: np.ndarray) -> MapAgreement:
    ref, act = reference.reshape(len(reference), -1), actual.reshape(len(actual), -1)
    norms = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float((ref * act).sum() / norms) if norms > 0 else float(np.array_equal(ref, act))
    return MapAgreement(cosine, float(np.abs(ref - act).max(initial=0.0)),
                        float((ref.argmax(1) == act.argmax(1)).mean()))


def pool_to_grid(saliency: np.ndarray, plan: OcclusionPlan) -> np.ndarray:
    """Pixel saliency [samples, H, W] summed per occlusion patch, for comparing the two kinds of map."""
    s, h, w = saliency.shape
    ph, pw = plan.grid[0] * plan.patch, plan.grid[1] * plan.patch
    padded = np.zeros((s, ph, pw))
    padded[:, :h, :w] = saliency
    return padded.reshape(s, plan.grid[0], plan.patch, plan.grid[1], plan.patch).sum((2, 4))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho over all cells (ties broken by position)."""
    ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def gradient_saliency(module, inputs: dict[str, np.ndarray], input_names: tuple[str, ...], plan: OcclusionPlan,
                      classes: np.ndarray) -> np.ndarray:
    """|d logit_c / d pixel|, max over channels, from the torch original: [samples, H, W]."""
    import torch

    feed = [torch.from_numpy(inputs[n][list(plan.samples)].copy()) for n in input_names]
    image = feed[input_names.index(plan.image_input)].requires_grad_(True)
    output = module.eval()(*feed)
    logits = output[0] if isinstance(output, (tuple, list)) else output
    logits[torch.arange(len(classes)), torch.from_numpy(classes)].sum().backward()
    return image.grad.abs().amax(1).numpy()
