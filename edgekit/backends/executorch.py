"""ExecuTorch: torch.export, lowered to the XNNPACK delegate (``to_edge_transform_and_lower``), written as a .pte
program and run by ExecuTorch's runtime.

The batch is fixed per method ("forward_b1", "forward_b8", ... one per profile batch size, weights shared in
the file): with a dynamic batch, XNNPACK lowering (executorch 1.5.1, torch 2.13) narrows the batch's upper bound
to 15 for any model with a convolution (the fake-tensor conv kernel guards on the example's batch), and memory
planning then refuses every larger batch at run time. int8 is PT2E with the XNNPACK quantizer
(executorch_quant.py), lowered the same way."""
from __future__ import annotations

import json
import re
import struct
import subprocess
import tempfile
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry
from edgekit.backends.base import Option
from edgekit.backends.common import (
    DECLARED_COMPUTE,
    ConversionCache,
    fixed_shapes,
    quantization_record,
    resized_example,
    stock_manifest,
    storage_type,
    versions,
)
from edgekit.backends.quiet import native_stderr_captured

with native_stderr_captured():  # torchao's "Failed to load ..._C_cutlass" lines, printed as executorch loads
    from edgekit.backends.executorch_session import SCALAR_TYPES, ExecuTorchSession
from edgekit.config import TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    import torch

    from edgekit.data.calib import CalibrationData
    from edgekit.findings import Finding
    from edgekit.spec import ModelSpec

MODEL_FILE = "model.pte"


def method_name(batch: int, length: int | None = None) -> str:
    return f"forward_b{batch}" if length is None else f"forward_b{batch}_l{length}"


def methods(sizes: tuple[int, ...], spec: ModelSpec) -> dict[str, tuple[int, int | None]]:
    """One method per batch size and, for a model with dynamic axes, per length: shapes are fixed per method."""
    return {method_name(b, n): (b, n) for b, n in fixed_shapes(sizes, spec)}


def _lower(programs: dict[str, torch.export.ExportedProgram]) -> bytes:
    """The .pte of ``programs`` (method name -> program), every partition XNNPACK takes delegated to it."""
    from executorch.backends.transforms.remove_clone_ops import RemoveCloneOpsTransform
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # identity clones (from `weights @ v` on a tensor that is also an output) become pass-through delegate
    # outputs once XNNPACK drops them, which its preprocess refuses; removing them first avoids it
    edge = to_edge_transform_and_lower(programs, transform_passes=[RemoveCloneOpsTransform()],
                                       partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer)


def convert(module: torch.nn.Module, spec: ModelSpec, sizes: tuple[int, ...]) -> bytes:
    """One static-batch method per size: torch.export at that size, then one lowering of all of them."""
    import torch

    with warnings.catch_warnings(), native_stderr_captured():  # torchao's "Failed to load" lines
        warnings.simplefilter("ignore")
        axes = spec.length_axes()
        programs = {name: torch.export.export(module, tuple(resized_example(t, b, axes.get(i, ()), n)
                                                            for i, t in enumerate(spec.example_inputs)))
                    for name, (b, n) in methods(sizes, spec).items()}
        return _lower(programs)


_CONVERTED = ConversionCache()


# --- reading the .pte back: the execution plans, and the XNNPACK graphs inside the delegates ------------------

WEIGHT_NODES = {"XNNFullyConnected", "XNNConv2d", "XNNDepthwiseConv2d", "XNNConvTranspose2d"}
# activation x activation (attention scores, weights @ v): the XNNPACK quantizer leaves them in float by design
ACTIVATION_MATMULS = {"XNNBatchMatrixMultiply"}
XNN_TYPES = {"xnn_datatype_fp32": "float32", "xnn_datatype_fp16": "float16", "xnn_datatype_bf16": "bfloat16",
             "xnn_datatype_qint8": "int8", "xnn_datatype_qcint8": "int8", "xnn_datatype_qdint8": "int8",
             "xnn_datatype_quint8": "uint8", "xnn_datatype_qint32": "int32", "xnn_datatype_qcint32": "int32",
             "xnn_datatype_int32": "int32", "xnn_datatype_qcint4": "int4", "xnn_datatype_qbint4": "int4"}


def _xnn_graph(blob: bytes) -> dict:
    """An XNNPACK delegate payload as JSON (its header points at an XNNGraph flatbuffer; flatc ships with
    executorch and reads it with the delegate's own schema)."""
    import executorch.backends.xnnpack.serialization as xnn_serialization
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    if blob[4:8] != b"XH00":
        raise EdgekitError("an XNNPACK delegate without its XH00 header: cannot read it back")
    offset, size = struct.unpack_from("<II", blob, 10)
    schema = Path(next(iter(xnn_serialization.__path__))) / "schema.fbs"
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "graph.bin"
        graph.write_bytes(blob[offset:offset + size])
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", tmp, str(schema),
                        "--", str(graph)], check=True, capture_output=True)
        text = (Path(tmp) / "graph.json").read_text(encoding="utf-8")
    # flatc writes clamp bounds as bare inf / nan, which JSON has no word for
    return json.loads(re.sub(r"(?<=[\s:\[,])-?(inf|nan)\b", "null", text))


def _values(graph: dict) -> dict[int, dict]:
    """Value id -> its tensor (quantized values wrap the tensor with their parameters)."""
    found = {}
    for value in graph["xvalues"]:
        tensor = value["xvalue_union"]
        tensor = tensor.get("tensor_value", tensor)
        found[tensor.get("id_out", 0)] = tensor
    return found


def _node_kind(fields: dict, values: dict[int, dict]) -> str:
    """"int8" when every tensor operand (input, filter / second input) is int8, else the first one's type."""
    types = [XNN_TYPES.get(values[fields[key]]["datatype"], values[fields[key]]["datatype"])
             for key in ("input1_id", "filter_id", "input2_id") if key in fields and fields[key] in values]
    return "int8" if types and all(t == "int8" for t in types) else types[0] if types else "unknown"


def _graph_kinds(graph: dict) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(weight node kinds, activation matmul kinds, weight elements per storage type from the constants)."""
    values = _values(graph)
    weight_ops: Counter[str] = Counter()
    matmuls: Counter[str] = Counter()
    for node in graph["xnodes"]:
        kind = node["xnode_union_type"]
        if kind in WEIGHT_NODES:
            weight_ops[_node_kind(node["xnode_union"], values)] += 1
        elif kind in ACTIVATION_MATMULS:
            matmuls[_node_kind(node["xnode_union"], values)] += 1
    weights: Counter[str] = Counter()
    for tensor in values.values():
        if tensor.get("constant_buffer_idx", 0) > 0:
            weights[XNN_TYPES.get(tensor["datatype"], tensor["datatype"])] += int(np.prod(tensor.get("dims") or [1]))
    return weight_ops, matmuls, weights


def _constant_elements(plan) -> Counter[str]:
    """Elements per type of the constant tensors the method keeps outside its delegates (e.g. an embedding
    table, layer norm weights); int64 ones are shape or index constants, not weights."""
    found: Counter[str] = Counter()
    for value in plan.values:
        tensor = value.val
        if getattr(tensor, "data_buffer_idx", 0) > 0 and tensor.allocation_info is None:
            dtype = np.dtype(SCALAR_TYPES.get(int(tensor.scalar_type), np.void)).name
            if dtype != "int64":
                found[dtype] += int(np.prod(tensor.sizes or [1]))
    return found


def _kernel_calls(plan) -> Counter[str]:
    """The ops a method runs on ExecuTorch's own kernels (outside any delegate), per call."""
    names = [f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators]
    return Counter(names[i.instr_args.op_index] for chain in plan.chains for i in chain.instructions
                   if hasattr(i.instr_args, "op_index"))


def read_precision(path: Path, declared: str) -> Precision:
    """What the program computes in, read back from the .pte: per method, the ops ExecuTorch runs itself
    (portable float kernels) and, inside each XNNPACK delegate, the types of the matmul / conv nodes."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]  # every method is the same graph at another batch size
    kinds: Counter[str] = Counter()
    matmuls: Counter[str] = Counter()
    weights: Counter[str] = Counter()
    for delegate in plan.delegates:
        if "xnnpack" not in delegate.id.lower():
            raise EdgekitError(f"{path.name}: a delegate of backend {delegate.id}, not XNNPACK")
        k, m, w = _graph_kinds(_xnn_graph(program.backend_delegate_data[delegate.processed.index].data))
        kinds, matmuls, weights = kinds + k, matmuls + m, weights + w
    outside = _kernel_calls(plan)
    weights += _constant_elements(plan)
    top = kinds.most_common(1)[0][0] if kinds else "float32"
    notes = []
    if top != DECLARED_COMPUTE[declared]:
        notes.append(f"asked for {declared}, XNNPACK computes its linear / conv layers in {top}")
    float_layers = sum(c for k, c in kinds.items() if k != "int8")
    if declared == "int8" and float_layers:
        notes.append(f"{float_layers} of {sum(kinds.values())} linear / conv layers stay in float")
    return Precision(declared, top, storage_type(weights),
                     {"method": plan.name, "methods": [p.name for p in program.execution_plan],
                      "xnnpack_delegates": len(plan.delegates), "weight_op_kinds": dict(kinds),
                      "activation_matmul_kinds": dict(matmuls),
                      "weight_elements": dict(weights), "ops_outside_delegates": dict(outside)},
                     tuple(notes))


def _specs(path: Path, spec: ModelSpec, names: list[str]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output tensors as the runtime reports them, the batch (and a dim that changes with the length
    between the first two methods) named: they differ per method."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path)
    metas = [program.metadata(n) for n in names[:2]]

    def specs(tensor_names, kind: str) -> tuple[TensorSpec, ...]:
        found = []
        for i, name in enumerate(tensor_names):
            info = [getattr(m, kind)(i) for m in metas]
            shape = [tuple(x.sizes()) for x in info]
            dims = tuple(d if all(s[k] == d for s in shape) else "length" for k, d in enumerate(shape[0]))
            found.append(TensorSpec(name, ("batch", *dims[1:]), np.dtype(SCALAR_TYPES[info[0].dtype()]).name))
        return tuple(found)
    return specs(spec.input_names, "input_tensor_meta"), specs(spec.output_names, "output_tensor_meta")


OPTIONS = {
    "runtime.layout": Option(values=("NCHW",)),  # the program keeps the model's own layout at its inputs
    "runtime.device": Option(values=("CPU",)),
    "runtime.batch_sizes": Option(),
    "quantization.method": Option(("int8",), ("minmax",)),
    "quantization.per_channel": Option(("int8",)),
}


class ExecuTorchBackend:
    name = "executorch"
    extra = "executorch"
    runtime_package = "executorch"  # what a device installs to run the artifact
    runtime_requires = ("torch",)  # executorch 1.5.1's Python runtime imports torch and links libtorch
    demo_targets = {"fp32": "executorch-cpu-fp32", "int8": "executorch-cpu-int8"}
    converter_modules = ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                         "executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    precisions = ("fp32", "int8")
    options = OPTIONS
    session_module = Path(__file__).with_name("executorch_session.py")

    def _write(self, module: torch.nn.Module, spec: ModelSpec, sizes: tuple[int, ...], path: Path) -> None:
        path.write_bytes(_CONVERTED.get(module, sizes, lambda: convert(module, spec, sizes)))

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        if profile.precision not in self.precisions:
            raise EdgekitError(f"{profile.name}: the executorch backend cannot make {profile.precision}; "
                               f"it makes {', '.join(self.precisions)}")
        sizes = tuple(sorted(set(profile.runtime.batch_sizes)))
        path = folder / MODEL_FILE
        self._write(spec.module, spec, sizes, path)
        made = methods(sizes, spec)
        # methods of one batch size differ in the length only: comparing two of them names the length dims
        by_length = [n for n, (b, _) in made.items() if b == sizes[0]]
        with native_stderr_captured():  # the runtime's cpuinfo lines on first load
            inputs, outputs = _specs(path, spec, by_length)
        runtime = {"threads": profile.runtime.threads,
                   "methods": {k: b if n is None else [b, n] for k, (b, n) in made.items()},
                   "length_axes": {k: list(v) for k, v in spec.dynamic_axes.items()},
                   "inputs": list(spec.input_names), "outputs": list(spec.output_names)}
        return Manifest(source, profile.name, self.name, "NCHW", inputs, outputs,
                        read_precision(path, "fp32"), (file_entry(folder, MODEL_FILE),),
                        versions("executorch", "torchao"), sizes, {"runtime": runtime})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import executorch_quant

        if calib is None:
            raise EdgekitError(f"{profile.name}: static int8 needs calibration data (--calib)")
        path = folder / manifest.model_file
        fp32_bytes = path.stat().st_size
        with native_stderr_captured():
            module, applied = executorch_quant.quantize(spec, profile.quantization, calib)
            path.write_bytes(convert(module, spec, manifest.batch_sizes))
        quant = quantization_record(profile, calib, fp32_bytes, **applied)
        return replace(manifest, precision=read_precision(path, profile.precision),
                       files=(file_entry(folder, MODEL_FILE),), extra={**manifest.extra, "quantization": quant})

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> ExecuTorchSession:
        with native_stderr_captured():  # cpuinfo and "Resetting threadpool" lines
            return ExecuTorchSession(folder / manifest.model_file, manifest.extra["runtime"], threads)

    def stock_int8(self, spec: ModelSpec, fp32: Path, manifest: Manifest, calib: CalibrationData,
                   folder: Path) -> Manifest:
        """ExecuTorch's documented XNNPACK int8 flow on the torch model (executorch_peer.py), with the fp32
        artifact's methods, as a target folder in ``folder``."""
        from edgekit.backends import executorch_peer

        made = {name: (b, None) if isinstance(b, int) else tuple(b)
                for name, b in manifest.extra["runtime"]["methods"].items()}
        path = folder / MODEL_FILE
        with native_stderr_captured():
            program, settings = executorch_peer.stock_int8(spec, made, calib)
            path.write_bytes(program)
            precision = read_precision(path, "int8")
        return stock_manifest(manifest, folder, "ExecuTorch XNNPACKQuantizer", settings, calib, precision,
                              (file_entry(folder, MODEL_FILE),))

    def check(self, spec: ModelSpec, profile: TargetProfile, program: torch.export.ExportedProgram
              ) -> list[Finding]:
        """Lower ``program`` to XNNPACK in memory: a lowering failure, the ops left outside XNNPACK (portable
        kernels), the batch pinned per method. Nothing is written."""
        from edgekit.errors import one_line
        from edgekit.findings import ERROR, WARNING, Finding
        from edgekit.graph import batch_is_dynamic

        findings = []
        if batch_is_dynamic(program):
            sizes = ", ".join(map(str, sorted(set(profile.runtime.batch_sizes))))
            findings.append(Finding(profile.name, WARNING, "pinned dim", None, None,
                                    f"the batch is dynamic in torch; the .pte pins it to {sizes} (one method per "
                                    "size): XNNPACK lowering narrows a dynamic batch's upper bound"))
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), native_stderr_captured():
            warnings.simplefilter("ignore")
            try:
                path = Path(tmp) / MODEL_FILE
                path.write_bytes(_lower({"forward": program}))
                precision = read_precision(path, "fp32")
            except Exception as exc:  # caught inside: native_stderr_captured would replay the log
                return findings + [Finding(profile.name, ERROR, "lowering failed", None, None,
                                           f"to_edge_transform_and_lower (XNNPACK): {one_line(exc)}")]
        outside = precision.evidence["ops_outside_delegates"]
        if outside:
            findings.append(Finding(profile.name, WARNING, "not delegated", None, None,
                                    "these ops run on ExecuTorch's portable kernels, outside XNNPACK: "
                                    + ", ".join(f"{op} x{n}" for op, n in sorted(outside.items()))))
        return findings


BACKEND = ExecuTorchBackend()

