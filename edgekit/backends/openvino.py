"""OpenVINO IR: torch.export -> ov.convert_model -> ov.save_model (.xml + .bin), compiled on the profile's device.

Precision is explicit. On CPUs with bf16 the CPU plugin computes in bf16 unless INFERENCE_PRECISION_HINT says
otherwise, and save_model stores fp16 weights unless compress_to_fp16=False: a profile that leaves either
default in force gets a warning, and the manifest says what the compiled model really runs in."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import openvino as ov

from edgekit.artifact import Manifest, Precision, TensorSpec, file_entry
from edgekit.backends.base import Option
from edgekit.backends.common import (
    PRECISION_NAMES,
    STOCK_SUFFIX,
    ConversionCache,
    batch_dynamic_shapes,
    quantization_record,
    stock_manifest,
    storage_type,
    versions,
)
from edgekit.backends.openvino_session import (
    DEFAULT_GROUP_SIZE,
    HINTS,
    TYPE_NAMES,
    OpenVinoSession,
    batch_one_shapes,
    compile_config,
    core,
)
from edgekit.bench.measurement import Throughput
from edgekit.config import QUANTIZED_PRECISIONS, RuntimeOptions, TargetProfile
from edgekit.errors import EdgekitError

if TYPE_CHECKING:  # export-side types: opening an artifact (bench workers) never imports torch
    import torch

    from edgekit.data.calib import CalibrationData
    from edgekit.findings import Finding
    from edgekit.graph import OpSites
    from edgekit.spec import ModelSpec

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
_SKIP_LAYERS = {"Const", "Input", "Output", "Parameter", "Result"}
# save_model's weight storage per precision: fp16 halves the file; every other precision keeps float32 weights
# (bf16 converts them when compiling; int8 starts from float32 and NNCF stores its own)
_FP16_WEIGHTS = {"fp16"}


def runtime_options(profile: TargetProfile, group_size: int | None = None) -> dict:
    """How to open the artifact, for every consumer (validation, bench, bundle): openvino_session.py reads it.
    ``group_size``: the activation group size an int8-dynamic quantization chose."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if profile.precision == "int8-dynamic":  # int8 weights; the CPU plugin quantizes activations per group
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(group_size or profile.quantization.dynamic_group_size or
                                                        DEFAULT_GROUP_SIZE)
    return {"device": profile.runtime.device, "precision": profile.precision, "threads": profile.runtime.threads,
            "config": config}


def device_missing(device: str) -> str | None:
    """Why ``device`` cannot be used on this host, or None when it can."""
    available = core().available_devices
    if device.split(":")[0] in ("AUTO", "MULTI", "HETERO") or device.split(".")[0] in available:
        return None
    return f"OpenVINO device {device!r} is not available here (available: {', '.join(available)})"


def _type_name(t: ov.Type) -> str:
    return PRECISION_NAMES.get(t.get_type_name(), t.get_type_name())


def _weight_elements(model_path: Path) -> Counter[str]:
    weights: Counter[str] = Counter()
    for op in core().read_model(str(model_path)).get_ops():
        if op.get_type_name() == "Constant" and (op.get_element_type().is_real()
                                                  or op.get_element_type() in (ov.Type.i8, ov.Type.u8)):
            size = int(np.prod(list(op.get_shape()), dtype=np.int64))
            if size > 1:  # scalars are scales and epsilons, not weights
                weights[_type_name(op.get_element_type())] += size
    return weights


def unread_precision(model_path: Path, profile: TargetProfile, why: str) -> Precision:
    """For a device this host lacks: the weights are known, the compute precision is not."""
    weights = _weight_elements(model_path)
    return Precision(profile.precision, "unknown", storage_type(weights),
                     {"weight_elements": dict(weights), "device": profile.runtime.device},
                     (f"{why}: compute precision not read back",))


def read_precision(model_path: Path, session: OpenVinoSession, profile: TargetProfile) -> Precision:
    """Read back the compute precision from the compiled model's execution graph and the weight storage type
    from the saved IR's constants."""
    weights = _weight_elements(model_path)
    executed: Counter[str] = Counter()
    for op in session.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) not in _SKIP_LAYERS:
            # outputPrecisions, not runtimePrecision: the latter names the weight type on fp16-weight layers
            for name in info["outputPrecisions"].astype(str).split(","):
                executed[PRECISION_NAMES.get(name.strip().lower(), name.strip().lower())] += 1
    applied = session.effective()
    floats = {k: v for k, v in executed.items() if k in ("float32", "float16", "bfloat16")}
    widest = max(floats, key=floats.get, default="unknown")
    # most layers int8: int8; in a quantized model, some (an attention model's weight layers): both, since
    # neither alone is the truth (a float model's few int8 layers are masks and indices, not compute)
    quantized = profile.precision in QUANTIZED_PRECISIONS
    compute = "int8" if executed.get("int8", 0) > sum(floats.values()) / 2 else \
        f"int8 + {widest}" if quantized and executed.get("int8", 0) else widest
    chosen = TYPE_NAMES[session.config["INFERENCE_PRECISION_HINT"]]
    notes = []
    if profile.precision not in QUANTIZED_PRECISIONS and compute != chosen:
        notes.append(f"compiled for {chosen}, the runtime computes in {compute}")
    return Precision(profile.precision, compute, storage_type(weights),
                     {"inference_precision_hint": applied["precision"], "executed_layer_precisions": dict(executed),
                      "weight_elements": dict(weights), "device": profile.runtime.device,
                      "execution_devices": _execution_devices(session.compiled),
                      "compile_config": session.config, "threads": applied["threads"],
                      **({"choice": session.note} if session.note else {})}, tuple(notes))


def _execution_devices(compiled: ov.CompiledModel) -> list[str]:
    try:
        return list(compiled.get_property("EXECUTION_DEVICES"))
    except RuntimeError:
        return []


def _specs(ports) -> tuple[TensorSpec, ...]:
    out = []
    for port in ports:
        dims = tuple(d.get_length() if d.is_static else "batch" if i == 0 else "?"
                     for i, d in enumerate(port.get_partial_shape()))
        out.append(TensorSpec(port.get_any_name(), dims, np.dtype(port.get_element_type().to_dtype()).name))
    return tuple(out)


OPTIONS = {
    "runtime.device": Option(),
    "runtime.layout": Option(values=("NCHW",)),  # the IR keeps the model's own layout
    "quantization.method": Option(("int8",), ("minmax", "percentile")),  # NNCF's range estimators
    "quantization.per_channel": Option(("int8",)),  # compress_weights (int8-dynamic) is always per channel
    "quantization.activation_ranges": Option(("int8",), ("auto", "per_channel", "per_tensor")),
    "quantization.dynamic_group_size": Option(("int8-dynamic",)),
}
_CONVERTED = ConversionCache()


MODULE_PATHS = "edgekit_module_paths"  # model rt_info: FX node name -> torch module path, as JSON (the ledger)


def _convert(spec: ModelSpec) -> ov.Model:
    """convert_model on torch.export's program, through the decoder convert_model itself makes for one, so the
    FX nodes that OpenVINO names its ops after are known: their module paths go into the model's rt_info."""
    from edgekit.graph import node_module_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=batch_dynamic_shapes(spec))
        decoder, graph = _decoded(program)
        model = ov.convert_model(decoder)
    paths = {node.name: node_module_path(node) for node in graph.nodes if node.op == "call_function"}
    paths.update(_renamed_convolutions(model, graph, paths))
    model.set_rt_info(json.dumps({k: v for k, v in paths.items() if v is not None}), MODULE_PATHS)
    return model


_CONVOLUTIONS = {"aten.convolution.default", "aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default"}


def _renamed_convolutions(model: ov.Model, graph, paths: dict[str, str | None]) -> dict[str, str | None]:
    """convert_model's fusions can name a convolution after an op fused into it ("Multiply_13490"), which loses
    its FX node and so its module. Such convolutions are paired with the FX convolutions whose names no op
    carries, in graph order, when both lists have the same length and each pair's weights the same number of
    elements; otherwise they stay unmapped."""
    import math

    named = {_fx_name(op) for op in model.get_ops()}
    lost = [n for n in graph.nodes if n.op == "call_function" and str(n.target) in _CONVOLUTIONS
            and n.name not in named]
    renamed = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")
               and _fx_name(op) not in paths]
    if not lost or len(lost) != len(renamed):
        return {}
    pairs = {}
    for node, op in zip(lost, renamed):
        weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
        shape = op.get_input_partial_shape(1)
        if weight is None or not shape.is_static or math.prod(weight.shape) != math.prod(shape.to_shape()):
            return {}
        pairs[_fx_name(op)] = paths.get(node.name)
    return pairs


def _fx_name(op: ov.Node) -> str:
    """convert_model names an op "<FX node>/<aten op>/<OpenVINO op>"."""
    return op.get_friendly_name().split("/")[0]


def op_module_paths(model: ov.Model) -> dict[str, str | None]:
    """Each op's friendly name -> the torch module path of the FX node it was converted from (None: unknown)."""
    paths = json.loads(model.get_rt_info(MODULE_PATHS).astype(str)) if model.has_rt_info(MODULE_PATHS) else {}
    return {op.get_friendly_name(): paths.get(_fx_name(op)) for op in model.get_ops()}


_NO_RULE = re.compile(r"No conversion rule found for operations: ([^\n]+)")
_FAILED_FOR = re.compile(r"Conversion is failed for: ([^\n]+)")
_OP_MESSAGE = re.compile(r"^-- (\S+) with a message:\n(.*?)(?=^-- |^Summary:|\Z)", re.MULTILINE | re.DOTALL)


def _decoded(program: torch.export.ExportedProgram) -> tuple[object, torch.fx.Graph]:
    """The decoder convert_model makes for an ExportedProgram, made here so its graph (decomposed by OpenVINO's
    own table) can place the ops the frontend names; its "not found in decomp table" logging is dropped."""
    from openvino.frontend.pytorch.fx_decoder import TorchFXPythonDecoder

    from edgekit.graph import root_log_captured

    with root_log_captured():
        decoder = TorchFXPythonDecoder.from_exported_program(program)
    return decoder, decoder.pt_module.graph


def _conversion_failures(exc: Exception, sites: OpSites, target: str) -> list[Finding]:
    """The frontend lists every op it has no rule for, or whose rule failed (with the rule's message)."""
    from edgekit.errors import one_line
    from edgekit.findings import ERROR, Finding
    from edgekit.graph import op_findings

    text = str(exc)
    messages = {op: " ".join(line.strip() for line in body.splitlines()
                             if line.strip() and not line.strip().startswith(("Check '", "Exception happened")))
                for op, body in _OP_MESSAGE.findall(text)}
    findings = []
    for pattern, why in ((_NO_RULE, lambda op: "OpenVINO's PyTorch frontend has no conversion rule for it"),
                         (_FAILED_FOR, lambda op: "OpenVINO's conversion rule failed: "
                                                  + messages.get(op, "see convert_model's log")[:300])):
        for listed in pattern.findall(text):
            findings += op_findings(target, "unsupported op", [op.strip() for op in listed.split(",")], sites, why)
    return findings or [Finding(target, ERROR, "conversion failed", None, None, one_line(exc))]


def _ir_with_modules(folder: Path, manifest: Manifest) -> tuple[dict, ov.Model, dict[str, str | None]]:
    """(the manifest's runtime options, the IR, each op's torch module path); a missing device raises."""
    runtime = manifest.extra["runtime"]
    missing = device_missing(runtime["device"])
    if missing:
        raise EdgekitError(missing)
    model = core().read_model(str(folder / manifest.model_file))
    return runtime, model, op_module_paths(model)


class OpenVinoBackend:
    name = "openvino"
    demo_targets = {"fp32": "openvino-cpu-fp32", "int8": "openvino-cpu-int8"}
    converter_modules = ("openvino.frontend.pytorch.fx_decoder", "nncf")
    # a compile in a fork of a process whose CPU plugin has run hung in ITaskExecutor::run_and_wait
    fork_hazards = ("libopenvino_intel_cpu_plugin",)
    extra = "openvino"
    runtime_package = "openvino"  # what a device installs to run the artifact
    precisions = ("fp32", "fp16", "bf16", "int8", "int8-dynamic")
    session_module = Path(__file__).with_name("openvino_session.py")
    options = OPTIONS

    def export(self, spec: ModelSpec, profile: TargetProfile, folder: Path, source: str) -> Manifest:
        if profile.precision not in self.precisions:
            raise EdgekitError(f"{profile.name}: the openvino backend cannot make {profile.precision}")
        model = _CONVERTED.get(spec.module, (), lambda: _convert(spec)).clone()
        # convert_model leaves every input dimension dynamic; pin all but the batch and the declared dynamic axes,
        # so a wrong shape is refused
        axes = spec.length_axes()
        model.reshape({port: ov.PartialShape([-1 if d == 0 or d in axes.get(i, ()) else n
                                              for d, n in enumerate(t.shape)])
                       for i, (port, t) in enumerate(zip(model.inputs, spec.example_inputs))})
        for port, name in zip(model.inputs, spec.input_names):
            port.get_tensor().set_names({name})
        for port, name in zip(model.outputs, spec.output_names):
            port.get_tensor().set_names({name})
        ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=profile.precision in _FP16_WEIGHTS)
        return self._describe(folder, profile, source, {})

    def quantize(self, spec: ModelSpec, profile: TargetProfile, folder: Path, manifest: Manifest,
                 calib: CalibrationData | None) -> Manifest:
        from edgekit.backends import openvino_quant

        path = folder / MODEL_FILE
        fp32_bytes = sum(f.bytes for f in manifest.files)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = core().read_model(str(path))
            model, applied = openvino_quant.quantize(model, profile.precision, profile.quantization, calib,
                                                     op_module_paths(model), profile.gates)
        # read_model memory-maps model.bin: writing over it in place would crash (SIGBUS) the process
        staged = folder / "quantized.xml"
        ov.save_model(model, str(staged), compress_to_fp16=False)
        del model
        os.replace(staged, path)
        os.replace(staged.with_suffix(".bin"), folder / WEIGHTS_FILE)
        quant = quantization_record(profile, calib, fp32_bytes, **applied)
        extra = {"quantization": quant}
        group_size = applied.get("dynamic_groups", {}).get("group_size")
        exact = applied.get("overflow_fix", {}).get("needs_exact_int8_products")
        if group_size or exact:
            extra["runtime"] = runtime_options(profile, group_size)
            if exact:
                extra["runtime"]["exact_int8_products"] = True
        return self._describe(folder, profile, source=manifest.source, extra=extra)

    def _describe(self, folder: Path, profile: TargetProfile, source: str, extra: dict) -> Manifest:
        missing = device_missing(profile.runtime.device)
        if missing:  # the IR is still made for the device; validation then fails at LOAD, saying why
            precision = unread_precision(folder / MODEL_FILE, profile, missing)
        else:
            runtime = extra.get("runtime") or runtime_options(profile)
            precision = read_precision(folder / MODEL_FILE, OpenVinoSession(folder / MODEL_FILE, runtime), profile)
        ports = core().read_model(str(folder / MODEL_FILE))  # the IR's own ports: the batch stays dynamic
        return Manifest(source, profile.name, self.name, "NCHW", _specs(ports.inputs), _specs(ports.outputs),
                        precision, (file_entry(folder, MODEL_FILE), file_entry(folder, WEIGHTS_FILE)),
                        {**versions("openvino"), "openvino_build": ov.get_version()}, None,
                        {"runtime": runtime_options(profile), "compress_to_fp16": profile.precision in _FP16_WEIGHTS,
                         **extra})

    def open(self, folder: Path, manifest: Manifest, threads: int | None = None) -> OpenVinoSession:
        runtime = manifest.extra["runtime"]
        missing = device_missing(runtime["device"])
        if missing:
            raise EdgekitError(missing)
        return OpenVinoSession(folder / manifest.model_file, runtime, threads)

    def stock_int8(self, spec: ModelSpec, fp32: Path, manifest: Manifest, calib: CalibrationData,
                   folder: Path) -> Manifest:
        """NNCF's own int8 of the fp32 IR in ``fp32``, with its documented defaults (openvino_peer.py), as a target
        folder in ``folder``, opened like edgekit's int8 (the int8 precision hint: float parts in f32)."""
        from edgekit.backends import openvino_peer

        settings = openvino_peer.stock_int8(fp32 / manifest.model_file, folder / MODEL_FILE, calib)
        runtime = {**manifest.extra["runtime"], "precision": "int8"}
        profile = TargetProfile(f"{self.name}-{STOCK_SUFFIX}", self.name, "int8",
                                runtime=RuntimeOptions(device=runtime["device"], threads=runtime["threads"]))
        precision = read_precision(folder / MODEL_FILE, OpenVinoSession(folder / MODEL_FILE, runtime), profile)
        return stock_manifest(manifest, folder, "NNCF nncf.quantize", settings, calib, precision,
                              (file_entry(folder, MODEL_FILE), file_entry(folder, WEIGHTS_FILE)),
                              runtime=runtime, compress_to_fp16=True)

    def check(self, spec: ModelSpec, profile: TargetProfile, program: torch.export.ExportedProgram
              ) -> list[Finding]:
        """convert_model on ``program`` in memory (it names every op it cannot convert), then compile on the
        profile's device when this host has it. Nothing is written."""
        from edgekit.errors import one_line
        from edgekit.findings import ERROR, WARNING, Finding
        from edgekit.graph import OpSites, batch_is_dynamic

        findings = []
        if not batch_is_dynamic(program):
            findings.append(Finding(profile.name, ERROR, "pinned dim", None, None, "the openvino export asks "
                                    "torch.export for a dynamic batch, which it cannot give"))
        graphs = [program.graph]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                decoder, graph = _decoded(program)
                graphs.insert(0, graph)
                model = ov.convert_model(decoder)
            except Exception as exc:
                return findings + _conversion_failures(exc, OpSites(*graphs), profile.name)
        missing = device_missing(profile.runtime.device)
        if missing:
            return findings + [Finding(profile.name, WARNING, "not compiled", None, None,
                                       f"{missing}: converted, but the device plugin's kernels are not checked")]
        try:
            core().compile_model(model, profile.runtime.device)
        except Exception as exc:
            findings.append(Finding(profile.name, ERROR, "no kernel", None, None,
                                    f"the {profile.runtime.device} plugin cannot compile it: {one_line(exc)}"))
        return findings

    def intermediates(self, folder: Path, manifest: Manifest, inputs: dict[str, np.ndarray]
                      ) -> dict[str, tuple[str | None, np.ndarray]]:
        """Every float output of every op of the IR on ``inputs``, in the model's op order, with the torch module
        of the FX node it was converted from (module paths from the IR's rt_info; None for an IR without them,
        or an op NNCF inserted): each is added as an output of the model (``Model.add_outputs``), which is then
        compiled with the manifest's options on its device."""
        runtime, model, paths = _ir_with_modules(folder, manifest)
        ports, names = [], []
        for op in model.get_ordered_ops():
            if op.get_type_name() in _SKIP_LAYERS or op.get_type_name() == "Constant":
                continue
            for i, out in enumerate(op.outputs()):
                if out.get_element_type().is_real():
                    ports.append(out)
                    names.append((op.get_friendly_name() + (f":{i}" if op.get_output_size() > 1 else ""),
                                  paths[op.get_friendly_name()]))
        added = model.add_outputs(ports)  # the Result of each (an output that was one already keeps its own)
        position = {out.get_node().get_friendly_name(): k for k, out in enumerate(model.outputs)}
        config, _ = compile_config(runtime)
        request = core().compile_model(model, runtime["device"], config).create_infer_request()
        values = request.infer(inputs).to_tuple()
        return {name: (path, np.array(values[position[out.get_node().get_friendly_name()]]))
                for (name, path), out in zip(names, added)}

    def profile_ops(self, folder: Path, manifest: Manifest, inputs: dict[str, np.ndarray], threads: int,
                    runs: int) -> list[tuple[str, str, str | None, float]]:
        """(node the plugin executed, node type, torch module or None, mean ms per inference) from OpenVINO's
        performance counters: the IR compiled as the bench session compiles it for ``threads`` (batch 1 on a
        batch-1 compile), plus PERF_COUNT, on one-sample ``inputs``."""
        from edgekit.backends import openvino_profile

        runtime, model, paths = _ir_with_modules(folder, manifest)
        if one_shapes := batch_one_shapes(model):
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in one_shapes.items()})
        config, _ = compile_config(runtime, threads, PERF_COUNT="YES")
        compiled = core().compile_model(model, runtime["device"], config)
        return openvino_profile.profile(compiled, paths, inputs, runs)

    def throughput(self, folder: Path, manifest: Manifest, one: dict[str, np.ndarray],
                   seconds: float) -> Throughput:
        """As benchmark_app does it: the THROUGHPUT hint (CPU streams) and an async queue of the plugin's optimal
        number of requests, all kept busy for ``seconds``."""
        runtime = manifest.extra["runtime"]
        missing = device_missing(runtime["device"])
        if missing:
            raise EdgekitError(missing)
        config, _ = compile_config(runtime, PERFORMANCE_HINT="THROUGHPUT")
        model = core().read_model(str(folder / manifest.model_file))
        if one_shapes := batch_one_shapes(model):  # batch-1 requests on a batch-1 compile, as benchmark_app does
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in one_shapes.items()})
        compiled = core().compile_model(model, runtime["device"], config)
        requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        queue = ov.AsyncInferQueue(compiled, requests)
        for _ in range(2 * requests):  # warm-up
            queue.start_async(one)
        queue.wait_all()
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async(one)  # blocks while every request is busy
            done += 1
        queue.wait_all()
        elapsed = time.perf_counter() - start
        streams = compiled.get_property("NUM_STREAMS")
        return Throughput(f"OpenVINO async queue, {requests} requests, THROUGHPUT hint ({streams} streams)",
                          int(requests), done, elapsed)


    def bundle_files(self, stage: Path, manifest: Manifest) -> list[Path]:
        """c/example_openvino.c (OpenVINO's C API ships with the wheel), the compile properties it applies, and
        the first golden sample as raw batch-1 input files for it."""
        folder = stage / "c"
        folder.mkdir(exist_ok=True)
        shutil.copy2(Path(__file__).with_name("bundle_files") / "example_openvino.c", folder / "example_openvino.c")
        runtime = manifest.extra["runtime"]
        # the hint asked for; the example, like openvino_session.compute_hint, drops it to f32 where the device
        # has no native f16 / bf16, and INFERENCE_NUM_THREADS 0 means every online core
        properties = {"DEVICE": runtime["device"], **runtime["config"],
                      "INFERENCE_PRECISION_HINT": HINTS[runtime["precision"]],
                      "INFERENCE_NUM_THREADS": str(runtime["threads"])}
        (folder / "properties.txt").write_text("".join(f"{k} {v}\n" for k, v in properties.items()))
        written = [folder / "example_openvino.c", folder / "properties.txt"]
        with np.load(stage / "golden.npz", allow_pickle=False) as z:
            for i, spec in enumerate(manifest.inputs):
                path = folder / f"input_{i}.bin"
                np.ascontiguousarray(z[f"input:{spec.name}"][:1], dtype=spec.dtype).tofile(path)
                written.append(path)
        return written


BACKEND = OpenVinoBackend()
