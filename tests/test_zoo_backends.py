"""Every zoo model through every registered backend in fp32: numbers against torch on the real val split."""
import json

import pytest

from edgekit.backends import get_backend
from edgekit.config import load_profile
from edgekit.validate.gates import Status
from tests.conftest import fp32_profile


def row_for(run, backend):
    return next(r for r in run.rows if r.backend == backend)


def test_fp32_artifact_matches_torch(zoo_run, zoo_model, backend):
    run = zoo_run(zoo_model)
    row = row_for(run, backend)
    assert row.stage is None, f"{row.stage}: {row.reason}"
    assert row.status in (Status.PASS, Status.WARN)
    gate = load_profile(fp32_profile(backend)).gates
    assert {s.name for s in row.outputs} == set(json.loads((run.folder / "run.json").read_text())["outputs"])
    for stats in row.outputs:
        assert stats.max_abs_error <= 1e-4, stats
        assert stats.max_rel_error <= gate.for_output(stats.name)["max_rel_error"].fail
        assert stats.cosine > 0.99999
    assert row.samples == 1000
    assert row.accuracy == pytest.approx(run.torch_accuracy, abs=1e-9)


def test_attention_outputs_are_distributions(zoo_run, zoo_model):
    import numpy as np

    run = zoo_run(zoo_model)
    meta = json.loads((run.folder / "run.json").read_text())
    with np.load(run.folder / "reference.npz") as z:
        for name in meta["attention_outputs"]:
            weights = z[f"output:{name}"]
            assert np.allclose(weights.sum(-1), 1.0, atol=1e-5)
            assert weights.min() >= 0


@pytest.mark.parametrize("model", ["cnn", "attention", "transformer"])
def test_image_classifiers_reach_97_percent(zoo_run, model):
    assert zoo_run(model).torch_accuracy >= 0.97


def test_fusion_needs_both_modalities():
    """Measured on the val split: the answer needs the digit and the caption's number, so pairing either with
    another sample's other half drops the fusion model to near chance."""
    import numpy as np
    import torch

    from edgekit.data.tasks import load_task
    from edgekit.zoo import load

    model, val = load("fusion").module, load_task("mnist-fusion", "val")
    image, tokens = torch.from_numpy(val.inputs["image"]), torch.from_numpy(val.inputs["tokens"])
    other = torch.from_numpy(np.random.default_rng(0).permutation(len(val)))

    def accuracy(image: torch.Tensor, tokens: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(image, tokens)[0].argmax(1).numpy() == val.labels).mean())

    both = accuracy(image, tokens)
    assert both >= 0.9
    assert both - max(accuracy(image[other], tokens), accuracy(image, tokens[other])) >= 0.5


def test_manifest_describes_artifact(zoo_run, backend):
    from edgekit.artifact import read_manifest, verify_files

    run = zoo_run("fusion")
    folder = run.folder / fp32_profile(backend)
    manifest = read_manifest(folder / "manifest.json")
    verify_files(folder, manifest)
    assert [i.name for i in manifest.inputs] == ["image", "tokens"]
    assert [o.name for o in manifest.outputs] == ["logits", "attention"]
    assert manifest.precision.declared == "fp32"
    assert manifest.precision.compute in ("float32", "f32")
    assert manifest.precision.weights == "float32"
    from importlib import metadata

    import torch

    assert manifest.versions["torch"] == torch.__version__  # the versions that made it, read from the install
    runtime = get_backend(backend).runtime_package
    assert manifest.versions[runtime] == metadata.version(runtime)
