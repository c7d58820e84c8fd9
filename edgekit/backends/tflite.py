"""TFLite: litert-torch converts PyTorch to a .tflite flatbuffer directly (no TensorFlow); ai-edge-litert's
Interpreter runs it (tflite-runtime is broken with numpy 2).

litert-torch cannot make a dynamic batch for models that flatten or reshape, so the model gets one signature
per batch size of the profile ("b1", "b8", ...). NHWC profiles wrap the model with ``to_channel_last_io``."""
from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry  # noqa: E402
from edgekit.backends.base import Option  # noqa: E402
from edgekit.backends.common import (  # noqa: E402
    DECLARED_COMPUTE,
    ConversionCache,
    fixed_shapes,
    quantization_record,
    resized_example,
    stock_manifest,
    storage_type,
    versions,
)
from edgekit.backends.quiet import native_stderr_captured  # noqa: E402
from edgekit.backends.tflite_session import TfliteSession  # noqa: E402
from edgekit.config import QUANTIZED_PRECISIONS, TargetProfile  # noqa: E402
from edgekit.cpu import resolve_threads  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402

if TYPE_CHECKING:  # export-side types: opening an artifact (bench workers) never imports torch
    import torch

    from edgekit.data.calib import CalibrationData
    from edgekit.findings import Finding
    from edgekit.spec import ModelSpec

MODEL_FILE = "model.tflite"


def signature_name(batch: int, length: int | None = None) -> str:
    return f"b{batch}" if length is None else f"b{batch}_l{length}"


def signatures(profile: TargetProfile, spec: ModelSpec) -> dict[str, tuple[int, int | None]]:
    """One signature per batch size and, for a model with dynamic axes, per length: litert-torch pins shapes."""
    return {signature_name(b, n): (b, n) for b, n in fixed_shapes(profile.runtime.batch_sizes, spec)}


def _image_inputs(spec: ModelSpec) -> list[int]:
    return [i for i, t in enumerate(spec.example_inputs) if t.dim() == 4 and t.is_floating_point()]


_CONVERTED = ConversionCache()


def convert(spec: ModelSpec, profile: TargetProfile, path: Path) -> None:
    """Write the .tflite; a float conversion with the same layout and batch sizes is converted only once."""
    fp16 = profile.precision == "fp16"
    key = (profile.runtime.layout, tuple(signatures(profile, spec)), fp16)
    path.write_bytes(_CONVERTED.get(spec.module, key, lambda: _convert(spec, profile, path)))


def _convert(spec: ModelSpec, profile: TargetProfile, path: Path) -> bytes:
    with native_stderr_captured():  # torchao's "Failed to load ..._C_cutlass" lines on CPU-only machines
        import litert_torch

    module, nhwc, images = spec.module, profile.runtime.layout == "NHWC", _image_inputs(spec)
    if nhwc:
        module = litert_torch.to_channel_last_io(module, args=images).eval()
    converter, axes = None, spec.length_axes()
    for name, (size, length) in signatures(profile, spec).items():
        args = tuple(resized_example(t, size, axes.get(i, ()), length) for i, t in enumerate(spec.example_inputs))
        if nhwc:
            args = tuple(a.permute(0, 2, 3, 1).contiguous() if i in images else a
                         for i, a in enumerate(args))
        converter = (litert_torch.signature if converter is None else converter.signature)(name, module, args)
    quant_config = None
    if profile.precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    elif profile.precision not in ("fp32", *QUANTIZED_PRECISIONS):  # int8 quantizes the fp32 file afterwards
        raise EdgekitError(f"{profile.name}: the tflite backend cannot make {profile.precision}")
    with warnings.catch_warnings(), native_stderr_captured():
        warnings.simplefilter("ignore")
        converter.convert(quant_config=quant_config).export(str(path))
    return path.read_bytes()


def _introspect(path: Path) -> Interpreter:
    # Without the default XNNPACK delegate the op list is the model's own (no DELEGATE node)
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


HEAVY_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "EMBEDDING_LOOKUP"}


def _heavy_op_kinds(ops: list[dict], dtype_of: dict[int, np.dtype], produced: set[int]) -> Counter[str]:
    """How the ops that do the work run: int8 in and out (static), int8 weights with float activations
    (hybrid: the kernel quantizes activations on the fly), or float."""
    kinds: Counter[str] = Counter()
    for op in ops:
        if op["op_name"] not in HEAVY_OPS:
            continue
        out = dtype_of[op["outputs"][0]]
        int8_weights = any(dtype_of.get(i) == np.int8 and i not in produced for i in op["inputs"] if i >= 0)
        kinds["int8" if out == np.int8 else "hybrid-int8" if int8_weights else np.dtype(out).name] += 1
    return kinds


def read_precision(path: Path, declared: str) -> Precision:
    """Weight storage and compute types from the interpreter's tensors and ops (constants vs op outputs)."""
    interpreter = _introspect(path)
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()  # the only way the Python API lists ops
    produced = {i for op in ops for i in op["outputs"]}
    heavy = _heavy_op_kinds(ops, {t["index"]: np.dtype(t["dtype"]) for t in tensors}, produced)
    weights: Counter[str] = Counter()
    activations: Counter[str] = Counter()
    for t in tensors:
        dtype = np.dtype(t["dtype"]).name
        if t["index"] in produced:
            activations[dtype] += 1
        elif t["dtype"] in (np.float32, np.float16, np.int8) and int(np.prod(t["shape"])) > 1:
            weights[dtype] += int(np.prod(t["shape"]))
    op_counts = Counter(op["op_name"] for op in ops)
    top = heavy.most_common(1)[0][0] if heavy else "float32"
    compute = "int8" if top in ("int8", "hybrid-int8") else top
    notes = []
    if compute != DECLARED_COMPUTE[declared]:
        notes.append(f"asked for {declared}, the interpreter computes in {compute}"
                     + (" (fp16 weights are dequantized to float32 on the CPU)" if declared == "fp16" else ""))
    weight_type = storage_type(weights)
    return Precision(declared, compute, weight_type,
                     {"weight_elements": dict(weights), "activation_tensors": dict(activations),
                      "weight_op_kinds": dict(heavy),
                      "dequantize_ops": op_counts.get("DEQUANTIZE", 0), "ops": dict(op_counts)}, tuple(notes))


def _specs(path: Path, spec: ModelSpec, signature: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    runner = Interpreter(model_path=str(path)).get_signature_runner(signature)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    inputs = tuple(TensorSpec(name, tuple(int(d) for d in ins[f"args_{i}"]["shape"]),
                              np.dtype(ins[f"args_{i}"]["dtype"]).name) for i, name in enumerate(spec.input_names))
    outputs = tuple(TensorSpec(name, tuple(int(d) for d in outs[f"output_{i}"]["shape"]),
                               np.dtype(outs[f"output_{i}"]["dtype"]).name) for i, name in enumerate(spec.output_names))
    return inputs, outputs


OPTIONS = {
    "runtime.layout": Option(),
    "runtime.batch_sizes": Option(),
    "quantization.method": Option(("int8",), ("minmax",)),  # ai-edge-quantizer calibrates with min/max only
    "quantization.per_channel": Option(("int8",)),  # dynamic_wi8_afp32 is channel-wise by recipe
}


_LOWERING = re.compile(r"Lowering not found: (\S+)")
_ILLEGAL = re.compile(r"failed to legalize operation '([^']+)'")
_PREPARE = re.compile(r"Node number (\d+) \((\w+)\) failed to prepare")


def _unwrapped(path: str | None) -> str | None:
    """Paths inside to_channel_last_io's wrapper, as the user's model names them."""
    if path is None or path != "wrapped" and not path.startswith("wrapped."):
        return path
    return path.removeprefix("wrapped").removeprefix(".")


def _named(message: str, spec: ModelSpec) -> str:
    """litert-torch calls the inputs args_0, args_1, ...: use the model's names."""
    for i, name in enumerate(spec.input_names):
        message = message.replace(f"'args_{i}'", f"{name!r}")
    return message


def _tensor_module_paths(program: torch.export.ExportedProgram) -> dict[str, str]:
    """litert-torch names tensors after the module hierarchy of the node that made them ("Cls_attr/Cls_attr;N",
    root class first): that hierarchy, without the root, -> the module path."""
    from edgekit.graph import node_module_path

    found = {}
    for node in program.graph.nodes:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        path = node_module_path(node)
        if path is not None and len(stack) > 1:
            found["/".join(f"{cls}_{name.split('.')[-1]}" for name, cls in stack[1:])] = path
    return found


def _op_module_path(interpreter: Interpreter, index: int, program: torch.export.ExportedProgram) -> str | None:
    """The module an interpreter op came from, read from its output tensor names (else its inputs')."""
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    op = interpreter._get_ops_details()[index]
    known = _tensor_module_paths(program)
    for tensor in [*op["outputs"], *op["inputs"]]:
        for hierarchy in reversed(names.get(tensor, "").split(";")):
            segments = hierarchy.split("/")
            for skip in (1, 2):  # the root class; and to_channel_last_io's wrapper around it
                if "/".join(segments[skip:]) in known:
                    return known["/".join(segments[skip:])]
    return None


def _input_transposes(interpreter: Interpreter, signature: str, spec: ModelSpec, layout: str,
                      target: str) -> list[Finding]:
    """TRANSPOSE ops that read a model input: the layout the input arrives in is not the one the kernels use."""
    from edgekit.findings import WARNING, Finding

    details = interpreter.get_signature_runner(signature).get_input_details()
    inputs = {details[f"args_{i}"]["index"]: name for i, name in enumerate(spec.input_names)}
    findings = []
    for op in interpreter._get_ops_details():
        for tensor in op["inputs"]:
            if op["op_name"] == "TRANSPOSE" and tensor in inputs:
                findings.append(Finding(target, WARNING, "layout", "TRANSPOSE", None,
                                        f"input {inputs[tensor]} ({layout}) is transposed before the first kernel: "
                                        "LiteRT computes in NHWC" + ("" if layout == "NHWC" else
                                        "; an NHWC profile (runtime.layout) avoids it")))
    return findings


def _lowering_failure(exc: Exception, program: torch.export.ExportedProgram, target: str) -> list[Finding]:
    from edgekit.errors import one_line
    from edgekit.findings import ERROR, Finding
    from edgekit.graph import OpSites, failing_node, node_module_path, op_findings

    node = failing_node(exc)
    if node is not None:
        return [Finding(target, ERROR, "unsupported op", str(node.target), _unwrapped(node_module_path(node)),
                        f"litert-torch cannot lower it: {one_line(exc)}")]
    named = _LOWERING.search(str(exc))
    if named:
        return op_findings(target, "unsupported op", [named.group(1)], OpSites(program.graph),
                           lambda op: "litert-torch has no lowering for it")
    illegal = _ILLEGAL.search(str(exc))
    return [Finding(target, ERROR, "conversion failed", illegal.group(1) if illegal else None, None,
                    f"litert-torch: {one_line(exc)}")]


def _convert_in_memory(spec: ModelSpec, layout: str, size: int) -> tuple[bytes, Exception | None, list[str]]:
    """The flatbuffer of one signature as export makes it (layout wrapper included), the conversion's failure,
    and what litert-torch logged meanwhile (e.g. 64-bit inputs narrowed to 32 bits)."""
    from edgekit.graph import root_log_captured

    with native_stderr_captured():  # torchao's "Failed to load ..._C_cutlass" lines on CPU-only machines
        import litert_torch

    module, images = spec.module, _image_inputs(spec)
    args = tuple(resized_example(t, size) for t in spec.example_inputs)
    if layout == "NHWC":
        module = litert_torch.to_channel_last_io(module, args=images).eval()
        args = tuple(a.permute(0, 2, 3, 1).contiguous() if i in images else a for i, a in enumerate(args))
    content, failure = b"", None
    with warnings.catch_warnings(), native_stderr_captured(), root_log_captured() as logs:
        warnings.simplefilter("ignore")
        try:  # caught inside: native_stderr_captured would replay the converter's log on the way out
            content = bytes(litert_torch.signature(signature_name(size), module, args).convert().model_content())
        except Exception as exc:
            failure = exc
    return content, failure, [_named(r.getMessage(), spec) for r in logs if "litert_torch" in r.pathname]


def _prepare_failure(exc: Exception, interpreter: Interpreter, program: torch.export.ExportedProgram,
                     target: str) -> Finding:
    """A kernel that refuses the op it was given (the interpreter names the op by its index)."""
    from edgekit.findings import ERROR, Finding

    found = _PREPARE.search(str(exc))
    op, path = None, None
    if found:
        op, path = found.group(2), _unwrapped(_op_module_path(interpreter, int(found.group(1)), program))
    return Finding(target, ERROR, "no kernel", op, path,
                   f"the LiteRT interpreter cannot prepare it: {str(exc).strip()[:300]}")


def tensor_module_path(name: str) -> str | None:
    """The torch module path in a litert-torch tensor name: each ";"-separated location is the class hierarchy
    of an op fused into the one that wrote the tensor ("pkg.Root/pkg.Trunk_trunk/torch...Conv2d_conv1;1"); a
    segment is "<class>_<attribute>" and the root class comes first. Several locations (e.g. a convolution and the
    ReLU fused into it) give the module that holds them all: the tensor is not any one op's output. None when
    the name holds no hierarchy (a signature output, a constant)."""
    paths = []
    for location in filter(None, name.split(";")):
        if location.isdigit() or "/" not in location and "." not in location:  # ";1" suffixes, "b1_output_0"
            continue
        attributes = []
        for segment in location.split("/")[1:]:
            cls = segment.rpartition(".")[2].lstrip("_")
            if "_" not in cls:
                return None
            attributes.append(cls.split("_", 1)[1])
        paths.append(attributes)
    if not paths:
        return None
    common = paths[0]
    for other in paths[1:]:
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return _unwrapped(".".join(common))


def container_aliases(module: torch.nn.Module) -> dict[str, str]:
    """litert-torch's names leave out the containers a model iterates rather than calls (a ModuleList of blocks:
    "_blocks.2" is named "2"): each such shortened path -> the module's own path."""
    import torch

    skipped = {path for path, m in module.named_modules()
               if path and isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.ParameterList))}
    aliases = {}
    for path, _ in module.named_modules():
        parts = path.split(".")
        short = ".".join(p for i, p in enumerate(parts) if ".".join(parts[:i + 1]) not in skipped)
        if path and short != path and short:
            aliases[short] = path
    return aliases


def module_path_of(name: str, aliases: dict[str, str]) -> str | None:
    """The torch module path a tensor name holds, the iterated containers put back."""
    path = tensor_module_path(name)
    return aliases.get(path, path) if path else path


class TfliteBackend:
    name = "tflite"
    demo_targets = {"fp32": "tflite-cpu-fp32", "int8": "tflite-cpu-int8"}
    converter_modules = ("litert_torch", "ai_edge_quantizer.quantizer")
    extra = "tflite"
    runtime_package = "ai-edge-litert"  # what a device installs to run the artifact
    precisions = ("fp32", "fp16", "int8", "int8-dynamic")
    options = OPTIONS
    session_module = Path(__file__).with_name("tflite_session.py")

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        path = folder / MODEL_FILE
        convert(spec, profile, path)
        batch_sizes = tuple(sorted(set(profile.runtime.batch_sizes)))
        made = signatures(profile, spec)
        inputs, outputs = _specs(path, spec, next(iter(made)))
        # the batch (and the length) differ per signature; the manifest names them and lists the sizes (the
        # inputs' declared length axes are named by the export for every backend)
        inputs = tuple(TensorSpec(s.name, ("batch", *s.shape[1:]), s.dtype) for s in inputs)
        # an output dim that changes with the length is the length
        other = _specs(path, spec, list(made)[1])[1] if len(spec.lengths) > 1 else outputs
        outputs = tuple(TensorSpec(s.name, ("batch", *(n if n == m else "length" for n, m in
                                                      zip(s.shape[1:], o.shape[1:]))), s.dtype)
                        for s, o in zip(outputs, other))
        return Manifest(source, profile.name, self.name, profile.runtime.layout, inputs, outputs,
                        read_precision(path, profile.precision), (file_entry(folder, MODEL_FILE),),
                        versions("litert-torch", "ai-edge-litert"), batch_sizes,
                        {"runtime": {"threads": profile.runtime.threads,
                                     "signatures": {k: b if n is None else [b, n] for k, (b, n) in made.items()},
                                     "length_axes": {k: list(v) for k, v in spec.dynamic_axes.items()},
                                     "signature_inputs": {s.name: f"args_{i}" for i, s in enumerate(inputs)},
                                     "signature_outputs": {s.name: f"output_{i}" for i, s in enumerate(outputs)}},
                         "module_aliases": container_aliases(spec.module)})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import tflite_quant

        path = folder / MODEL_FILE
        fp32 = folder / "fp32.tflite"
        os.replace(path, fp32)
        try:
            with native_stderr_captured():
                applied = tflite_quant.quantize(fp32, path, profile.precision, profile.quantization, calib,
                                                spec.input_names, profile.runtime.layout,
                                                lambda n: module_path_of(n, manifest.extra.get("module_aliases", {})))
            fp32_bytes = fp32.stat().st_size
        finally:
            fp32.unlink()
        quant = quantization_record(profile, calib, fp32_bytes, **applied)
        return replace(manifest, precision=read_precision(path, profile.precision),
                       files=(file_entry(folder, MODEL_FILE),), extra={**manifest.extra, "quantization": quant})

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> TfliteSession:
        with native_stderr_captured():  # "Created TensorFlow Lite XNNPACK delegate" on every load
            return TfliteSession(folder / manifest.model_file, manifest.extra["runtime"], threads)

    def stock_int8(self, spec: ModelSpec, fp32: Path, manifest: Manifest, calib: CalibrationData,
                   folder: Path) -> Manifest:
        """ai-edge-quantizer's default static int8 recipe on the fp32 .tflite in ``fp32`` (tflite_peer.py), as a
        target folder in ``folder``."""
        from edgekit.backends import tflite_peer

        path = folder / MODEL_FILE
        with native_stderr_captured():
            settings = tflite_peer.stock_int8(fp32 / manifest.model_file, path, calib, spec.input_names,
                                              manifest.layout)
        return stock_manifest(manifest, folder, "ai-edge-quantizer", settings, calib, read_precision(path, "int8"),
                              (file_entry(folder, MODEL_FILE),))

    def intermediates(self, folder: Path, manifest: Manifest, inputs: dict[str, np.ndarray]
                      ) -> dict[str, tuple[str | None, np.ndarray]]:
        """Every float tensor an op of the first signature writes, in op order, with the torch module its name
        holds: the interpreter keeps them all (``experimental_preserve_all_tensors``). It runs LiteRT's builtin
        kernels without the XNNPACK delegate, whose inner tensors the interpreter cannot read; ``inputs`` go
        through in chunks of that signature's batch (the last one padded). Tensors stay in LiteRT's layout
        (NHWC inside the graph)."""
        runtime = manifest.extra["runtime"]
        with native_stderr_captured(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is intended for debugging"
            interpreter = Interpreter(model_path=str(folder / manifest.model_file),
                                      num_threads=resolve_threads(runtime["threads"]),
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                                      experimental_preserve_all_tensors=True)
        # the interpreter lists the ops of subgraph 0 only: run that signature
        name = next(n for n in runtime["signatures"] if interpreter.get_signature_runner(n)._subgraph_index == 0)
        size = runtime["signatures"][name]
        batch = size if isinstance(size, int) else size[0]
        runner = interpreter.get_signature_runner(name)
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
        outputs = {d["index"] for d in runner.get_output_details().values()}  # the model's outputs: the root's
        # activations: float ones, and int8 ones with their scale (dequantized here); batch first
        written = [i for op in interpreter._get_ops_details() for i in op["outputs"]
                   if i >= 0 and len(details[i]["shape"]) and details[i]["shape"][0] == batch
                   and (np.issubdtype(details[i]["dtype"], np.floating)
                        or len(details[i]["quantization_parameters"]["scales"]) == 1)]
        n = len(next(iter(inputs.values())))
        chunks: dict[int, list[np.ndarray]] = {i: [] for i in written}
        for start in range(0, n, batch):
            part = {k: v[start:start + batch] for k, v in inputs.items()}
            got = len(next(iter(part.values())))
            part = {k: np.concatenate([v, np.repeat(v[-1:], batch - got, axis=0)]) for k, v in part.items()}
            runner(**{runtime["signature_inputs"][k]: v for k, v in part.items()})
            for i in written:
                chunks[i].append(np.array(interpreter.get_tensor(i))[:got])
        found = {}
        for i in written:
            value, q = np.concatenate(chunks[i]), details[i]["quantization_parameters"]
            if not np.issubdtype(value.dtype, np.floating):
                value = ((value.astype(np.float32) - q["zero_points"][0]) * q["scales"][0]).astype(np.float32)
            found[details[i]["name"]] = ("" if i in outputs else
                                         module_path_of(details[i]["name"], manifest.extra.get("module_aliases", {})),
                                         value)
        return found

    def check(self, spec: ModelSpec, profile: TargetProfile, program: torch.export.ExportedProgram
              ) -> list[Finding]:
        """Convert in memory for the smallest batch size of the profile (the ops are the same for every size),
        with the profile's layout, then allocate it in the interpreter: ops without a lowering, kernels that
        refuse to prepare, layout transposes at the inputs, the batch pinned per signature. Nothing is written."""
        from edgekit.findings import WARNING, Finding
        from edgekit.graph import batch_is_dynamic

        size = min(profile.runtime.batch_sizes)
        content, failure, notes = _convert_in_memory(spec, profile.runtime.layout, size)
        if failure is not None:
            return _lowering_failure(failure, program, profile.name)
        findings = [Finding(profile.name, WARNING, "converter", None, None, f"litert-torch: {n}") for n in notes]
        if batch_is_dynamic(program):
            sizes = ", ".join(map(str, sorted(set(profile.runtime.batch_sizes))))
            findings.append(Finding(profile.name, WARNING, "pinned dim", None, None,
                                    f"the batch of {', '.join(spec.input_names)} is dynamic in torch; LiteRT pins "
                                    f"it to {sizes} (one signature per size), every other dim to the example's"))
        with native_stderr_captured():
            interpreter = Interpreter(model_content=content)
            try:
                interpreter.allocate_tensors()
            except Exception as exc:  # caught inside: native_stderr_captured would replay the log
                return findings + [_prepare_failure(exc, interpreter, program, profile.name)]
        return findings + _input_transposes(interpreter, signature_name(size), spec, profile.runtime.layout,
                                            profile.name)


BACKEND = TfliteBackend()
