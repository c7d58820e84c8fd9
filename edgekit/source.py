"""Model sources: a named one (``zoo:NAME``, ``hf:FOLDER``: the schemes of edgekit.sources), ``path/file.py:factory``,
``package.module:factory``, or a torch.export ``.pt2``.

A factory takes no arguments and returns a :class:`~edgekit.spec.ModelSpec` or a ``(module, example_inputs)``
tuple. Only the module the user named is imported; nothing is unpickled unless ``allow_pickle`` is set.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgekit.errors import EdgekitError, one_line
from edgekit.spec import ModelSpec

if TYPE_CHECKING:
    from edgekit.runfolder import RunRecord


def _import_file(path: Path):
    name = f"edgekit_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EdgekitError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:  # the user's module must not end edgekit (with exit 0 and no run folder)
        raise EdgekitError(f"importing {path} called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise EdgekitError(f"importing {path} failed: {one_line(exc)}") from None
    return module


def _load_factory(source: str):
    target, _, factory_name = source.rpartition(":")
    if not target or not factory_name:
        raise EdgekitError(f"model source {source!r} must be zoo:NAME, FILE.py:FACTORY, "
                           "package.module:FACTORY, FILE.pt2 or hf:FOLDER")
    return call_factory(source)


def call_factory(source: str, what: str = "factory"):
    """Import the module a ``FILE.py:FACTORY`` / ``package.module:FACTORY`` names (only that one) and call the
    factory with no arguments; every failure is a one-line EdgekitError."""
    target, _, factory_name = source.rpartition(":")
    if not target or not factory_name:
        raise EdgekitError(f"{what} {source!r} must be FILE.py:FACTORY or package.module:FACTORY")
    from edgekit.sources.vision import ensure_torchvision_importable

    ensure_torchvision_importable()  # a user's module may import timm or transformers, which import torchvision
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise EdgekitError(f"model file {target} does not exist")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise EdgekitError(f"cannot import module {target!r}: {one_line(exc)}") from None
        except SystemExit as exc:
            raise EdgekitError(f"importing {target} called sys.exit({exc.code!r})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EdgekitError(f"{target} has no factory function {factory_name!r}")
    try:
        return factory()
    except EdgekitError:
        raise
    except SystemExit as exc:
        raise EdgekitError(f"{what} {source} called sys.exit({exc.code!r}); a factory returns its model") from None
    except Exception as exc:
        raise EdgekitError(f"{what} {source} failed: {one_line(exc)}") from None


def _load_pt2(path: Path, allow_pickle: bool) -> ModelSpec:
    if not path.is_file():
        raise EdgekitError(f"model file {path} does not exist")
    if not allow_pickle:
        raise EdgekitError(f"{path} is a torch.export archive, which torch loads with pickle; "
                           "pass --allow-pickle only if you trust where it came from")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise EdgekitError(f"cannot load {path}: {one_line(exc)}") from None
    args, _ = program.example_inputs or ((), {})
    if not args:
        raise EdgekitError(f"{path} holds no example inputs; re-export it with torch.export.export(model, args)")
    return ModelSpec(program.module(), tuple(args))


def _as_spec(result, source: str) -> ModelSpec:
    if isinstance(result, ModelSpec):
        return result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        inputs = result[1] if isinstance(result[1], (tuple, list)) else (result[1],)
        return ModelSpec(result[0], tuple(inputs))
    raise EdgekitError(f"factory {source} must return a ModelSpec or (module, example_inputs)")


def flatten_outputs(out, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """A model's outputs as (name, tensor): a dict gives its keys (None values dropped), a tuple its positions
    ("output_0", ... at the top, "key_0", ... under a key)."""
    if isinstance(out, torch.Tensor):
        return [(prefix or "output_0", out)]
    if isinstance(out, dict):
        return [item for key, value in out.items() if value is not None
                for item in flatten_outputs(value, f"{prefix}_{key}" if prefix else str(key))]
    if isinstance(out, (tuple, list)):
        return [item for i, value in enumerate(out)
                for item in flatten_outputs(value, f"{prefix}_{i}" if prefix else f"output_{i}")]
    return []


class FlatOutputs(torch.nn.Module):
    """Wraps a model whose outputs are a dict or nested: exporters and runtimes see a flat tuple of tensors."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for _, t in flatten_outputs(self.module(*inputs)))


def describe_inputs(inputs: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {'x'.join(map(str, t.shape))} {str(t.dtype).removeprefix('torch.')}"
                     for n, t in zip(names, inputs))


def _complete(spec: ModelSpec, source: str) -> ModelSpec:
    """Fill in default names and check the model runs on its example inputs."""
    if not spec.example_inputs or not all(isinstance(t, torch.Tensor) for t in spec.example_inputs):
        raise EdgekitError(f"{source}: example inputs must be a non-empty tuple of tensors")
    input_names = spec.input_names
    if not input_names:
        params = [p for p in inspect.signature(spec.module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        input_names = tuple(p.name for p in params[:len(spec.example_inputs)])
        if len(input_names) != len(spec.example_inputs):
            input_names = tuple(f"input_{i}" for i in range(len(spec.example_inputs)))
    if len(input_names) != len(spec.example_inputs):
        raise EdgekitError(f"{source}: {len(input_names)} input names for {len(spec.example_inputs)} inputs")
    if all(t.dim() > 0 and t.shape[0] == 1 for t in spec.example_inputs):
        # torch.export specializes a batch of 1 ("Constraints violated (batch)!"): a batch of 2 made of the same
        # sample keeps the batch dynamic on every exporter
        spec = replace(spec, example_inputs=tuple(t.repeat(2, *([1] * (t.dim() - 1))) for t in spec.example_inputs))
    module = spec.module
    try:
        module = module.eval()
    except NotImplementedError:  # a torch.export module keeps the mode it was exported in
        pass
    try:
        with torch.no_grad():
            out = module(*spec.example_inputs)
    except Exception as exc:
        raise EdgekitError(f"{source}: the model does not run on its example inputs "
                           f"({describe_inputs(spec.example_inputs, input_names)}): {one_line(exc)}") from None
    flat = flatten_outputs(out)
    if not flat:
        raise EdgekitError(f"{source}: the model must return tensors (a tensor, a tuple or a dict of them)")
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    if len(flat) != len(outputs) or not all(isinstance(o, torch.Tensor) for o in outputs):
        module = FlatOutputs(module)  # dicts (e.g. a Hugging Face ModelOutput) and nests: one named tensor each
        outputs = tuple(t for _, t in flat)
    output_names = spec.output_names or tuple(name for name, _ in flat)
    if len(output_names) != len(outputs):
        raise EdgekitError(f"{source}: {len(output_names)} output names for {len(outputs)} outputs")
    return replace(spec, module=module, input_names=input_names, output_names=output_names)


def _with_preprocess(spec: ModelSpec, override: str | None) -> ModelSpec:
    """The declared (or ``--preprocess``) preprocessing, resolved against the model's image input."""
    from edgekit.data import preprocess

    where = "--preprocess" if override else "the ModelSpec's preprocess"
    declared = preprocess.parse(override or spec.preprocess, where)
    if declared is None:
        return spec
    images = [(n, tuple(t.shape)) for n, t in zip(spec.input_names, spec.example_inputs)
              if t.dim() == 4 and t.is_floating_point()]
    if not images:
        raise EdgekitError(f"{where}: the model has no image input (4-D float) to preprocess for")
    return replace(spec, preprocess=preprocess.resolve(declared, *images[0]))


def parse_dynamic(text: str) -> dict[str, tuple[int, ...]]:
    """``input_ids:1,attention_mask:1`` -> {"input_ids": (1,), "attention_mask": (1,)}."""
    axes: dict[str, tuple[int, ...]] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, _, axis = item.rpartition(":")
        if not name or not axis.isdigit():
            raise EdgekitError(f"--dynamic {text!r}: each entry is INPUT:AXIS, e.g. input_ids:1,attention_mask:1")
        axes[name] = (*axes.get(name, ()), int(axis))
    return axes


def _with_lengths(spec: ModelSpec, source: str, dynamic: dict[str, tuple[int, ...]] | None,
                  lengths: tuple[int, ...] | None) -> ModelSpec:
    """Check the declared dynamic axes against the example inputs; the lengths default to half and all of the
    example's, so validation always sees two."""
    axes = spec.dynamic_axes if dynamic is None else dynamic
    if not axes:
        if lengths:
            raise EdgekitError(f"{source}: --lengths needs dynamic axes (--dynamic INPUT:AXIS,...)")
        return replace(spec, dynamic_axes={}, lengths=())
    shapes = dict(zip(spec.input_names, (tuple(t.shape) for t in spec.example_inputs)))
    sizes = set()
    for name, dims in axes.items():
        if name not in shapes:
            raise EdgekitError(f"{source}: dynamic axes name {name!r}, not an input (inputs: "
                               f"{', '.join(spec.input_names)})")
        for axis in dims:
            if not 1 <= axis < len(shapes[name]):
                raise EdgekitError(f"{source}: dynamic axis {name}:{axis}: {name} has axes 1..{len(shapes[name]) - 1}"
                                   " beyond the batch (axis 0 is always dynamic)")
            sizes.add(shapes[name][axis])
    if len(sizes) != 1:
        raise EdgekitError(f"{source}: the dynamic axes share one length, but the example inputs have "
                           f"{', '.join(map(str, sorted(sizes)))} there")
    example = sizes.pop()
    lengths = tuple(sorted(set(lengths or spec.lengths or (max(2, example // 2), example))))
    if lengths[0] < 2 or lengths[-1] > example:
        raise EdgekitError(f"{source}: lengths {', '.join(map(str, lengths))} must lie in 2..{example} (the "
                           "example's length: validation slices its data to each)")
    return replace(spec, dynamic_axes={k: tuple(sorted(set(v))) for k, v in axes.items()}, lengths=lengths)


def load_source(source: str, allow_pickle: bool = False, preprocess: str | None = None,
                dynamic: str | dict[str, tuple[int, ...]] | None = None, lengths: tuple[int, ...] | None = None
                ) -> ModelSpec:
    """Resolve a model source string into a checked :class:`ModelSpec` in eval mode; ``preprocess`` (a preset
    name or a TOML file) overrides the spec's own, ``dynamic`` (input name -> axes, or the CLI's
    "input_ids:1,..." text) and ``lengths`` its dynamic axes."""
    if isinstance(dynamic, str):
        dynamic = parse_dynamic(dynamic)
    from edgekit import sources

    named = sources.parse(source)
    if named is not None:
        spec = sources.loader(named[0])(named[1])
    elif source.endswith(".pt2"):
        spec = _load_pt2(Path(source), allow_pickle)
    else:
        spec = _as_spec(_load_factory(source), source)
    spec = _with_preprocess(_complete(spec, source), preprocess)
    return _with_lengths(spec, source, dynamic, lengths)


def load_recorded(record: RunRecord, allow_pickle: bool = False) -> ModelSpec:
    """The model a run was exported from, rebuilt from its record (bench's torch row and saliency, the ledger):
    its source with the dynamic axes and lengths the run recorded (none recorded: the model's own). A compression
    recipe is not replayed: a compressed run rebuilds the model before compression."""
    return load_source(record.source, allow_pickle=allow_pickle,
                       dynamic={k: tuple(v) for k, v in record.dynamic_axes.items()} or None,
                       lengths=record.lengths or None)
