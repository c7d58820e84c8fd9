"""Attention and occlusion metrics on hand-made inputs whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.report.plots import spatial
from edgekit.validate.attention import attention_stats, group_names, js_divergence
from edgekit.validate.explain import agreement, occlusion_inputs, occlusion_maps, rank_correlation


def test_js_divergence_is_0_for_the_same_and_1_bit_for_disjoint():
    p = np.array([[0.5, 0.5, 0.0, 0.0]])
    assert js_divergence(p, p)[0] == pytest.approx(0.0)
    assert js_divergence(p, p[:, ::-1])[0] == pytest.approx(1.0)


def test_groups_follow_the_layer_head_axes():
    assert group_names((2, 16)) == [("all", ())]
    assert [g for g, _ in group_names((2, 4, 8, 16))] == ["head 0", "head 1", "head 2", "head 3"]
    assert group_names((2, 2, 4, 17, 17))[5] == ("layer 1 head 1", (1, 1))


def test_attention_stats_see_a_swapped_head():
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(16), size=(3, 2, 8))  # [batch, head, query, key]
    act = ref.copy()
    act[:, 1] = act[:, 1, :, ::-1]  # head 1 attends to mirrored positions
    same, swapped = attention_stats("a", ref, act)
    assert same.group == "head 0" and same.js_divergence == pytest.approx(0, abs=1e-12)
    assert same.topk_overlap == 1.0 and same.entropy_shift == pytest.approx(0, abs=1e-12)
    assert swapped.js_divergence > 0.05 and swapped.topk_overlap < 0.5
    assert swapped.entropy_shift == pytest.approx(0, abs=1e-9)  # a permutation keeps the entropy


def test_occlusion_finds_the_patch_the_model_looks_at():
    """A 'model' whose class-1 score is the mean of the top-left 8x8 corner: only those patches matter."""
    images = np.zeros((4, 1, 28, 28), np.float32)
    images[:, :, :8, :8] = 1.0
    batch, plan = occlusion_inputs({"image": images}, np.array([0, 1, 2, 3]), samples=2)
    assert plan.grid == (7, 7) and plan.patch == 4 and len(batch["image"]) == 2 * plan.per_sample
    corner = batch["image"][:, 0, :8, :8].mean((1, 2))
    logits = np.stack([np.zeros_like(corner), 4 * corner], 1)
    maps = occlusion_maps(logits, plan, np.array([1, 1]))
    assert maps.shape == (2, 7, 7)
    assert (maps[:, :2, :2] > 0.01).all() and np.abs(maps[:, 2:, :]).max() < 1e-9
    same = agreement(maps, maps)
    assert same.cosine == pytest.approx(1.0) and same.top_patch_agreement == 1.0


def test_rank_correlation_and_spatial_reduction():
    a = np.arange(16.0)
    assert rank_correlation(a, a) == pytest.approx(1.0) and rank_correlation(a, -a) == pytest.approx(-1.0)
    cls = np.zeros((2, 2, 4, 17, 17))
    cls[..., 0, 1:] = 1 / 16  # the class token's row over 16 patches
    maps, side = spatial(cls)
    assert side == 4 and maps.shape == (2, 16) and np.allclose(maps, 1 / 16)
    assert spatial(np.ones((2, 10)) / 10) is None
