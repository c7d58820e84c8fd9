"""Pruning and recovery: real sparsity, real accuracy, clear errors."""
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
    from pathlib import Path

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


@pytest.mark.parametrize("model, min_speedup", [("cnn", 1.8), ("transformer", 1.8)])
def test_channel_pruning_really_shrinks_and_still_exports(model, min_speedup):
    from edgekit.compress.channels import prune_channels
    from edgekit.compress.recipe import count_flops

    spec = load(model)
    flops, params = count_flops(spec.module, spec.example_inputs)
    pruned, widths = prune_channels(spec.module, spec.example_inputs, 0.5, round_to=8)
    flops_after, params_after = count_flops(pruned, spec.example_inputs)
    assert flops / flops_after >= min_speedup and params_after < params / 2
    assert all(after % 8 == 0 for _, after in widths.values())  # SIMD-friendly widths
    out = pruned(*spec.example_inputs)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 10)
    torch.export.export(pruned, spec.example_inputs)  # exporters see a plain, smaller model


def test_channel_pruning_gives_up_cleanly_where_torch_pruning_cannot(monkeypatch):
    import edgekit.compress.channels as channels

    monkeypatch.setattr(channels, "GRAPH_SECONDS", 5)
    spec = load("attention")
    with pytest.raises(EdgekitError, match="could not resolve this model's channel dependencies"):
        channels.prune_channels(spec.module, spec.example_inputs, 0.5)
