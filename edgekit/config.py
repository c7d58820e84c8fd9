"""Target profiles (device profiles): frozen dataclasses loaded from TOML, unknown keys rejected."""
from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.lengths import base_name
from edgekit.resources import targets_dir

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-dynamic")
QUANTIZED_PRECISIONS = ("int8", "int8-dynamic")  # made by a quantize step after the fp32 export
LAYOUTS = ("NCHW", "NHWC")

# Which way is better for each gated metric; a gate on any other name is a typo and is rejected.
LOWER_IS_BETTER = {"max_abs_error", "max_rel_error", "mean_abs_error", "accuracy_drop"}
HIGHER_IS_BETTER = {"cosine", "sqnr_db", "top1_agreement"}
OUTPUT_METRICS = {"max_abs_error", "max_rel_error", "mean_abs_error", "cosine", "sqnr_db", "top1_agreement"}
TASK_METRICS = {"accuracy_drop", "top1_agreement"}
# What each gated metric measures (the docs' profile reference is generated from this; every metric needs one).
METRIC_MEANINGS = {
    "max_abs_error": "largest |runtime - torch| over the output's elements",
    "max_rel_error": "max_abs_error divided by the largest |torch| value of the output: one fp32 tolerance fits "
                     "logits and hidden states",
    "mean_abs_error": "mean |runtime - torch| over the output's elements",
    "cosine": "cosine similarity of the runtime's and torch's output, flattened",
    "sqnr_db": "signal-to-quantization-noise ratio in dB: 10 log10(sum torch^2 / sum (runtime - torch)^2)",
    "top1_agreement": "share of samples whose top-1 class is torch's (2-D class scores; under [gates.task], the "
                      "model's logits output)",
    "accuracy_drop": "torch's task accuracy minus the runtime's, in percentage points",
}


@dataclass(frozen=True)
class Threshold:
    """Worse than ``warn`` gives WARN, worse than ``fail`` gives FAIL ("worse" by the metric's direction).

    Attributes:
        warn: Past this value the gate warns (the row is WARN).
        fail: Past this value the gate fails (the row is FAIL). It may not lie on the better side of ``warn``.
    """

    warn: float
    fail: float


@dataclass(frozen=True)
class Gates:
    """The accuracy gates a run on the target must pass: ``[gates.outputs.NAME]`` and ``[gates.task]``.

    Attributes:
        outputs: Output name, or ``"*"`` for every output, to a table of metric -> threshold. An output's own
            gates are added to the ``"*"`` ones and win where both name a metric. Metrics: ``OUTPUT_METRICS``.
        task: Metric -> threshold for the task on real data (skipped, and said so, when a run has only the example
            inputs). Metrics: ``TASK_METRICS``.
        near_tie: A top-1 flip where torch led its runner-up by at most this share of its median lead (over the
            validation samples) is a near-tie: listed with its lead in every report, but not counted by the
            ``top1_agreement`` gates, since any small error turns such a sample. 0 counts every flip.
            ``top1_agreement`` gates then only warn when the data has labels and ``[gates.task]`` has
            ``accuracy_drop``: the labels decide, as NNCF's accuracy control decides by ``max_drop``.
    """

    outputs: dict[str, dict[str, Threshold]] = field(default_factory=dict)
    task: dict[str, Threshold] = field(default_factory=dict)
    near_tie: float = 0.25

    def for_output(self, name: str) -> dict[str, Threshold]:
        return {**self.outputs.get("*", {}), **self.outputs.get(base_name(name), {})}


@dataclass(frozen=True)
class Augment:
    """Optional calibration augmentation (seeded): horizontal flips, random crops, brightness jitter.

    Attributes:
        flip: Mirror half of the calibration images left to right, at random.
        crop: Pixels of random crop-and-pad: each image is shifted by up to this many pixels each way.
        brightness: Brightness jitter: each image is scaled by 1 +/- up to this fraction.
    """

    flip: bool = False
    crop: int = 0
    brightness: float = 0.0


@dataclass(frozen=True)
class RuntimeOptions:
    """How the runtime opens and runs the artifact: ``[runtime]``.

    Attributes:
        threads: Threads of the runtime's session (0: all cores). Bench also times one thread.
        device: The runtime's device string, e.g. OpenVINO's ``CPU`` or ``GPU``.
        layout: The layout of the artifact's image inputs: NCHW (the model's own) or NHWC.
        batch_sizes: The batch sizes to make, for runtimes without a dynamic batch (TFLite, ExecuTorch): one
            signature or method each.
        opset: The ONNX opset the exporter targets.
    """

    threads: int = 0
    device: str = "CPU"
    layout: str = "NCHW"
    batch_sizes: tuple[int, ...] = (1, 8)
    opset: int = 18


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
WEIGHT_ROUNDINGS = ("nearest", "gptq", "distill")
RANKINGS = ("auto", "noise", "noise_per_ms", "sqnr_drop")


@dataclass(frozen=True)
class QuantRecipe:
    """WHAT to quantize; each backend module decides HOW: ``[quantization]``.

    Attributes:
        method: Calibration method for static int8 (how activation ranges are chosen from the calibration data).
        per_channel: Per-channel weight scales (else one scale per weight tensor).
        reduce_range: 7-bit weights: avoids int16 saturation of u8s8 kernels on x86 without VNNI.
        samples: Calibration samples to draw (seeded) from ``--calib``.
        keep_float: Regexes of torch module paths (or runtime node names) to keep in float.
        mixed_precision: Accuracy-aware mixed precision: keep the most sensitive layers in float, fewest first,
            until the profile's gates pass on held-out calibration samples (``edgekit.quantize.mixed``).
        max_float_layers: The mixed-precision search stops at this many layers in float, gates passed or not.
        search_samples: Calibration samples the search judges on (the validation data stays unseen).
        speed_check: After the search, layers whose ops the runtime's profiler times slower in int8 than in fp32
            go to float too, if the whole artifact gets faster and the gates still hold (runtimes with a per-op
            profiler).
        rank_by: How the search orders the layers to keep in float, from each round's per-layer ledger: by the
            growth of the noise-to-signal power their stretch adds (``noise``); by that per ms the layer costs in
            float instead of int8, from the runtime's per-op profiler (``noise_per_ms``; runtimes without one rank
            by noise, and say so); by the dB the SQNR drops over their stretch (``sqnr_drop``, which favours the
            first int8 layers after float ones); or (``auto``) by whichever of noise and sqnr_drop helped more when
            their first choices were tried in float.
        dynamic_activations: int8-dynamic: one activation scale per tensor (``per_tensor``), per row, i.e. per
            token (``per_row``), or (``auto``) per row except where per tensor keeps the profile's output gates on
            calibration samples. Backends that apply it say which values they take.
        dynamic_group_size: int8-dynamic, OpenVINO: how many values of a row share one activation scale in the CPU
            plugin. 0: the largest of 128, 64, 32 that divides every row 32 quantizes and keeps the profile's output
            gates on calibration samples (32 without them). Larger groups run faster and add more noise.
        activation_ranges: Static int8, OpenVINO: NNCF's per-channel activation ranges at depthwise convolutions'
            inputs (``per_channel``), per-tensor ones (``per_tensor``), or (``auto``) whichever gives the smaller
            error on calibration samples held out from the ranges.
        weight_rounding: Static int8: ``gptq`` rounds the torch weights onto the int8 grid on the calibration data
            before export (``edgekit.quantize.gptq``), and every backend's quantizer then keeps them; ``nearest``
            leaves rounding to the quantizer; ``distill`` starts from GPTQ's weights and fine-tunes them under
            simulated int8 to give the float model's outputs on the calibration data
            (``edgekit.quantize.distill``), kept only if better on held-out samples.
        distill_steps: ``distill``: training steps of 16 calibration samples.
        distill_lr: ``distill``: Adam's learning rate, decayed to 0 over the steps.
        seed: Seed of the calibration draw and its augmentation.
        augment: ``[quantization.augment]``: optional calibration augmentation.
    """

    method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    samples: int = 200
    keep_float: tuple[str, ...] = ()
    mixed_precision: bool = False
    max_float_layers: int = 12
    search_samples: int = 64
    speed_check: bool = True
    rank_by: str = "auto"
    dynamic_activations: str = "per_tensor"
    dynamic_group_size: int = 0
    activation_ranges: str = "auto"
    weight_rounding: str = "nearest"
    distill_steps: int = 150
    distill_lr: float = 5e-5
    seed: int = 0
    augment: Augment = field(default_factory=Augment)


@dataclass(frozen=True)
class Limits:
    """How long each stage of one target may run, and how much memory its worker may take: ``[limits]``. Past a
    time limit the worker and everything it started are killed and the target is a TIMEOUT row naming the stage;
    the other targets go on. The CLI's ``--limit KEY=VALUE`` overrides them for one command.

    Attributes:
        export: Seconds the backend's converter may take to write the float artifact.
        quantize: Seconds the runtime's quantizer (or the mixed-precision search) may take. GPTQ and distillation
            run before the worker starts, on every core, and are not counted.
        validate: Seconds opening the artifact and running the validation data through it may take.
        bench: Seconds one row of ``edgekit bench`` may take (``--timeout`` overrides it too).
        ledger: Seconds running one artifact with its intermediates may take (``edgekit ledger``).
        memory_mb: Megabytes of address space a worker may add to what it holds when it starts (0: no limit).
            Over it, the target is a MEMORY row instead of the machine's OOM killer ending edgekit.
    """

    export: float = 1800.0
    quantize: float = 3600.0
    validate: float = 600.0
    bench: float = 300.0
    ledger: float = 600.0
    memory_mb: int = 0


@dataclass(frozen=True)
class TargetProfile:
    """A target (device profile): a backend, a precision, runtime options, a quantization recipe and the gates a
    run must pass. Read from TOML by ``parse_profile``, which refuses unknown keys.

    Attributes:
        name: The profile's name, as ``--target`` and the run folder name it.
        backend: The backend that makes and runs the artifact (a registered backend's name).
        precision: What the model computes in on the runtime, never less.
        description: One line for ``edgekit profiles``.
        device_label: The hardware this profile stands for, e.g. "Raspberry Pi 4 (Cortex-A72)".
        runtime: ``[runtime]``: how the runtime opens and runs the artifact.
        gates: ``[gates]``: the accuracy gates.
        quantization: ``[quantization]``: the recipe of int8 and int8-dynamic targets.
        validation_samples: At most this many samples of ``--data`` are run and compared (``[validation] samples``).
        limits: ``[limits]``: each stage's time limit and the workers' memory limit.
        path: Where the profile was read from (not a TOML key).
        text: The TOML it came from, copied into each run so re-validation uses the same gates (not a TOML key).
        explicit: The keys its TOML sets, e.g. ``"runtime.threads"``, ``"quantization.method"`` (not a TOML key).
        formerly: Earlier names of this profile: ``--target OLD`` still loads it, with a one-line notice.
    """

    name: str
    backend: str
    precision: str
    description: str = ""
    device_label: str = ""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    gates: Gates = field(default_factory=Gates)
    quantization: QuantRecipe = field(default_factory=QuantRecipe)
    validation_samples: int = 500
    limits: Limits = field(default_factory=Limits)
    path: str = ""
    text: str = ""
    explicit: frozenset[str] = frozenset()
    formerly: tuple[str, ...] = ()


_TOP_KEYS = {"name", "backend", "precision", "description", "device_label", "formerly", "runtime", "gates",
             "quantization", "validation", "limits"}


# The schema beyond the field types: the range each number must lie in (inclusive).
RANGES: dict[str, tuple[float, float]] = {
    "threads": (0, 4096), "opset": (7, 30), "batch_sizes": (1, 4096), "samples": (1, 10_000_000),
    "seed": (0, 2**32 - 1), "max_float_layers": (1, 10_000),
    "search_samples": (1, 100_000), "crop": (0, 1024), "brightness": (0.0, 1.0),
    "distill_steps": (1, 100_000), "distill_lr": (1e-9, 1.0), "dynamic_group_size": (0, 65536),
    "export": (1, 1e6), "quantize": (1, 1e6), "validate": (1, 1e6), "bench": (1, 1e6), "ledger": (1, 1e6),
    "memory_mb": (0, 1 << 30),
}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def typed_value(where: str, key: str, value: Any, hint: str,
                ranges: dict[str, tuple[float, float]] = RANGES) -> Any:
    """``value`` checked against a field's annotation (``int``, ``float``, ``bool``, ``str``, ``tuple[X, ...]``,
    ``dict[...]``, ``Any``, each optionally ``| None``) and its range in ``ranges``; JSON and TOML lists become
    tuples. A wrong type or range is a one-line error naming the key. Profiles and run records use it alike."""
    if hint.endswith(" | None"):
        if value is None:
            return None
        hint = hint.removesuffix(" | None")
    if hint == "Any":
        return value
    if hint.startswith("dict["):
        if not isinstance(value, dict):
            raise EdgekitError(f"{where}: {key} must be a table, not {value!r}")
        return value
    if hint.startswith("tuple["):
        item = hint[len("tuple["):].split(",")[0].strip()
        if not isinstance(value, list):
            raise EdgekitError(f"{where}: {key} must be a list of {item}s, not {value!r}")
        return tuple(typed_value(where, key, v, item, ranges) for v in value)
    kind = {"int": int, "float": float, "bool": bool, "str": str}[hint]
    ok = isinstance(value, bool) if kind is bool else \
        isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if not ok:
        raise EdgekitError(f"{where}: {key} must be {_NAMES[kind]}, not {value!r}")
    low, high = ranges.get(key, (None, None))
    if low is not None and not low <= value <= high:
        raise EdgekitError(f"{where}: {key} = {value!r} is out of range ({low:g}..{high:g})")
    return float(value) if kind is float else value


def _fields(where: str, cls: type, raw: dict, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key of ``raw`` typed by the dataclass ``cls``'s field annotations (unknown keys are refused first)."""
    _reject_unknown(where, raw, set(cls.__dataclass_fields__))
    types = {f.name: f.type for f in fields(cls)}
    return {k: v if k in skip else typed_value(where, k, v, types[k]) for k, v in raw.items()}


def _reject_unknown(where: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise EdgekitError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _threshold(where: str, value: Any, metric: str) -> Threshold:
    if not isinstance(value, dict):
        raise EdgekitError(f"{where}: gate {metric!r} must be a table like {{ warn = 1e-5, fail = 1e-4 }}")
    _reject_unknown(f"{where}.{metric}", value, {"warn", "fail"})
    try:
        warn, fail = float(value["warn"]), float(value["fail"])
    except (KeyError, TypeError, ValueError):
        raise EdgekitError(f"{where}: gate {metric!r} needs numbers for both warn and fail") from None
    if metric in LOWER_IS_BETTER and warn > fail or metric in HIGHER_IS_BETTER and warn < fail:
        raise EdgekitError(f"{where}: gate {metric!r} has warn={warn} beyond fail={fail}")
    return Threshold(warn, fail)


def _gate_table(where: str, table: Any, metrics: set[str]) -> dict[str, Threshold]:
    if not isinstance(table, dict):
        raise EdgekitError(f"{where}: must be a table of gates like {{ cosine = {{ warn = 0.999, fail = 0.99 }} }}")
    _reject_unknown(where, table, metrics)
    return {metric: _threshold(where, value, metric) for metric, value in table.items()}


def _gates(where: str, raw: dict) -> Gates:
    _reject_unknown(where, raw, {"outputs", "task", "near_tie"})
    if not isinstance(raw.get("outputs", {}), dict):
        raise EdgekitError(f"{where}.outputs: must be a table of output names")
    near_tie = raw.get("near_tie", Gates.near_tie)
    if isinstance(near_tie, bool) or not isinstance(near_tie, (int, float)) or not 0 <= near_tie < 10:
        raise EdgekitError(f"{where}.near_tie: must be a number from 0 (every flip counts) to under 10 "
                           f"(a share of the median lead), not {near_tie!r}")
    outputs = {name: _gate_table(f"{where}.outputs.{name}", table, OUTPUT_METRICS)
               for name, table in raw.get("outputs", {}).items()}
    return Gates(outputs, _gate_table(f"{where}.task", raw.get("task", {}), TASK_METRICS), float(near_tie))


# The compute precision and OpenVINO's weight storage follow `precision` now; a hint could only ask for less.
_RETIRED = {"precision_hint": "the compute precision follows `precision` (fp32, fp16, bf16, ...)",
            "compress_weights_to_fp16": "weight storage follows `precision` (fp16 weights for fp16 only)"}


def _runtime(where: str, raw: dict) -> RuntimeOptions:
    for key, why in _RETIRED.items():
        if key in raw:
            raise EdgekitError(f"{where}: {key} is no longer a profile key: {why}; remove it")
    options = RuntimeOptions(**_fields(where, RuntimeOptions, raw))
    if options.layout not in LAYOUTS:
        raise EdgekitError(f"{where}: layout {options.layout!r} is not one of {', '.join(LAYOUTS)}")
    if not options.batch_sizes:
        raise EdgekitError(f"{where}: batch_sizes must be a non-empty list of positive integers")
    return options


def _quantization(where: str, raw: dict) -> QuantRecipe:
    values = _fields(where, QuantRecipe, raw, skip=("augment",))
    aug = raw.get("augment", {})
    if not isinstance(aug, dict):
        raise EdgekitError(f"{where}: augment must be a table like {{ flip = true, crop = 2 }}")
    recipe = QuantRecipe(**{**values, "augment": Augment(**_fields(f"{where}.augment", Augment, aug))})
    if recipe.method not in CALIBRATION_METHODS:
        raise EdgekitError(f"{where}: method {recipe.method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if recipe.rank_by not in RANKINGS:
        raise EdgekitError(f"{where}: rank_by {recipe.rank_by!r} is not one of {', '.join(RANKINGS)}")
    if recipe.weight_rounding not in WEIGHT_ROUNDINGS:
        raise EdgekitError(f"{where}: weight_rounding {recipe.weight_rounding!r} is not one of "
                           f"{', '.join(WEIGHT_ROUNDINGS)}")
    for pattern in recipe.keep_float:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise EdgekitError(f"{where}: keep_float pattern {pattern!r} is not a regex ({exc})") from None
    return recipe


def _validation(where: str, raw: dict) -> int:
    _reject_unknown(where, raw, {"samples"})
    return typed_value(where, "samples", raw.get("samples", TargetProfile.validation_samples), "int")


def parse_limits(where: str, raw: dict) -> Limits:
    """``[limits]`` (or ``--limit KEY=VALUE``s): seconds are numbers, ``memory_mb`` an integer."""
    return Limits(**_fields(where, Limits, raw))


def with_limits(profile: TargetProfile, overrides: dict[str, float] | None) -> TargetProfile:
    """``profile`` with some of its limits replaced (the CLI's ``--limit``), checked as ``[limits]`` is."""
    if not overrides:
        return profile
    limits = parse_limits("--limit", {**asdict(profile.limits), **overrides})
    return replace(profile, limits=limits)


def parse_profile(text: str, path: str = "<string>") -> TargetProfile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgekitError(f"{path}: not valid TOML: {exc}") from None
    if "preprocess" in raw:  # preprocessing belongs to the model, not to a device
        raise EdgekitError(f"{path}: [preprocess] is no longer a profile section: declare it on the ModelSpec "
                           "or pass --preprocess PRESET|FILE.toml")
    _reject_unknown(path, raw, _TOP_KEYS)
    for key in ("name", "backend", "precision"):
        if not isinstance(raw.get(key), str):
            raise EdgekitError(f"{path}: missing the string key {key!r}")
    for key in ("description", "device_label"):
        if not isinstance(raw.get(key, ""), str):
            raise EdgekitError(f"{path}: {key} must be a string")
    formerly = raw.get("formerly", [])
    if not (isinstance(formerly, list) and all(isinstance(n, str) for n in formerly)):
        raise EdgekitError(f"{path}: formerly must be a list of names")
    for key in ("runtime", "gates", "quantization", "validation", "limits"):
        if not isinstance(raw.get(key, {}), dict):
            raise EdgekitError(f"{path}: [{key}] must be a table")
    if raw["precision"] not in PRECISIONS:
        raise EdgekitError(f"{path}: precision {raw['precision']!r} is not one of {', '.join(PRECISIONS)}")
    runtime = _runtime(f"{path} [runtime]", raw.get("runtime", {}))
    explicit = frozenset(f"{section}.{key}" for section in ("runtime", "quantization")
                         for key in raw.get(section, {}))
    return TargetProfile(raw["name"], raw["backend"], raw["precision"], raw.get("description", ""),
                         raw.get("device_label", ""), runtime, _gates(f"{path} [gates]", raw.get("gates", {})),
                         _quantization(f"{path} [quantization]", raw.get("quantization", {})),
                         _validation(f"{path} [validation]", raw.get("validation", {})),
                         parse_limits(f"{path} [limits]", raw.get("limits", {})), path, text, explicit,
                         tuple(formerly))


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: $EDGEKIT_TARGETS (os.pathsep-separated), ./targets, the bundled ones."""
    dirs = [Path(p) for p in os.environ.get("EDGEKIT_TARGETS", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "targets", targets_dir()]


def known_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def _renamed(old: str, known: dict[str, Path]) -> str | None:
    """The profile whose ``formerly`` lists ``old`` (profile names read BACKEND-DEVICE-PRECISION since 0.1)."""
    for name, path in known.items():
        try:
            formerly = tomllib.loads(path.read_text(encoding="utf-8")).get("formerly", [])
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # a broken profile is reported when it is asked for by its own name
        if isinstance(formerly, list) and old in formerly:
            return name
    return None


def load_profile(name_or_path: str) -> TargetProfile:
    """A profile by name (see :func:`profile_dirs`) or by the path of a TOML file."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or os.sep in name_or_path):
        known = known_profiles()
        renamed = None if name_or_path in known else _renamed(name_or_path, known)
        if renamed:
            print(f"edgekit: warning: target {name_or_path!r} is now called {renamed!r}; the old name will be "
                  "removed", file=sys.stderr)
            name_or_path = renamed
        if name_or_path not in known:
            raise EdgekitError(f"unknown target {name_or_path!r}; known: {', '.join(known) or 'none'}")
        path = known[name_or_path]
    if not path.is_file():
        raise EdgekitError(f"target profile {path} does not exist")
    return parse_profile(path.read_text(encoding="utf-8"), str(path))


def load_profiles(spec: str) -> list[TargetProfile]:
    """A comma-separated list of profile names or paths."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise EdgekitError("no target given: pass --target NAME[,NAME...] (see `edgekit profiles`)")
    profiles = [load_profile(n) for n in names]
    seen: set[str] = set()
    for p in profiles:
        if p.name in seen:
            raise EdgekitError(f"target {p.name!r} is given twice")
        seen.add(p.name)
    return profiles
