"""Split a model at module boundaries into segments that each become a ModelSpec of their own.

The model is exported once with torch.export (a dynamic batch, as the backends export it); every node of the
graph belongs to the segment its place in the program order puts it in, and a cut falls where a named module
begins (the convention of PyTorch's own pipelining, ``SplitPoint.BEGINNING``): ``--segments text_encoder,head``
makes three segments, the second beginning at ``text_encoder``. Ops of the root module between two modules go
with the module that follows them in the program. The tensors that cross a cut become the segments' inputs and
outputs, named after the module that produced them (``text_encoder.out``); the model's inputs and outputs keep
their names. A tensor that a later segment needs is an output of the segment that makes it and an input of each
segment that reads it; the runner carries it past the segments in between (no artifact copies it through)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import fx

from edgekit.backends.common import batch_dynamic_shapes
from edgekit.errors import EdgekitError, one_line
from edgekit.segments.record import CutTensor
from edgekit.spec import ModelSpec

GUARDS = "_guards_fn"  # the input-shape guard module torch.export's module() calls first: not model work
SCALARS = (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool)


@dataclass(frozen=True)
class Segment:
    index: int
    begins_at: str  # the module the segment begins at ("" for the first)
    modules: tuple[str, ...]  # the top-level modules it runs, in order
    spec: ModelSpec  # its module (a GraphModule), example inputs and the names of what crosses its cuts
    flops: int  # per sample


@dataclass(frozen=True)
class Split:
    segments: tuple[Segment, ...]
    tensors: tuple[CutTensor, ...]  # every tensor that crosses a cut
    outputs: dict[str, int]  # each model output -> the segment that makes it
    boundaries: tuple[str, ...]  # the top-level module boundaries a cut can be placed at

    def carried(self, index: int) -> tuple[str, ...]:
        """What the runner passes along past segment ``index``: made before it, read or returned after it."""
        last = len(self.segments) - 1
        return tuple(t.name for t in self.tensors if t.produced_by < index
                     and (any(u > index for u in t.used_by) or (t.name in self.outputs and index < last)))

    def dropped(self, index: int) -> tuple[str, ...]:
        """What the runner frees after segment ``index``: the values it is the last to read or make, but for the
        model's outputs."""
        last = {n: s.index for s in self.segments for n in (*s.spec.input_names, *s.spec.output_names)}
        return tuple(n for n, i in last.items() if i == index and n not in self.outputs)


def _module_paths(node: fx.Node) -> list[str]:
    """The paths of the modules a node was traced in, outermost first, the root module left out."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path]


def _is_scalar(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), SCALARS)


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _work(graph: fx.Graph) -> list[fx.Node]:
    """The nodes that compute the model, in program order: no placeholders, no weights (copied into each segment
    that reads them), no shape arithmetic (recomputed in each segment from its own inputs), no guards or
    assertions (they check the export's assumptions and return nothing)."""
    found = []
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr", "output") or _is_scalar(node):
            continue
        if node.op == "call_module" and node.target == GUARDS:
            continue
        if node.op == "call_function" and node.meta.get("val") is None and not node.users:
            continue  # aten._assert_tensor_metadata and the like
        if node.op != "call_function":
            raise EdgekitError(f"cannot split the model: its exported graph has a {node.op} node ({node.name})")
        found.append(node)
    return found


def _node_flops(module: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> dict[fx.Node, int]:
    """FLOPs per node for one sample, from torch's FlopCounterMode (the attention matmuls included)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops: dict[fx.Node, int] = {}

    class Counting(fx.Interpreter):
        def run_node(self, n: fx.Node):
            with FlopCounterMode(display=False) as counter:
                result = super().run_node(n)
            flops[n] = int(counter.get_total_flops())
            return result

    with torch.no_grad():
        Counting(module).run(*(t[:1] for t in inputs))
    return flops


def _tensor_bytes(node: fx.Node) -> int:
    """Bytes per sample of a batch-first tensor."""
    val = node.meta["val"]
    count = 1
    for d in val.shape[1:]:
        count *= int(d) if not isinstance(d, torch.SymInt) else 1
    return count * val.element_size()


class _Graph:
    """The exported graph, read once: nodes in order, who uses what, where each top-level module begins."""

    def __init__(self, spec: ModelSpec, source: str) -> None:
        try:
            program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
        except Exception as exc:
            raise EdgekitError(f"{source}: torch.export cannot export the model to split it: {one_line(exc)}") from None
        self.module = program.module()
        graph = self.module.graph
        self.inputs = [n for n in graph.nodes if n.op == "placeholder"]
        output = next(n for n in graph.nodes if n.op == "output")
        self.outputs = list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
        if len(self.inputs) != len(spec.input_names) or len(self.outputs) != len(spec.output_names):
            raise EdgekitError(f"{source}: the exported graph has {len(self.inputs)} inputs and {len(self.outputs)} "
                               f"outputs, the model names {len(spec.input_names)} and {len(spec.output_names)}")
        if any(n.op == "placeholder" or not isinstance(n, fx.Node) for n in self.outputs):
            raise EdgekitError(f"{source}: an output of the model is one of its inputs or a constant; cannot split")
        self.work = _work(graph)
        self.position = {n: i for i, n in enumerate(self.work)}
        self.flops = _node_flops(self.module, spec.example_inputs)
        self.batch = self.inputs[0].meta["val"].shape[0]
        if not isinstance(self.batch, torch.SymInt):
            raise EdgekitError(f"{source}: torch.export pinned the batch of {spec.input_names[0]}; segments keep a "
                               "dynamic batch, so this model cannot be split")
        self.begins: dict[str, int] = {}  # every module path -> the position of its first node
        for i, node in enumerate(self.work):
            for path in _module_paths(node):
                self.begins.setdefault(path, i)
        self.top = [p for p in self.begins if "." not in p]  # top-level modules, in program order

    def reads(self, node: fx.Node) -> list[fx.Node]:
        """The tensors a node reads, through the shape arithmetic it uses (which each segment recomputes)."""
        found: list[fx.Node] = []

        def visit(arg: fx.Node) -> None:
            if arg.op == "get_attr" or arg in found or arg.target is torch.ops.aten.sym_size.int:
                return  # a size is read again from the segment's own tensors
            if _is_scalar(arg):
                fx.node.map_arg((arg.args, arg.kwargs), visit)
            else:
                found.append(arg)

        fx.node.map_arg((node.args, node.kwargs), visit)
        return found

    def batch_first(self, node: fx.Node) -> bool:
        val = node.meta.get("val")
        return isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], torch.SymInt) and \
            val.shape[0].node.expr == self.batch.node.expr


def _crossing(graph: _Graph, cut: int) -> list[fx.Node]:
    """The values made before position ``cut`` (model inputs included) that nodes at or after it read."""
    found: list[fx.Node] = []
    for node in graph.work[cut:]:
        for arg in graph.reads(node):
            if (arg.op == "placeholder" or graph.position[arg] < cut) and arg not in found:
                found.append(arg)
    return found


def _viable(graph: _Graph, cut: int) -> bool:
    """A cut whose crossing tensors are all batch-first (the segments keep a dynamic batch)."""
    return all(graph.batch_first(n) for n in _crossing(graph, cut))


def _ident(name: str) -> str:
    """A Python identifier for a segment's argument (``0.out`` of an nn.Sequential is ``_0_out``)."""
    name = re.sub(r"\W", "_", name)
    return f"_{name}" if name[:1].isdigit() else name


_ASSIGNED = re.compile(r"\s*([A-Za-z_]\w*)\s*=[^=]")


def _variable(graph: _Graph, node: fx.Node) -> str | None:
    """The variable of the model's forward that holds an op of the root module: the name assigned on the source
    line the op was traced from, if the op is the last one of that line (the value the line assigns)."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    match = _ASSIGNED.match(lines[-1]) if lines else None
    if match is None:
        return None
    after = graph.work[graph.position[node] + 1:graph.position[node] + 2]
    if after and (after[0].meta.get("stack_trace") or "") == trace:
        return None  # an intermediate value of the line, not what it assigns
    return match.group(1)


def _consumer(node: fx.Node) -> str | None:
    """The module that reads a value of the root module, when one module does (its input: ``head.in``)."""
    modules = {(_module_paths(user) or [""])[0] for user in node.users}
    return modules.pop() if len(modules) == 1 and "" not in modules else None


def _names(graph: _Graph, spec: ModelSpec, crossing: list[fx.Node]) -> dict[fx.Node, str]:
    """Model inputs and outputs keep their names. Another tensor is named after the module that made it,
    ``MODULE.out`` (``MODULE.out0``, ``.out1``, ... when several leave it); one made by an op of the root module
    after the variable the forward assigns it to (``image_seq``), else after the module that reads it
    (``head.in0``, ...), else after the op (``add_1``)."""
    names = dict(zip(graph.inputs, spec.input_names))
    names.update(zip(graph.outputs, spec.output_names))
    groups: dict[str, list[fx.Node]] = {}
    for node in crossing:
        if node in names:
            continue
        paths = _module_paths(node)
        if paths:
            groups.setdefault(f"{paths[-1]}.out", []).append(node)
        elif (variable := _variable(graph, node)) is not None:
            groups.setdefault(variable, []).append(node)
        elif (consumer := _consumer(node)) is not None:
            groups.setdefault(f"{consumer}.in", []).append(node)
        else:
            groups.setdefault(node.name, []).append(node)
    taken = set(names.values())
    for base, nodes in groups.items():
        for k, node in enumerate(nodes):
            name = base if len(nodes) == 1 else f"{base}{k}"
            if name in taken:  # e.g. a variable called like a model output: the op's own name is unique
                name = node.name
            while name in taken:
                name = f"{name}_"
            names[node] = name
            taken.add(name)
    return names


def _build(graph: _Graph, index: int, nodes: list[fx.Node], inputs: list[fx.Node], outputs: list[fx.Node],
           names: dict[fx.Node, str]) -> fx.GraphModule:
    """One segment as a GraphModule: its inputs, a copy of its nodes, the weights they read, and the shape
    arithmetic recomputed from its own tensors (a batch size read in an earlier segment is read again here)."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in inputs:
        env[node] = g.placeholder(_ident(names[node]))
        env[node].meta = dict(node.meta)

    def value(arg: fx.Node) -> fx.Node:
        if arg in env:
            return env[arg]
        if arg.op == "get_attr":
            env[arg] = g.get_attr(arg.target)
        elif arg.op == "call_function" and arg.target is torch.ops.aten.sym_size.int:
            env[arg] = _size_from(g, env, arg)
        elif _is_scalar(arg):
            env[arg] = g.node_copy(arg, value)
        else:
            raise EdgekitError(f"segment {index} reads {arg.name}, which no earlier segment hands it (an edgekit bug)")
        return env[arg]

    for node in nodes:
        env[node] = g.node_copy(node, value)
    g.output(tuple(env[n] for n in outputs))
    module = fx.GraphModule(graph.module, g, class_name=f"Segment{index}")
    return module.eval()


def _size_from(g: fx.Graph, env: dict[fx.Node, fx.Node], size: fx.Node) -> fx.Node:
    expr = size.meta["val"].node.expr
    for old, new in env.items():
        val = old.meta.get("val")
        if isinstance(val, torch.Tensor):
            for dim, d in enumerate(val.shape):
                if isinstance(d, torch.SymInt) and d.node.expr == expr:
                    made = g.call_function(torch.ops.aten.sym_size.int, (new, dim))
                    made.meta = dict(size.meta)
                    return made
    raise EdgekitError(f"a segment needs the size {expr} and has no input of that size; choose another cut")


def parse_segments(value: str) -> int | tuple[str, ...]:
    """``--segments N`` (a count, >= 2) or ``MODULE,MODULE,...`` (each begins a segment)."""
    text = value.strip()
    if text.isdigit():
        count = int(text)
        if count < 2:
            raise EdgekitError(f"--segments {value!r}: a split needs at least 2 segments")
        return count
    names = tuple(n.strip() for n in text.split(","))
    if not text or not all(names) or not all(re.fullmatch(r"[\w.]+", n) for n in names):
        raise EdgekitError(f"--segments {value!r}: give a count (e.g. 2) or module names, comma-separated, each "
                           "beginning a segment (e.g. text_encoder,head)")
    if len(set(names)) != len(names):
        raise EdgekitError(f"--segments {value!r}: a module is named twice")
    return names


def _balanced(graph: _Graph, count: int, candidates: list[int]) -> list[int]:
    """The ``count - 1`` cuts (positions) that make the most expensive segment as cheap as possible in FLOPs;
    among equal ones, the fewest bytes crossing the cuts. Dynamic programming over the candidate boundaries."""
    prefix = [0]
    for node in graph.work:
        prefix.append(prefix[-1] + graph.flops.get(node, 0))
    end = len(graph.work)
    def cost(a, b):
        return prefix[b] - prefix[a]
    crossing = {c: sum(_tensor_bytes(n) for n in _crossing(graph, c)) for c in candidates}
    # best[c] for k cuts: (the most expensive segment so far, bytes crossed, the cuts), the last cut at c
    best = {c: (cost(0, c), crossing[c], [c]) for c in candidates}
    for _ in range(count - 2):
        best = {c: min(((max(m, cost(cuts[-1], c)), b + crossing[c], [*cuts, c])
                        for p, (m, b, cuts) in best.items() if p < c), default=None, key=lambda t: t[:2])
                for c in candidates}
        best = {c: v for c, v in best.items() if v is not None}
    finals = [(max(m, cost(cuts[-1], end)), b, cuts) for m, b, cuts in best.values()]
    return min(finals, key=lambda t: t[:2])[2]


def _cuts(graph: _Graph, segments: int | tuple[str, ...], source: str) -> list[tuple[int, str]]:
    """(position, module) of each cut."""
    candidates = [graph.begins[m] for m in graph.top if graph.begins[m] > 0 and _viable(graph, graph.begins[m])]
    where = ", ".join(m for m in graph.top if graph.begins[m] in candidates)
    if isinstance(segments, int):
        if segments - 1 > len(candidates):
            raise EdgekitError(f"--segments {segments}: {source} can be cut at {len(candidates)} top-level module "
                               f"boundaries ({where}), so into at most {len(candidates) + 1} segments")
        first = {graph.begins[m]: m for m in reversed(graph.top)}
        return [(c, first[c]) for c in _balanced(graph, segments, candidates)]
    cuts = []
    for name in segments:
        if name not in graph.begins:
            raise EdgekitError(f"--segments: {source} has no module {name!r} that runs; its top-level modules: "
                               f"{', '.join(graph.top)}")
        cut = graph.begins[name]
        if cut == 0:
            raise EdgekitError(f"--segments: {name} begins the model; a segment before it would be empty")
        if cuts and cut <= cuts[-1][0]:
            raise EdgekitError(f"--segments: {name} does not run after the module named before it; list the "
                               f"modules in the order the model runs them ({', '.join(graph.top)})")
        bad = [n for n in _crossing(graph, cut) if not graph.batch_first(n)]
        if bad:
            shape = tuple(bad[0].meta["val"].shape) if _is_tensor(bad[0]) else type(bad[0].meta.get("val")).__name__
            raise EdgekitError(f"--segments: the cut before {name} would pass {bad[0].name} {shape}, which is not a "
                               f"batch-first tensor; cut at another module ({where or 'none can be cut'})")
        cuts.append((cut, name))
    return cuts


def split(spec: ModelSpec, segments: int | tuple[str, ...], source: str = "the model") -> Split:
    """Cut ``spec`` into segments: ``segments`` is a count (cuts balanced by FLOPs among the top-level module
    boundaries) or the modules that begin the segments after the first."""
    if spec.dynamic_axes:
        raise EdgekitError(f"{source}: splitting a model with dynamic axes beyond the batch is not supported")
    graph = _Graph(spec, source)
    cuts = _cuts(graph, segments, source)
    bounds = [0, *(c for c, _ in cuts), len(graph.work)]
    segment_of = {n: s for s in range(len(cuts) + 1) for n in graph.work[bounds[s]:bounds[s + 1]]}
    segment_of.update({n: -1 for n in graph.inputs})
    count = len(bounds) - 1
    reads: list[list[fx.Node]] = [[] for _ in range(count)]  # per segment: made elsewhere, read here
    for node in graph.work:
        s = segment_of[node]
        for arg in graph.reads(node):
            if segment_of[arg] != s and arg not in reads[s]:
                reads[s].append(arg)
    crossing = list(dict.fromkeys([*(n for r in reads for n in r), *graph.outputs]))
    names = _names(graph, spec, crossing)
    used_by = {n: tuple(s for s in range(count) if n in reads[s]) for n in crossing}
    made: list[list[fx.Node]] = [[n for n in crossing if segment_of[n] == s] for s in range(count)]

    built = []
    values: dict[fx.Node, torch.Tensor] = dict(zip(graph.inputs, spec.example_inputs))
    with torch.no_grad():
        for s in range(count):
            nodes = graph.work[bounds[s]:bounds[s + 1]]
            if not reads[s] or not made[s]:
                why = "reads no tensor" if not reads[s] else "makes nothing a later segment or the model uses"
                raise EdgekitError(f"--segments: segment {s} ({_span(graph, nodes)}) {why}; choose other cuts")
            module = _build(graph, s, nodes, reads[s], made[s], names)
            example = tuple(values[n] for n in reads[s])
            values.update(zip(made[s], module(*example)))
            preprocess = spec.preprocess if any(n in graph.inputs for n in reads[s]) else None
            seg_spec = ModelSpec(module, example, tuple(names[n] for n in reads[s]), tuple(names[n] for n in made[s]),
                                 attention_outputs=tuple(names[n] for n in made[s]
                                                         if names[n] in spec.attention_outputs),
                                 labels=spec.labels if spec.output_names[0] in (names[n] for n in made[s]) else (),
                                 preprocess=preprocess)
            built.append(Segment(s, "" if s == 0 else cuts[s - 1][1], _top_modules(graph, nodes), seg_spec,
                                 sum(graph.flops.get(n, 0) for n in nodes)))
        _check_chain(spec, graph, values, source)
    tensors = tuple(CutTensor(names[n], "input" if n.op == "placeholder" else (_module_paths(n) or [""])[-1],
                              ("batch", *(int(d) for d in n.meta["val"].shape[1:])),
                              str(n.meta["val"].dtype).removeprefix("torch."), segment_of[n], used_by[n])
                    for n in crossing if used_by[n] or segment_of[n] < count - 1)
    return Split(tuple(built), tensors, {names[n]: segment_of[n] for n in graph.outputs},
                 tuple(m for m in graph.top if graph.begins[m] > 0))


def _top_modules(graph: _Graph, nodes: list[fx.Node]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p[0] for p in map(_module_paths, nodes) if p))


def _span(graph: _Graph, nodes: list[fx.Node]) -> str:
    modules = _top_modules(graph, nodes)
    return f"{modules[0]}..{modules[-1]}" if modules else "ops of the root module only"


def _check_chain(spec: ModelSpec, graph: _Graph, values: dict[fx.Node, torch.Tensor], source: str) -> None:
    """The chained segments must give the model's own outputs on its example inputs (same ops, same order)."""
    expected = spec.module(*spec.example_inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    for name, node, want in zip(spec.output_names, graph.outputs, expected):
        got = values[node]
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise EdgekitError(f"{source}: the chained segments do not reproduce output {name} of the model "
                               "(an edgekit bug; please report it)")
