"""ONNX: torch.onnx dynamo exporter (onnxscript) with a dynamic batch axis, checked by onnx.checker, run in
onnxruntime on the CPU execution provider."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry
from edgekit.backends.base import Option
from edgekit.backends.common import (
    ConversionCache,
    batch_dynamic_shapes,
    quantization_record,
    stock_manifest,
    storage_type,
    versions,
)
from edgekit.backends.onnx_session import DISABLED_OPTIMIZERS, PROVIDER, OnnxSession
from edgekit.config import CALIBRATION_METHODS, QUANTIZED_PRECISIONS, TargetProfile
from edgekit.cpu import resolve_threads
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types: opening an artifact (bench workers) never imports torch
    import torch

    from edgekit.data.calib import CalibrationData
    from edgekit.findings import Finding
    from edgekit.spec import ModelSpec

ort.set_default_logger_severity(3)
logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes

MODEL_FILE = "model.onnx"
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's module path of each node, kept in the file
DATA_FILE = "model.onnx.data"  # the weights, beside the graph, for a model past protobuf's 2 GB limit
# past this many bytes of parameters the weights go to DATA_FILE: a protobuf message cannot exceed 2 GiB, and the
# graph and its metadata need room too
EXTERNAL_DATA_BYTES = 2**31 - 2**27
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                 "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def strip_metadata(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths, FX node text): it is not
    needed to run and can be a third of a small model's file. ``keep`` names properties to leave."""
    model = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    graph = model.graph
    for item in [*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer]:
        props = [p for p in item.metadata_props if p.key in keep]
        del item.metadata_props[:]
        item.metadata_props.extend(props)
    onnx.save(model, str(path))


def _dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _specs(values) -> tuple[TensorSpec, ...]:
    out = []
    for v in values:
        dims = tuple(d.dim_param or d.dim_value if d.HasField("dim_value") or d.dim_param else "?"
                     for d in v.type.tensor_type.shape.dim)
        out.append(TensorSpec(v.name, dims, _dtype_name(v.type.tensor_type.elem_type)))
    return tuple(out)


def read_precision(path: Path, declared: str, threads: int = 1) -> Precision:
    """What onnxruntime really runs: the types of the graph that its optimizer leaves, read back from the file
    onnxruntime writes after optimization (not from what was asked for)."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = optimized
        if (path.parent / DATA_FILE).is_file():  # a model past 2 GB is written back with its weights outside
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             "optimized.onnx.data")
        options.intra_op_num_threads = threads
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=DISABLED_OPTIMIZERS)  # the graph the sessions run
        graph = onnx.load(optimized, load_external_data=False).graph  # types and dims only
    weights: Counter[str] = Counter()  # elements per storage type; shape constants (int64) are not weights
    for t in graph.initializer:
        if t.data_type != onnx.TensorProto.INT64:
            weights[_dtype_name(t.data_type)] += int(np.prod(t.dims))
    ops = Counter(n.op_type for n in graph.node)
    quantized = sum(c for op, c in ops.items() if op in QUANTIZED_OPS)
    value_types = Counter(_dtype_name(v.type.tensor_type.elem_type) for v in graph.value_info)
    if quantized:
        compute = "int8"
    elif value_types.get("float16", 0) > value_types.get("float32", 0):
        compute = "float16"
    else:
        compute = "float32"
    weight_type = storage_type(weights)
    return Precision(declared, compute, weight_type,
                     {"weight_elements": dict(weights), "quantized_ops": quantized,
                      "activation_types": dict(value_types), "provider": "CPUExecutionProvider"})


_EXPORTED = ConversionCache()


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _export(spec: ModelSpec, profile: TargetProfile, path: Path) -> dict[str, bytes]:
    """The dynamo export with all metadata (each target strips what it does not need): the file's bytes, and
    the external weights' for a model past the protobuf limit."""
    external = parameter_bytes(spec.module) > EXTERNAL_DATA_BYTES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        # outputs are named afterwards: the exporter refuses a name that one of its own values already has
        # (an output called "embedding" beside the module's embedding node)
        torch.onnx.export(spec.module, spec.example_inputs, str(path), dynamo=True, external_data=external,
                          input_names=list(spec.input_names), dynamic_shapes=batch_dynamic_shapes(spec),
                          opset_version=profile.runtime.opset, verbose=False, report=False)
    model = onnx.load(str(path), load_external_data=False)
    name_outputs(model.graph, spec.output_names)
    onnx.save(model, str(path))
    files = [path, *([path.with_name(DATA_FILE)] if external else [])]
    return {f.name: f.read_bytes() for f in files}


def _model_files(folder: Path) -> tuple:
    return tuple(file_entry(folder, name) for name in (MODEL_FILE, DATA_FILE) if (folder / name).is_file())


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for item in [*graph.value_info, *graph.output, *graph.initializer]:
        if item.name == old:
            item.name = new


def name_outputs(graph: onnx.GraphProto, names: tuple[str, ...]) -> None:
    """Give the graph outputs the model's output names; an inner value that holds a name already is renamed
    first (its new name is unused), so the graph stays in single static assignment form."""
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | \
        {t.name for t in [*graph.initializer, *graph.input, *graph.value_info]}
    fixed = {i.name for i in graph.input}  # a model that returns an input, or one value twice: copy, not rename
    for node in graph.node:  # the exporter writes Identity(x) -> x for a returned input: not SSA
        for i, value in enumerate(node.output):
            if value in fixed:
                node.output[i] = fresh = next(f"{value}_{n}" for n in range(1, len(taken) + 2)
                                              if f"{value}_{n}" not in taken)
                taken.add(fresh)
                for output in graph.output:
                    output.name = fresh if output.name == value else output.name
    for output, name in zip(list(graph.output), names):
        if output.name == name:
            fixed.add(name)
            continue
        if name in taken:
            inner = next(f"{name}_{n}" for n in range(1, len(taken) + 2) if f"{name}_{n}" not in taken)
            _rename(graph, name, inner)
            fixed = {inner if n == name else n for n in fixed}
            taken.add(inner)
        if output.name in fixed:
            graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
        else:
            _rename(graph, output.name, name)
        taken.add(name)
        fixed.add(name)


OPTIONS = {
    "runtime.layout": Option(values=("NCHW",)),  # the exported graph keeps the model's own layout
    "runtime.device": Option(values=("CPU",)),
    "runtime.opset": Option(),
    "quantization.method": Option(("int8",), CALIBRATION_METHODS),
    "quantization.per_channel": Option(QUANTIZED_PRECISIONS),
    "quantization.reduce_range": Option(QUANTIZED_PRECISIONS),
    "quantization.dynamic_activations": Option(("int8-dynamic",), ("per_tensor", "per_row", "auto")),
}


_REPORT_FAILURE = re.compile(r"`([^`]+)`:.*All nodes: `\[([^\]]*)\]`", re.DOTALL)
_NO_FUNCTION = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_NO_KERNEL = re.compile(r"implementation for (\w+)\((\d+)\) node with name '([^']*)'")


def _report_failures(report_dir: Path) -> list[tuple[str, list[str]]]:
    """(op, FX node names) for every op the exporter's report lists as having no ONNX function."""
    failures = []
    for report in report_dir.glob("*.md"):
        section = report.read_text(encoding="utf-8").partition("Errors grouped by operator")[2].split("\n## ")[0]
        for bullet in re.split(r"^- ", section, flags=re.MULTILINE)[1:]:
            found = _REPORT_FAILURE.match(bullet)
            if found:
                failures.append((found.group(1), [name.strip() for name in found.group(2).split(",")]))
    return failures


def _export_failures(exc: Exception, report_dir: Path, program: torch.export.ExportedProgram,
                     target: str) -> list[Finding]:
    """Every op the exporter found no ONNX function for: its report lists them all (the exception stops at the
    first); the graph of the failing node, which the exporter decomposed from the program, places them."""
    from edgekit.errors import one_line
    from edgekit.findings import ERROR, Finding
    from edgekit.graph import OpSites, failing_node, node_module_path, op_findings

    node = failing_node(exc)
    sites = OpSites(*([node.graph] if node is not None else []), program.graph)
    why = "the ONNX exporter has no ONNX function for it (torch.onnx dynamo exporter, torchlib)"
    findings = []
    for op, names in _report_failures(report_dir):
        nodes = [n for n in map(sites.node, names) if n is not None]
        if op == "with_effects":  # a side-effecting op, wrapped: name the op itself
            op = next((str(n.args[1]) for n in nodes if len(n.args) > 1), op)
        paths = dict.fromkeys(node_module_path(n) for n in nodes) or {None: None}
        findings += [Finding(target, ERROR, "unsupported op", op, path, why) for path in paths]
    if findings:
        return findings
    if node is not None:
        return [Finding(target, ERROR, "unsupported op", str(node.target), node_module_path(node),
                        f"the ONNX exporter cannot translate it: {one_line(exc.__cause__ or exc)}")]
    named = _NO_FUNCTION.search(str(exc))
    if named:
        return op_findings(target, "unsupported op", [".".join(named.groups())], sites, lambda _: why)
    return [Finding(target, ERROR, "export failed", None, None, one_line(exc))]


def _kernel_failure(exc: Exception, model: onnx.ModelProto, target: str) -> list[Finding]:
    """onnxruntime refuses a node it has no CPU kernel for (op type, opset and input types): the exporter's
    node metadata says which module and which aten op it came from."""
    import ast

    from edgekit.errors import one_line
    from edgekit.findings import ERROR, Finding

    found = _NO_KERNEL.search(str(exc))
    if not found:
        return [Finding(target, ERROR, "session failed", None, None, one_line(exc))]
    op_type, opset, name = found.groups()
    meta = next(({p.key: p.value for p in n.metadata_props} for n in model.graph.node if n.name == name), {})
    scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    source = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    path = scopes[-2] if len(scopes) >= 2 else None
    origin = f" (from {source[-1]})" if source else ""
    return [Finding(target, ERROR, "no kernel", f"{op_type}-{opset}", path,
                    f"onnxruntime has no CPU kernel for {op_type}-{opset} with these input types{origin}; "
                    "it reports the first such node only")]


_PASS_THROUGH = {"QuantizeLinear", "DequantizeLinear", "Identity"}  # carry their input's module (QDQ, renames)


def node_module_paths(graph: onnx.GraphProto) -> dict[str, str | None]:
    """Every node output -> the torch module path of the node that made it (the innermost scope of its
    ``pkg.torch.onnx.name_scopes``; "" the root), None when the node carries none. Q / DQ nodes the quantizer
    inserted after a node carry that node's module."""
    import ast

    made: dict[str, str | None] = {}
    for node in graph.node:  # topological order
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == NAME_SCOPES), None)
        path = scopes[-2] if scopes and len(scopes) >= 2 else None
        if path is None and node.op_type in _PASS_THROUGH and node.input:
            path = made.get(node.input[0])
        for name in node.output:
            if name:
                made[name] = path
    return made


def node_paths(graph: onnx.GraphProto) -> dict[str, str | None]:
    """Every node's name -> the torch module path of the value it makes first (see node_module_paths)."""
    made = node_module_paths(graph)
    return {n.name: made.get(n.output[0]) if n.output else None for n in graph.node}


class OnnxBackend:
    name = "onnx"
    demo_targets = {"fp32": "onnx-cpu-fp32", "int8": "onnx-cpu-int8"}
    converter_modules = ("torch.onnx._internal.exporter._core", "onnxscript", "onnxruntime.quantization")
    extra = "onnx"
    runtime_package = "onnxruntime"  # what a device installs to run the artifact
    precisions = ("fp32", "int8", "int8-dynamic")
    options = OPTIONS
    session_module = Path(__file__).with_name("onnx_session.py")

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        if profile.precision not in self.precisions:
            raise EdgekitError(f"{profile.name}: the onnx backend cannot make {profile.precision}; "
                               f"it makes {', '.join(self.precisions)}")
        path = folder / MODEL_FILE
        exported = _EXPORTED.get(spec.module, (profile.runtime.opset, EXTERNAL_DATA_BYTES),
                                 lambda: _export(spec, profile, path))
        for name, content in exported.items():
            (folder / name).write_bytes(content)
        # name scopes map nodes to torch module paths: quantization's keep_float patterns, the ledger
        strip_metadata(path, keep=(NAME_SCOPES,))
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        precision = read_precision(path, "fp32")
        return Manifest(source, profile.name, self.name, "NCHW", _specs(model.graph.input),
                        _specs(model.graph.output), precision, _model_files(folder),
                        versions("onnx", "onnxscript", "onnxruntime"), None,
                        {"opset": profile.runtime.opset,
                         "runtime": {"threads": profile.runtime.threads, "provider": PROVIDER}})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import onnx_quant

        path = folder / manifest.model_file
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            os.replace(path, fp32)
            if (folder / DATA_FILE).is_file():  # the graph names its weights' file relative to itself
                os.replace(folder / DATA_FILE, Path(tmp) / DATA_FILE)
            graph = onnx.load(str(fp32), load_external_data=False).graph
            applied = onnx_quant.quantize(fp32, path, profile.precision, profile.quantization, calib, Path(tmp),
                                          node_paths(graph), profile.gates, manifest)
            strip_metadata(fp32, keep=(NAME_SCOPES,))  # the size an fp32 target of the same model has
            fp32_bytes = sum(f.stat().st_size for f in (fp32, Path(tmp) / DATA_FILE) if f.is_file())
        strip_metadata(path, keep=(NAME_SCOPES,))
        precision = read_precision(path, profile.precision)
        quant = quantization_record(profile, calib, fp32_bytes, **applied)
        return replace(manifest, precision=precision, files=_model_files(folder),
                       extra={**manifest.extra, "quantization": quant})

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> OnnxSession:
        return OnnxSession(folder / manifest.model_file, manifest.extra["runtime"], threads)

    def stock_int8(self, spec: ModelSpec, fp32: Path, manifest: Manifest, calib: CalibrationData,
                   folder: Path) -> Manifest:
        """onnxruntime's own static int8 of the fp32 artifact in ``fp32``, with its documented defaults
        (onnx_peer.py), as a target folder in ``folder``."""
        from edgekit.backends import onnx_peer

        settings = onnx_peer.stock_int8(fp32 / manifest.model_file, folder / MODEL_FILE, calib)
        return stock_manifest(manifest, folder, "onnxruntime quantize_static", settings, calib,
                              read_precision(folder / MODEL_FILE, "int8"), _model_files(folder))

    def intermediates(self, folder: Path, manifest: Manifest, inputs: dict[str, np.ndarray]
                      ) -> dict[str, tuple[str | None, np.ndarray]]:
        """Every float node output on ``inputs`` (the artifact's layout), in graph order, with the torch module
        that made it: each is added as an extra graph output of a copy of the model (so onnxruntime does not fuse
        it away), run in onnxruntime with the manifest's options."""
        model = onnx.load(str(folder / manifest.model_file))  # weights included: the copy runs from memory
        paths = node_module_paths(model.graph)
        present = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in paths if name not in present)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = resolve_threads(manifest.extra["runtime"]["threads"])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[PROVIDER],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, inputs)))
        return {name: (paths[name], values[name]) for name in paths
                if name in values and np.issubdtype(values[name].dtype, np.floating)}

    def profile_ops(self, folder: Path, manifest: Manifest, inputs: dict[str, np.ndarray], threads: int,
                    runs: int) -> list[tuple[str, str, str | None, float]]:
        """(node of the optimized graph, op type, torch module or None, mean ms per inference) from onnxruntime's
        profiler, with the options of the bench session for ``threads``, on one-sample ``inputs`` (the artifact's
        layout)."""
        from edgekit.backends import onnx_profile

        path = folder / manifest.model_file
        bench_session = self.open(folder, manifest, threads)._session  # its options: threads, int8 kernels
        options, providers = bench_session.get_session_options(), bench_session.get_providers()
        del bench_session
        graph = onnx.load(str(path), load_external_data=False).graph
        exported = onnx_profile.ExportedGraph(graph, node_paths(graph))
        return onnx_profile.profile(path, options, providers, exported, inputs, runs)

    def check(self, spec: ModelSpec, profile: TargetProfile, program: torch.export.ExportedProgram
              ) -> list[Finding]:
        """Convert ``program`` in memory (report in a temp dir) and open it in onnxruntime: ops the exporter
        cannot translate, nodes onnxruntime has no CPU kernel for. Nothing is written."""
        import torch

        from edgekit.findings import ERROR, Finding
        from edgekit.graph import batch_is_dynamic

        findings = []
        if not batch_is_dynamic(program):
            findings.append(Finding(profile.name, ERROR, "pinned dim", None, None,
                                    "the onnx export asks torch.export for a dynamic batch, which it cannot give"))
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exported = torch.onnx.export(program, spec.example_inputs, dynamo=True, report=True,
                                             artifacts_dir=tmp, opset_version=profile.runtime.opset,
                                             verbose=False)
            except Exception as exc:
                return findings + _export_failures(exc, Path(tmp), program, profile.name)
        model = exported.model_proto
        try:
            ort.InferenceSession(model.SerializeToString(), providers=[PROVIDER])
        except Exception as exc:
            findings += _kernel_failure(exc, model, profile.name)
        return findings


BACKEND = OnnxBackend()
