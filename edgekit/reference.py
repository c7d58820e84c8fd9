"""The Reference: the original torch model's outputs on real inputs, which every artifact is compared with."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekit.data.sources import Dataset
from edgekit.data.tasks import TaskData, load_task
from edgekit.errors import EdgekitError
from edgekit.fsutil import read_npz
from edgekit.lengths import LENGTH_PREFIX, arrays_at_lengths, cut_to_length, own_length
from edgekit.spec import ModelSpec

if TYPE_CHECKING:
    from edgekit.runfolder import RunFolder, RunRecord

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
    origin: str = ""  # where the validation inputs came from, e.g. "mnist val split", "40 images from photos/"
    real: bool = True  # False: only the factory's example inputs (no real data): task gates are skipped
    # a model with dynamic axes is validated at its other lengths too: length -> (inputs cut to it, torch outputs)
    at_lengths: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def describe(self) -> str:
        """For every report: how many samples of what the artifacts were validated on."""
        if not self.real:
            return f"validated on the {self.samples} example inputs only (no real data: pass --data)"
        return f"validated on {self.samples} samples: {self.origin}"

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


def build_reference(spec: ModelSpec, source: str, data: Dataset | None = None, split: str = "val",
                    data_root: Path | None = None) -> Reference:
    """Torch outputs on the user's ``data``, else on the task's real ``split``, else (no real data at all) on the
    example inputs, which the reports then say."""
    real, origin = True, ""
    if data is not None:
        inputs, labels, origin = data.inputs, data.labels, data.origin
    elif spec.task:
        task: TaskData = load_task(spec.task, split, data_root)
        missing = set(spec.input_names) - set(task.inputs)
        if missing:
            raise EdgekitError(f"{source}: task {spec.task!r} has no data for input(s) {', '.join(sorted(missing))}")
        inputs = {k: task.inputs[k] for k in spec.input_names}
        labels, origin = task.labels, f"{spec.task} {split} split"
    else:
        inputs = {k: t.detach().numpy() for k, t in zip(spec.input_names, spec.example_inputs)}
        labels, real, origin = None, False, "the factory's example inputs"
    outputs = run_torch(spec.module, inputs, spec.input_names, spec.output_names)
    return Reference(source, spec, spec.input_names, spec.output_names, inputs, outputs, labels, spec.task, origin,
                     real, _other_lengths(spec, inputs))


LENGTH_SAMPLES = 64  # per other length: enough to see a length-dependent error, cheap on every runtime


def _other_lengths(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> dict[int, tuple[dict, dict]]:
    if not spec.dynamic_axes:
        return {}
    have = own_length(spec, inputs)[0]
    found = {}
    for length in spec.lengths:
        if length < have:  # the data's own length is the main validation; longer ones it cannot give
            cut = cut_to_length({k: v[:LENGTH_SAMPLES] for k, v in inputs.items()}, spec.dynamic_axes, length)
            found[length] = (cut, run_torch(spec.module, cut, spec.input_names, spec.output_names))
    return found


def save_reference(reference: Reference, path: Path) -> None:
    arrays = {f"input:{k}": v for k, v in reference.inputs.items()}
    arrays.update({f"output:{k}": v for k, v in reference.outputs.items()})
    if reference.labels is not None:
        arrays["labels"] = reference.labels
    for length, (inputs, outputs) in reference.at_lengths.items():
        arrays.update({f"{LENGTH_PREFIX}{length}:input:{k}": v for k, v in inputs.items()})
        arrays.update({f"{LENGTH_PREFIX}{length}:output:{k}": v for k, v in outputs.items()})
    np.savez_compressed(path, **arrays)


def load_reference(path: Path, source: str, input_names: tuple[str, ...], output_names: tuple[str, ...],
                   task: str | None, data: dict | None = None) -> Reference:
    """Read a run's reference back; ``data`` is run.json's record of where it came from."""
    if not path.is_file():
        raise EdgekitError(f"{path} is missing: is this a run folder made by `edgekit export`?")
    z = read_npz(path, "reference data")
    missing = [k for k in [*(f"input:{n}" for n in input_names), *(f"output:{n}" for n in output_names)]
               if k not in z]
    if missing:
        raise EdgekitError(f"reference data {path}: no array {missing[0]!r} (the run's record names it)")
    inputs = {k: z[f"input:{k}"] for k in input_names}
    outputs = {k: z[f"output:{k}"] for k in output_names}
    labels = z.get("labels")
    at_inputs, at_outputs = arrays_at_lengths(z, "input"), arrays_at_lengths(z, "output")
    data = data or {}
    return Reference(source, None, input_names, output_names, inputs, outputs, labels, task,
                     data.get("origin", ""), data.get("real", True),
                     {n: (at_inputs[n], at_outputs.get(n, {})) for n in sorted(at_inputs)})


def load_run_reference(run: RunFolder, record: RunRecord | None = None) -> Reference:
    """The torch outputs on a run folder's data, read back (``record``: the run's, if already read)."""
    record = record or run.record()
    return load_reference(run.reference_path, record.source, record.inputs, record.outputs, record.task,
                          record.data)
