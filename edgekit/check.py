"""Pre-flight check: what will not convert, or will run differently, on each target, without exporting anything.

The model is traced once with torch.export (the program every backend starts from); then each backend runs its
own converter in memory and reports, in a :class:`Finding`, what it refused, with the module path of the op that
calls it. The op names come from the converters themselves (their errors and reports), never from a kept list.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError, one_line

if TYPE_CHECKING:
    import torch

    from edgekit.config import TargetProfile
    from edgekit.spec import ModelSpec

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """One thing a target will refuse (``error``) or run differently / slower than torch (``warning``)."""

    target: str
    severity: str  # ERROR | WARNING
    kind: str  # "unsupported op", "no kernel", "pinned dim", "layout", "torch.export", ...
    op: str | None  # as the converter names it, e.g. "aten._linalg_det.default" or "Mul"
    module_path: str | None  # the innermost module that calls it, e.g. "head.solver" ("" is the root module)
    message: str


@dataclass(frozen=True)
class CheckResult:
    target: str
    backend: str
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """The target can work (warnings allowed)."""
        return not any(f.severity == ERROR for f in self.findings)


# torch.export marks nodes it adds for symbolic sizes with this pseudo module
_NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


def node_module_path(node: torch.fx.Node) -> str | None:
    """The innermost module that called ``node`` (from torch.export's nn_module_stack); None when unknown."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path != _NO_MODULE]
    return paths[-1] if paths else None


def op_key(name: str) -> str:
    """``aten.linalg_inv_ex.default`` and ``aten.linalg_inv_ex`` are one op; so are ``aten::x`` and ``aten.x``."""
    name = name.replace("::", ".")
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else name


class OpSites:
    """Where each op of an FX graph is called: op -> the module paths of its calls, in graph order.

    Converters decompose the program before they convert it, so the op they name may exist only in their own
    graph (``aten.linalg_inv_ex`` from ``aten.linalg_inv``): look it up there first, then in the program."""

    def __init__(self, *graphs: torch.fx.Graph) -> None:
        self._maps: list[dict[str, list[str]]] = []
        self._nodes: dict[str, torch.fx.Node] = {}
        for graph in graphs:
            found: dict[str, list[str]] = defaultdict(list)
            for node in graph.nodes:
                if node.op == "call_function":
                    path = node_module_path(node)
                    if path is not None and path not in found[op_key(str(node.target))]:
                        found[op_key(str(node.target))].append(path)
                    self._nodes.setdefault(node.name, node)
            self._maps.append(found)

    def paths(self, op: str) -> list[str]:
        for found in self._maps:
            if found.get(op_key(op)):
                return found[op_key(op)]
        return []

    def node(self, name: str) -> torch.fx.Node | None:
        return self._nodes.get(name.lstrip("%"))


def _frames_inner_first(exc: BaseException) -> list:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    frames = []
    for error in reversed(chain):  # the innermost exception holds the deepest frames
        tb, own = error.__traceback__, []
        while tb is not None:
            own.append(tb.tb_frame)
            tb = tb.tb_next
        frames += reversed(own)
    return frames


def failing_node(exc: BaseException) -> torch.fx.Node | None:
    """The FX node a converter was working on when it raised: the innermost ``call_function`` node held by a frame
    of the traceback (converters walk the graph node by node, and their messages do not always name the op)."""
    import torch

    for frame in _frames_inner_first(exc):
        for value in frame.f_locals.values():
            if isinstance(value, torch.fx.Node) and value.op == "call_function":
                return value
    return None


def failing_module(exc: BaseException, root: torch.nn.Module) -> str | None:
    """The path of the innermost module of ``root`` whose forward was running when ``exc`` was raised."""
    paths = {id(m): name for name, m in root.named_modules()}
    for frame in _frames_inner_first(exc):
        owner = id(frame.f_locals.get("self"))
        if owner in paths:
            return paths[owner]
    return None


def op_findings(target: str, kind: str, ops: Iterable[str], sites: OpSites, why: Callable[[str], str],
                severity: str = ERROR) -> list[Finding]:
    """One finding per (op, calling module); an op with no known caller still gets one, without a path."""
    findings = []
    for op in dict.fromkeys(ops):
        for path in sites.paths(op) or [None]:
            findings.append(Finding(target, severity, kind, op, path, why(op)))
    return findings


@contextlib.contextmanager
def root_log_captured() -> Iterator[list[logging.LogRecord]]:
    """Collect what converters log on the root logger (``logging.warning(...)``) instead of printing it: a
    handler in place also stops ``logging.warning`` from installing a stderr handler for good."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        yield records
    finally:
        root.handlers[:] = saved


def batch_is_dynamic(program: torch.export.ExportedProgram) -> bool:
    """Whether torch.export kept dim 0 of the user inputs symbolic."""
    import torch

    users = {spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT and hasattr(spec.arg, "name")}
    shapes = [node.meta["val"].shape for node in program.graph.nodes
              if node.op == "placeholder" and node.name in users and hasattr(node.meta.get("val"), "shape")]
    return bool(shapes) and all(len(s) > 0 and not isinstance(s[0], int) for s in shapes)


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
