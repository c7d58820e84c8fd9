"""The compression recipe (what to do before export) and the stage that applies it to a ModelSpec."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch

from edgekit.errors import EdgekitError
from edgekit.spec import ModelSpec

PRUNE_KINDS = ("l1", "l1-global", "channels")
RECOVERIES = ("finetune", "distill")


@dataclass(frozen=True)
class CompressionRecipe:
    prune: str | None = None  # l1 | l1-global | channels
    amount: float = 0.0
    recover: str | None = None  # finetune | distill
    epochs: int = 3
    lr: float = 2e-3  # peak of the one-cycle schedule
    round_to: int = 8  # channel counts rounded to SIMD-friendly multiples

    @staticmethod
    def parse(prune: str | None, recover: str | None = None, epochs: int = 3,
              lr: float = 2e-3) -> CompressionRecipe | None:
        """``--prune l1:0.5 | l1-global:0.5 | channels:0.3`` and ``--recover finetune | distill``."""
        if prune is None and recover is None:
            return None
        kind, amount = None, 0.0
        if prune is not None:
            kind, _, value = prune.partition(":")
            if kind not in PRUNE_KINDS:
                raise EdgekitError(f"--prune {prune!r}: kind must be one of {', '.join(PRUNE_KINDS)} (e.g. l1:0.5)")
            try:
                amount = float(value)
            except ValueError:
                raise EdgekitError(f"--prune {prune!r}: the amount after ':' must be a number in (0, 1)") from None
            if not 0.0 < amount < 1.0:
                raise EdgekitError(f"--prune {prune!r}: the amount must be in (0, 1)")
        if recover is not None and recover not in RECOVERIES:
            raise EdgekitError(f"--recover {recover!r} must be one of {', '.join(RECOVERIES)}")
        if epochs < 1:
            raise EdgekitError("--recover-epochs must be >= 1")
        if not 0.0 < lr < 1.0:
            raise EdgekitError("--recover-lr must be in (0, 1)")
        return CompressionRecipe(kind, amount, recover, epochs, lr)


@dataclass(frozen=True)
class CompressionReport:
    recipe: CompressionRecipe
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    accuracy_before: float | None
    accuracy_pruned: float | None
    accuracy_recovered: float | None
    sparsity: dict[str, float]  # per layer (unstructured) or {} for channel pruning
    overall_sparsity: float
    channels: dict[str, tuple[int, int]]  # layer -> (before, after) for channel pruning
    seconds: float
    note: str


def count_flops(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """(FLOPs, parameters) for one sample. torch's FlopCounterMode counts every aten op, the attention matmuls
    (q @ k^T) included, which layer-based counters miss."""
    from torch.utils.flop_counter import FlopCounterMode

    one = tuple(t[:1] for t in example_inputs)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*one)
    return int(counter.get_total_flops()), sum(p.numel() for p in module.parameters())


def compress(spec: ModelSpec, recipe: CompressionRecipe) -> tuple[ModelSpec, CompressionReport]:
    """Prune (and recover) a copy of the model; the original is the distillation teacher."""
    from edgekit.compress import prune as l1
    from edgekit.compress.finetune import distill, finetune
    from edgekit.reference import torch_accuracy

    if recipe.recover and not spec.task:
        raise EdgekitError("--recover needs training data: the model has no task (zoo models do)")
    start = time.perf_counter()
    teacher = spec.module
    student = copy.deepcopy(teacher)
    accuracy = (lambda m: torch_accuracy(m, spec.task)) if spec.task else (lambda m: None)
    flops_before, params_before = count_flops(teacher, spec.example_inputs)
    sparsity, overall, channels, note = {}, 0.0, {}, ""
    if recipe.prune in ("l1", "l1-global"):
        with torch.no_grad():  # masks stay in force during recovery, folded in afterwards
            l1.l1_unstructured(student, recipe.amount, "global" if recipe.prune == "l1-global" else "layer",
                               permanent=False)
        note = "unstructured zeros: dense runtimes run the same FLOPs; only a compressed file gets smaller"
    elif recipe.prune == "channels":
        from edgekit.compress.channels import prune_channels

        student, channels = prune_channels(student, spec.example_inputs, recipe.amount, recipe.round_to)
    pruned_accuracy = accuracy(student)
    recovered = None
    if recipe.recover == "finetune":
        student = finetune(student, spec.task, epochs=recipe.epochs, lr=recipe.lr)
    elif recipe.recover == "distill":
        student = distill(student, teacher, spec.task, epochs=recipe.epochs, lr=recipe.lr)
    if recipe.recover:
        recovered = accuracy(student)
    if recipe.prune in ("l1", "l1-global"):
        report = l1.sparsity_report(l1.make_permanent(student))
        sparsity = {layer.name: round(layer.sparsity, 4) for layer in report.layers}
        overall = report.overall
    flops_after, params_after = count_flops(student.eval(), spec.example_inputs)
    return replace(spec, module=student.eval()), CompressionReport(
        recipe, params_before, params_after, flops_before, flops_after, accuracy(teacher), pruned_accuracy,
        recovered, sparsity, overall, channels, time.perf_counter() - start, note)
