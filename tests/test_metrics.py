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


def _judged(reference_logits, actual_logits, labels=None, **gates):
    """compare() of one logits output under onnx-cpu-int8's gates (``gates`` replaces some of them)."""
    from dataclasses import replace

    from edgekit.artifact import Precision
    from edgekit.config import load_profile
    from edgekit.reference import Reference
    from edgekit.validate.validate import compare

    profile = load_profile("onnx-cpu-int8")
    profile = replace(profile, gates=replace(profile.gates, **gates))
    n = len(reference_logits)
    reference = Reference("test", None, ("x",), ("logits",), {"x": np.zeros((n, 1), np.float32)},
                          {"logits": reference_logits}, labels, None, "made up")
    return compare(reference, {"logits": actual_logits}, Precision("int8", "int8", "int8"), profile)


def _flipped(confident: int, near_ties: int, n: int = 100):
    """n samples where torch leads by 2 (by 0.01 on the first ``near_ties``) and the artifact turns the first
    ``near_ties + confident`` of them by a hair (a third class at -50 keeps cosine and SQNR within their gates)."""
    ref = np.zeros((n, 3), np.float32)
    ref[:, 0], ref[:, 2] = 2.0, -50.0
    ref[:near_ties, 0], ref[:near_ties, 1] = 1.0, 0.99
    act = ref.copy()
    turned = slice(0, near_ties + confident)
    act[turned, 1] = ref[turned, 0] + 0.01
    return ref, act


def test_near_tie_flips_are_listed_but_not_counted_by_the_agreement_gates():
    ref, act = _flipped(confident=0, near_ties=5)  # plain agreement 0.95, under the 0.98 fail gate
    v = _judged(ref, act)
    logits = v.outputs[0]
    assert logits.top1_agreement == pytest.approx(0.95) and len(logits.flip_leads) == 5
    agreement = [c for c in v.checks if c.metric == "top1_agreement"]
    assert agreement and all(c.value == 1.0 and c.status is Status.PASS for c in agreement)
    assert all(c.note == "5 near-tie flip(s) forgiven" for c in agreement)
    assert _judged(ref, act, near_tie=0.0).status is Status.FAIL  # 0 counts every flip
    ref, act = _flipped(confident=3, near_ties=5)  # three confident answers changed: 0.97 < 0.98
    v = _judged(ref, act)
    assert v.status is Status.FAIL and "task top1_agreement 0.97 beyond 0.98 (5 near-tie flip(s) forgiven)" in v.reason


def test_with_labels_the_accuracy_drop_decides_and_agreement_only_warns():
    ref, act = _flipped(confident=3, near_ties=0)
    labels = np.array([1, 1, 1] + [0] * 97)  # torch was wrong where the artifact turned: accuracy rises
    v = _judged(ref, act, labels=labels)
    assert v.accuracy > v.torch_accuracy and v.status is Status.WARN, v.reason
    assert {c.note for c in v.checks if c.metric == "top1_agreement"} == {"labels decide (accuracy_drop)"}
    worse = np.zeros(100, int)  # torch was right everywhere: 3 points lost, past accuracy_drop's 0.5
    v = _judged(ref, act, labels=worse)
    assert v.status is Status.FAIL and "task accuracy_drop 3 beyond 0.5" in v.reason


def test_near_tie_is_profile_data_and_checked():
    from edgekit.config import parse_profile
    from edgekit.errors import EdgekitError

    base = 'name = "t"\nbackend = "onnx"\nprecision = "int8"\n[gates]\n'
    assert parse_profile(base + "near_tie = 0.1\n", "t.toml").gates.near_tie == 0.1
    assert parse_profile(base, "t.toml").gates.near_tie == 0.25
    with pytest.raises(EdgekitError, match="near_tie: must be a number"):
        parse_profile(base + 'near_tie = "small"\n', "t.toml")
