"""Pre-flight check: what will not convert, or will run differently, on each target, without exporting anything.

The model is traced once with torch.export (the program every backend starts from); then each backend runs its
own converter in memory and reports, in a :class:`Finding`, what it refused, with the module path of the op that
calls it. The op names come from the converters themselves (their errors and reports), never from a kept list.
"""
from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, one_line
from edgekit.findings import ERROR, WARNING, CheckResult, Finding
from edgekit.graph import failing_module, failing_node, node_module_path

if TYPE_CHECKING:
    import torch

    from edgekit.config import TargetProfile
    from edgekit.spec import ModelSpec

@dataclass(frozen=True)
class Traced:
    """The common step: the program every backend starts from, or why there is none."""

    program: torch.export.ExportedProgram | None
    findings: tuple[Finding, ...]  # with target "" (filled in per target)


_DYNAMIC_FAILURE = re.compile(r"Constraints violated|specializ|Not all values of batch", re.IGNORECASE)


def trace(spec: ModelSpec) -> Traced:
    """torch.export with the batch dynamic, as the exporters ask for it; if that fails, without (TFLite does
    not need it), saying why; if that fails too, every target gets the error."""
    import torch

    from edgekit.backends.common import batch_dynamic_shapes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
            return Traced(program, ())
        except Exception as exc:
            dynamic_error = exc
        try:
            program = torch.export.export(spec.module, spec.example_inputs)
        except Exception as exc:
            node = failing_node(exc)
            op = str(node.target) if node is not None else None
            path = node_module_path(node) if node is not None else failing_module(exc, spec.module)
            return Traced(None, (Finding("", ERROR, "torch.export", op, path,
                                         f"torch.export cannot trace the model: {one_line(exc)}"),))
    path = failing_module(dynamic_error, spec.module)
    why = one_line(dynamic_error) if not _DYNAMIC_FAILURE.search(str(dynamic_error)) else \
        "the model's code fixes the batch size (torch.export: constraints violated for dim 0)"
    return Traced(program, (Finding("", WARNING, "pinned dim", None, path,
                                    f"torch.export cannot keep the batch dynamic, it pins it to "
                                    f"{spec.example_inputs[0].shape[0]}: {why}"),))


def _wrapper_prefix(spec: ModelSpec) -> str:
    """Models with dict / nested outputs are exported inside edgekit's FlatOutputs, as ``module``."""
    from edgekit.source import FlatOutputs

    return "module." if isinstance(spec.module, FlatOutputs) else ""


def _user_path(finding: Finding, prefix: str) -> Finding:
    if not prefix or finding.module_path is None:
        return finding
    path = finding.module_path
    return replace(finding, module_path="" if path == prefix[:-1] else path.removeprefix(prefix))


def check_target(spec: ModelSpec, profile: TargetProfile, traced: Traced) -> CheckResult:
    """One target: the common findings plus what its backend's converter and runtime report."""
    from edgekit.backends import get_backend

    start = time.perf_counter()
    backend = get_backend(profile.backend)
    findings = [replace(f, target=profile.name) for f in traced.findings]
    if traced.program is not None:
        if not hasattr(backend, "check"):
            findings.append(Finding(profile.name, WARNING, "not checked", None, None,
                                    f"the {backend.name} backend has no pre-flight check"))
        else:
            try:
                findings += backend.check(spec, profile, traced.program)
            except Exception as exc:  # a bug in a check must not hide the other targets
                findings.append(Finding(profile.name, ERROR, "check failed", None, None, one_line(exc)))
    prefix = _wrapper_prefix(spec)
    return CheckResult(profile.name, backend.name, tuple(_user_path(f, prefix) for f in findings),
                       time.perf_counter() - start)


def check_model(spec: ModelSpec, profiles: list[TargetProfile],
                progress: Callable[[str], None] = lambda _: None) -> list[CheckResult]:
    """Check a loaded model against every profile; see :func:`edgekit.api.check`."""
    if not profiles:
        raise EdgekitError("no target given")
    progress("torch.export")
    traced = trace(spec)
    results = []
    for profile in profiles:
        progress(f"{profile.name}: converting in memory")
        results.append(check_target(spec, profile, traced))
    return results
