"""Error statistics and gates on known values."""
import numpy as np
import pytest

from edgekit.config import Threshold
from edgekit.validate.gates import Status, check
from edgekit.validate.metrics import SQNR_CAP_DB, output_stats


def test_stats_of_known_error():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    act = ref + np.array([[0.1, 0.0, 0.0], [0.0, 0.0, -0.2]], dtype=np.float32)
    s = output_stats("logits", ref, act)
    assert s.max_abs_error == pytest.approx(0.2, rel=1e-5)
    assert s.max_rel_error == pytest.approx(0.2 / 3, rel=1e-5)  # of the largest |reference|
    assert s.mean_abs_error == pytest.approx(0.05, rel=1e-5)
    assert s.sqnr_db == pytest.approx(10 * np.log10(28 / 0.05), rel=1e-4)
    assert s.top1_agreement == 1.0
    assert 0.99 < s.cosine < 1.0


def test_identical_outputs_and_disagreement():
    ref = np.eye(4, dtype=np.float32)
    assert output_stats("x", ref, ref).sqnr_db == SQNR_CAP_DB
    assert output_stats("x", ref, ref[::-1].copy()).top1_agreement == 0.0


@pytest.mark.parametrize("metric, value, status", [
    ("max_abs_error", 1e-6, Status.PASS), ("max_abs_error", 5e-5, Status.WARN), ("max_abs_error", 1e-3, Status.FAIL),
    ("cosine", 0.9999999, Status.PASS), ("cosine", 0.99995, Status.WARN), ("cosine", 0.9, Status.FAIL),
])
def test_gate_directions(metric, value, status):
    gate = Threshold(1e-5, 1e-4) if metric == "max_abs_error" else Threshold(0.99999, 0.9999)
    assert check("logits", metric, value, gate).status is status


def test_flips_say_how_near_a_tie_each_was_for_torch():
    # torch leads by 3 on the first two samples and by 0.1 on the last; the artifact turns only the near-tie
    ref = np.array([[5.0, 2.0, 0.0], [0.0, 4.0, 1.0], [1.0, 1.1, 0.0]], dtype=np.float32)
    act = np.array([[4.9, 2.1, 0.0], [0.1, 3.9, 1.0], [1.2, 1.0, 0.0]], dtype=np.float32)
    s = output_stats("logits", ref, act)
    assert s.top1_agreement == pytest.approx(2 / 3)
    assert s.flip_leads == pytest.approx((0.1,), rel=1e-5)
    assert s.median_lead == pytest.approx(3.0)
    assert s.flips() == "1 top-1 flip(s) where torch led by 0.1 (its median lead 3)"
    two = output_stats("logits", ref, act[[0, 2, 2]])  # the second sample flips too, a confident answer (lead 4)
    assert two.flips() == "2 top-1 flip(s) where torch led by 0.1-4 (its median lead 3)"
    agreeing = output_stats("logits", ref, ref)
    assert agreeing.flip_leads == () and agreeing.flips() == ""
