"""The Reference: the original torch model's outputs on real inputs, which every artifact is compared with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit.data.tasks import TaskData, load_task
from edgekit.errors import EdgekitError
from edgekit.spec import ModelSpec

BATCH = 250


@dataclass(frozen=True)
class Reference:
    source: str
    spec: ModelSpec | None  # None when read back from a run folder (the torch module is not stored)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    inputs: dict[str, np.ndarray]  # the validation inputs, batch first
    outputs: dict[str, np.ndarray]  # torch's outputs on them
    labels: np.ndarray | None  # task labels, when the model has a task
    task: str | None

    @property
    def logits(self) -> str:
        """By convention the first output holds the class scores."""
        return self.output_names[0]

    def accuracy(self) -> float | None:
        return task_accuracy(self.outputs[self.logits], self.labels)


def task_accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or logits.ndim != 2:
        return None
    return float((logits.argmax(1) == labels).mean())


def run_torch(module: torch.nn.Module, inputs: dict[str, np.ndarray], names: tuple[str, ...],
              output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    n = len(next(iter(inputs.values())))
    chunks: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for start in range(0, n, BATCH):
            out = module(*[torch.from_numpy(inputs[k][start:start + BATCH]) for k in names])
            chunks.append(out if isinstance(out, (tuple, list)) else (out,))
    return {name: torch.cat([c[i] for c in chunks]).numpy() for i, name in enumerate(output_names)}


def torch_accuracy(module: torch.nn.Module, task: str, split: str = "val") -> float:
    """Task accuracy of a torch model on a split (the first output holds the class scores)."""
    data = load_task(task, split)
    names = tuple(data.inputs)
    logits = run_torch(module.eval(), data.inputs, names, ("logits",))["logits"]
    return task_accuracy(logits, data.labels)


def build_reference(spec: ModelSpec, source: str, split: str = "val", data_root: Path | None = None) -> Reference:
    """Torch outputs on the task's real ``split``, or on the example inputs for a model without a task."""
    if spec.task:
        data: TaskData = load_task(spec.task, split, data_root)
        missing = set(spec.input_names) - set(data.inputs)
        if missing:
            raise EdgekitError(f"{source}: task {spec.task!r} has no data for input(s) {', '.join(sorted(missing))}")
        inputs, labels = {k: data.inputs[k] for k in spec.input_names}, data.labels
    else:
        inputs = {k: t.detach().numpy() for k, t in zip(spec.input_names, spec.example_inputs)}
        labels = None
    outputs = run_torch(spec.module, inputs, spec.input_names, spec.output_names)
    return Reference(source, spec, spec.input_names, spec.output_names, inputs, outputs, labels, spec.task)


def save_reference(reference: Reference, path: Path) -> None:
    arrays = {f"input:{k}": v for k, v in reference.inputs.items()}
    arrays.update({f"output:{k}": v for k, v in reference.outputs.items()})
    if reference.labels is not None:
        arrays["labels"] = reference.labels
    np.savez_compressed(path, **arrays)


def load_reference(path: Path, source: str, input_names: tuple[str, ...], output_names: tuple[str, ...],
                   task: str | None) -> Reference:
    if not path.is_file():
        raise EdgekitError(f"{path} is missing: is this a run folder made by `edgekit export`?")
    with np.load(path, allow_pickle=False) as z:
        inputs = {k: z[f"input:{k}"] for k in input_names}
        outputs = {k: z[f"output:{k}"] for k in output_names}
        labels = z["labels"] if "labels" in z.files else None
    return Reference(source, None, input_names, output_names, inputs, outputs, labels, task)
