"""Model sources: ``zoo:NAME``, ``path/file.py:factory``, ``package.module:factory``, or a torch.export ``.pt2``.

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

import torch

from edgekit.errors import EdgekitError, one_line
from edgekit.spec import ModelSpec


def _import_file(path: Path):
    name = f"edgekit_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EdgekitError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise EdgekitError(f"importing {path} failed: {one_line(exc)}") from None
    return module


def _load_factory(source: str):
    target, _, factory_name = source.rpartition(":")
    if not target or not factory_name:
        raise EdgekitError(f"model source {source!r} must be zoo:NAME, FILE.py:FACTORY, "
                           "package.module:FACTORY or FILE.pt2")
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
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EdgekitError(f"{target} has no factory function {factory_name!r}")
    try:
        return factory()
    except EdgekitError:
        raise
    except Exception as exc:
        raise EdgekitError(f"factory {source} failed: {one_line(exc)}") from None


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
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise EdgekitError(f"{source}: the model must return a tensor or a tuple of tensors")
    output_names = spec.output_names or tuple(f"output_{i}" for i in range(len(outputs)))
    if len(output_names) != len(outputs):
        raise EdgekitError(f"{source}: {len(output_names)} output names for {len(outputs)} outputs")
    return replace(spec, module=module, input_names=input_names, output_names=output_names)


def load_source(source: str, allow_pickle: bool = False) -> ModelSpec:
    """Resolve a model source string into a checked :class:`ModelSpec` in eval mode."""
    if source.startswith("zoo:"):
        from edgekit import zoo

        spec = zoo.load(source[4:])
    elif source.endswith(".pt2"):
        spec = _load_pt2(Path(source), allow_pickle)
    else:
        spec = _as_spec(_load_factory(source), source)
    return _complete(spec, source)
