"""OpenVinoSession: batch 1 on a batch-1 compile, other batches on the dynamic-batch one; inputs bound zero-copy
once, and still read fresh on every call; outputs never alias the request's reused buffers."""
from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from edgekit.backends.openvino_session import OpenVinoSession  # noqa: E402

RUNTIME = {"device": "CPU", "precision": "fp32", "threads": 1, "config": {"PERFORMANCE_HINT": "LATENCY"}}


def _model() -> tuple[ov.Model, np.ndarray]:
    import openvino.opset13 as ops

    image = ops.parameter([-1, 3, 8, 8], np.float32, name="image")
    weights = np.random.default_rng(0).standard_normal((3 * 8 * 8, 5)).astype(np.float32)
    flat = ops.reshape(image, np.array([-1, 3 * 8 * 8]), False)
    model = ov.Model([ops.matmul(flat, ops.constant(weights), False, False)], [image])
    model.outputs[0].get_tensor().set_names({"logits"})
    return model, weights


def testbatch_one_shapes_runs_on_its_own_compile_and_other_batches_on_the_dynamic_one():
    model, weights = _model()
    session = OpenVinoSession(model, RUNTIME)
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    one = session.run({"image": x[:1].copy()})["logits"]
    assert session._dynamic is None  # batch 1 needed no dynamic-batch compile
    np.testing.assert_allclose(one, x[:1].reshape(1, -1) @ weights, rtol=1e-5, atol=1e-5)
    four = session.run({"image": x})["logits"]
    assert session._dynamic is not None and four.shape == (4, 5)
    np.testing.assert_allclose(four, x.reshape(4, -1) @ weights, rtol=1e-5, atol=1e-5)


def test_the_same_array_is_read_again_and_outputs_are_copies():
    model, weights = _model()
    session = OpenVinoSession(model, RUNTIME)
    x = np.ones((1, 3, 8, 8), np.float32)
    first = session.run({"image": x})["logits"]
    kept = first.copy()
    x *= 2  # the very array the request is bound to, changed in place
    second = session.run({"image": x})["logits"]
    np.testing.assert_array_equal(first, kept)  # the caller's earlier output is not overwritten
    assert not np.shares_memory(first, second)
    np.testing.assert_allclose(second, 2 * kept, rtol=1e-5)
    third = session.run({"image": np.full((1, 3, 8, 8), 3, np.float32)})["logits"]  # another array: bound anew
    np.testing.assert_allclose(third, 3 * kept, rtol=1e-5)


@pytest.mark.parametrize("convert", [lambda a: a.astype(np.float64), np.asfortranarray,
                                     lambda a: np.repeat(a, 2, axis=3)[..., ::2], "read-only"],
                         ids=["float64", "fortran-order", "strided-view", "read-only"])
def test_inputs_that_cannot_be_shared_are_copied_in(convert):
    model, weights = _model()
    session = OpenVinoSession(model, RUNTIME)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    if convert == "read-only":
        given = x.copy()
        given.flags.writeable = False
    else:
        given = convert(x)
    expected = x.reshape(1, -1) @ weights
    np.testing.assert_allclose(session.run({"image": given})["logits"], expected, rtol=1e-5, atol=1e-5)
    given.flags.writeable = True
    given *= 2  # changed in place: a copy made on the first call must not be reused
    given.flags.writeable = convert != "read-only"
    np.testing.assert_allclose(session.run({"image": given})["logits"], 2 * expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, one", [([-1, 3, 8, 8], (1, 3, 8, 8)), ([-1, 5], (1, 5)),
                                        ([4, 3, 8, 8], None), ([-1, -1, 8], None)],
                         ids=["dynamic-batch", "dynamic-batch-2d", "fixed-batch", "another-dynamic-dim"])
def test_abatch_one_shapes_compile_only_where_the_batch_alone_is_dynamic(shape, one):
    import openvino.opset13 as ops

    from edgekit.backends.openvino_session import batch_one_shapes

    x = ops.parameter(shape, np.float32, name="x")
    assert batch_one_shapes(ov.Model([ops.relu(x)], [x])) == (None if one is None else {"x": one})
