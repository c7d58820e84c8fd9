"""Pruning and recovery: real sparsity, real accuracy, clear errors."""
from pathlib import Path

import pytest
import torch

from edgekit.compress.prune import l1_unstructured, prune_model, sparsity_report
from edgekit.compress.recipe import CompressionRecipe
from edgekit.errors import EdgekitError
from edgekit.zoo import load


def test_prune_model_zeroes_the_smallest_weights_per_layer_and_is_permanent():
    model = load("cnn").module
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    prune_model(model, pruning_rate=0.2)
    report = sparsity_report(model)
    assert [round(layer.sparsity, 2) for layer in report.layers] == [0.2] * 4
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # plain weights for exporters
    w, w0 = model.fc1.weight.detach(), before["fc1.weight"]
    assert w0[w == 0].abs().max() <= w0[w != 0].abs().min()  # the zeroed ones were the smallest |w|


def test_global_pruning_hits_the_overall_amount_unevenly():
    report = l1_unstructured(load("cnn").module, 0.5, scope="global")
    assert report.overall == pytest.approx(0.5, abs=0.01)
    assert len({round(layer.sparsity, 2) for layer in report.layers}) > 1


@pytest.mark.parametrize("prune, recover, message", [
    ("l2:0.5", None, "kind must be one of"),
    ("l1:abc", None, "must be a number"),
    ("l1:1.5", None, "must be in (0, 1)"),
    ("channels:0.3", "retrain", "--recover 'retrain' must be one of"),
])
def test_recipe_errors(prune, recover, message):
    with pytest.raises(EdgekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CompressionRecipe.parse(prune, recover)


def test_l1_recipe_with_finetune_keeps_sparsity_and_recovers(tmp_path):
    from edgekit.api import export

    result = export("zoo:cnn", "onnx-cpu-fp32", tmp_path / "run",
                    compression=CompressionRecipe.parse("l1:0.5", "finetune", epochs=2))
    c = result.compression
    assert c.overall_sparsity == pytest.approx(0.5, abs=0.01)  # masks held during fine-tuning
    assert c.accuracy_recovered > c.accuracy_pruned
    assert c.accuracy_recovered >= c.accuracy_before - 0.01
    assert c.flops_after == c.flops_before  # honest: zeros do not remove work on a dense runtime
    assert result.rows[0].accuracy == pytest.approx(result.torch_accuracy)  # the run validates the pruned model
    assert (result.folder / "compression.json").is_file()


def test_recovery_needs_a_task():
    from edgekit.compress.recipe import compress
    from edgekit.source import load_source

    spec = load_source(f"{Path(__file__).parent}/fixtures/user_models.py:build")
    with pytest.raises(EdgekitError, match="--recover needs training data"):
        compress(spec, CompressionRecipe.parse("l1:0.5", "finetune"))


def test_distillation_loss_prefers_the_teachers_answer():
    from edgekit.compress.finetune import kd_loss

    teacher = torch.tensor([[4.0, 0.0, 0.0]])
    target = torch.tensor([0])
    assert kd_loss(teacher.clone(), teacher, target) < kd_loss(torch.tensor([[0.0, 4.0, 0.0]]), teacher, target)


def _shapes(output) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in (output if isinstance(output, tuple) else (output,))]


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_channel_pruning_shrinks_every_zoo_model_and_it_still_runs(zoo_model, ratio):
    from edgekit.compress.channels import prune_channels
    from edgekit.compress.recipe import count_flops
    from edgekit.zoo.transformer import MultiHeadAttention

    spec = load(zoo_model)
    with torch.no_grad():
        shapes = _shapes(spec.module(*spec.example_inputs))
    flops, params = count_flops(spec.module, spec.example_inputs)
    pruned, widths = prune_channels(spec.module, spec.example_inputs, ratio, round_to=8)
    with torch.no_grad():
        assert _shapes(pruned(*spec.example_inputs)) == shapes
    flops_after, params_after = count_flops(pruned, spec.example_inputs)
    assert flops_after < flops * (1 - ratio / 2) and params_after < params
    layers = dict(pruned.named_modules())
    assert widths and all(after < before for before, after in widths.values())
    assert all(layers[name].weight.shape[0] == after for name, (_, after) in widths.items())  # really narrower
    assert all(after % 8 == 0 for _, after in widths.values())  # SIMD-friendly widths
    for attention in (m for m in pruned.modules() if isinstance(m, MultiHeadAttention)):
        assert attention.num_heads == 4  # head dims pruned, heads kept, and the module knows its sizes
        assert attention.num_heads * attention.head_dim == attention.q_proj.out_features < 64
        assert attention.k_proj.out_features == attention.v_proj.out_features == attention.out_proj.in_features \
            == attention.q_proj.out_features


@pytest.mark.parametrize("model, min_speedup", [("cnn", 1.8), ("transformer", 1.8)])
def test_channel_pruning_really_shrinks_and_still_exports(model, min_speedup):
    from edgekit.compress.channels import prune_channels
    from edgekit.compress.recipe import count_flops

    spec = load(model)
    flops, params = count_flops(spec.module, spec.example_inputs)
    pruned, widths = prune_channels(spec.module, spec.example_inputs, 0.5, round_to=8)
    flops_after, params_after = count_flops(pruned, spec.example_inputs)
    assert flops / flops_after >= min_speedup and params_after < params / 2
    torch.export.export(pruned, spec.example_inputs)  # exporters see a plain, smaller model


def test_fusion_channel_pruning_runs_through_export_and_validation(tmp_path):
    """The multimodal model through the whole chain: prune, measure the pruned model, export, validate."""
    from edgekit.api import export

    result = export("zoo:fusion", "onnx-cpu-fp32", tmp_path / "run",
                    compression=CompressionRecipe.parse("channels:0.3"))
    c = result.compression
    assert c.channels["conv2"] == (64, 48) and c.flops_after < c.flops_before / 2
    assert 0.5 < c.accuracy_pruned < c.accuracy_before  # measured on the pruned model, before any recovery
    assert not result.failed and result.rows[0].accuracy == pytest.approx(c.accuracy_pruned)


# pooled_concat resolves in well under a second, but not always within 3 s on a loaded 2-core machine; inline_gate
# never resolves, so its limit is kept short
@pytest.mark.parametrize("factory, seconds, message", [
    ("pooled_concat", 60, "channel pruning left the model inconsistent (RuntimeError: mat1 and mat2"),
    ("inline_gate", 3, "could not resolve this model's channel dependencies within 3 s"),
])
def test_channel_pruning_gives_up_cleanly_where_torch_pruning_cannot(capsys, tmp_path, monkeypatch, factory, seconds,
                                                                     message):
    import edgekit.compress.channels as channels
    from edgekit.cli import main

    monkeypatch.setattr(channels, "GRAPH_SECONDS", seconds)
    out = tmp_path / "run"
    code = main(["export", f"{Path(__file__).parent}/fixtures/unprunable_models.py:{factory}",
                 "--prune", "channels:0.5", "--target", "onnx-cpu-fp32", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.lstrip().startswith(".. ")]
    assert code == 2 and len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not out.exists()
