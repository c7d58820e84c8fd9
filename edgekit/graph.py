"""Reading a torch.export program and a converter's failure back to the user's model: which module calls an op,
which FX node a converter was on when it raised, whether the batch stayed dynamic. The backends' pre-flight
checks use these; torch is imported only when a function runs."""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from edgekit.findings import ERROR, Finding

if TYPE_CHECKING:
    import torch


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
