"""The one entry point of post-training quantization: a model and a target profile in, the target's artifact out.

Strategies run in a fixed order, each chosen by the profile's ``[quantization]`` data:
1. weight rounding (``weight_rounding``: nearest, gptq, distill) changes the torch model's weights before export;
2. the backend exports the float artifact;
3. the runtime's quantizer runs once (``backend.quantize``), or the mixed-precision search runs it round by round
   (``mixed_precision``); for ``distill`` with mixed precision, distillation comes after the search, with the
   layers it kept in float left in float.
The manifest's quantization record is the backend's (what the runtime's quantizer did) plus what the strategies
did, written here once."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.artifact import Manifest, manifest_from
from edgekit.backends import get_backend
from edgekit.config import QUANTIZED_PRECISIONS, TargetProfile
from edgekit.data.calib import CalibrationData
from edgekit.errors import one_line
from edgekit.fsutil import write_text
from edgekit.results import Stage, StageFailed
from edgekit.runfolder import PROFILE_FILE
from edgekit.spec import ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    """What one target's quantization works from: the model as the user gave it (the gates' original)."""

    spec: ModelSpec
    source: str
    profile: TargetProfile
    folder: Path  # the target folder, holding the profile file
    calib: CalibrationData | None  # what every step calibrates or trains on
    held: CalibrationData | None  # what the mixed-precision search judges on, apart from ``calib``
    progress: Progress


@dataclass(frozen=True)
class Weights:
    """The model the artifact is exported from, and the record of how its weights were rounded (None: as given)."""

    spec: ModelSpec
    record: dict[str, Any] | None = None


def quantize_target(spec: ModelSpec, source: str, profile: TargetProfile, folder: Path,
                    calib: CalibrationData | None, progress: Progress = lambda _: None, *,
                    isolated: bool = False) -> Manifest:
    """The artifact of ``spec`` for ``profile``, written into ``folder`` (which holds the profile file): exported
    and, for a quantized precision, quantized on ``calib`` by the profile's strategies. Raises
    :class:`~edgekit.results.StageFailed` naming the stage (EXPORT or QUANTIZE) that failed. ``isolated``: the
    converter and the quantizer run in a forked worker under the profile's ``[limits]``
    (:mod:`edgekit.isolation.forked`; TIMEOUT, MEMORY and CRASH rows too)."""
    held = None
    if profile.quantization.mixed_precision and calib is not None:
        from edgekit.quantize.mixed import held_apart

        calib, held = held_apart(calib, profile.quantization.search_samples)
    request = Request(spec, source, profile, folder, calib, held, progress)
    rounding = profile.quantization.weight_rounding
    # here, not in the worker: on every core, and cached for the export's other targets
    weights = _in_stage(Stage.QUANTIZE, f"{rounding} weights: ", lambda: round_weights(request))
    if not isolated:
        return _artifact(request, weights, lambda _: None)
    from dataclasses import asdict

    from edgekit.backends.base import fork_safe, preload
    from edgekit.isolation.forked import in_worker

    backend = _in_stage(Stage.EXPORT, "", lambda: get_backend(profile.backend))
    preload(backend)
    if not fork_safe(backend):
        progress(f"{profile.name}: this process has run {backend.name} itself: exporting here, without [limits]")
        return _artifact(request, weights, lambda _: None)
    raw = in_worker(lambda enter: asdict(_artifact(request, weights, enter)), profile.limits, Stage.EXPORT)
    return manifest_from(raw, f"{profile.name}: the export worker's answer")


def _artifact(request: Request, weights: Weights, enter: Callable[[Stage], None]) -> Manifest:
    """Export, then quantize: each stage announced to ``enter`` (the worker's clock) before it starts."""
    profile, progress = request.profile, request.progress
    backend = _in_stage(Stage.EXPORT, "", lambda: get_backend(profile.backend))
    progress(f"{profile.name}: exporting")
    fp32 = _in_stage(Stage.EXPORT, "", lambda: backend.export(weights.spec, profile, request.folder,
                                                               request.source))
    if profile.precision not in QUANTIZED_PRECISIONS:
        return fp32
    enter(Stage.QUANTIZE)
    progress(f"{profile.name}: quantizing ({profile.precision})")
    manifest, record = _in_stage(Stage.QUANTIZE, "", lambda: _quantized(request, backend, weights, fp32))
    quantization = {**manifest.extra.get("quantization", {}), **record}
    return replace(manifest, extra={**manifest.extra, "quantization": quantization})


def _in_stage(stage: Stage, prefix: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except StageFailed:
        raise
    except Exception as exc:  # one target's failure never stops the others: it becomes a row
        raise StageFailed(stage, prefix + one_line(exc)) from exc


def round_weights(request: Request) -> Weights:
    """The model with its weights rounded as the profile says; static int8 with calibration data only (the
    runtimes quantize other precisions' weights themselves)."""
    if request.profile.precision != "int8" or request.calib is None:
        return Weights(request.spec)
    return ROUNDING[request.profile.quantization.weight_rounding](request)


def _gptq(request: Request) -> Weights:
    """GPTQ-rounded weights; layers the profile keeps in float keep theirs."""
    from edgekit.quantize.gptq import cached_gptq

    recipe = request.profile.quantization
    request.progress(f"{request.profile.name}: rounding the weights (GPTQ on {len(request.calib)} calibration "
                     "samples)")
    rounded, record = cached_gptq(request.spec, request.calib, per_channel=recipe.per_channel,
                                  keep_float=recipe.keep_float)
    return Weights(rounded, record.record())


def _gptq_then_distill(request: Request) -> Weights:
    """GPTQ, then fine-tuned under simulated int8; with mixed precision, distillation waits for the search."""
    rounded = _gptq(request)
    if request.profile.quantization.mixed_precision:
        return rounded
    return distilled(request, rounded, request.profile.quantization.keep_float)


ROUNDING: dict[str, Callable[[Request], Weights]] = {
    "nearest": lambda request: Weights(request.spec),
    "gptq": _gptq,
    "distill": _gptq_then_distill,
}


def distilled(request: Request, start: Weights, keep_float: tuple[str, ...]) -> Weights:
    from edgekit.quantize.distill import cached_distill

    recipe = request.profile.quantization
    request.progress(f"{request.profile.name}: distilling the int8 weights ({recipe.distill_steps} steps)")
    tuned, tuning = cached_distill(start.spec, request.spec, request.calib, per_channel=recipe.per_channel,
                                   keep_float=keep_float, steps=recipe.distill_steps, lr=recipe.distill_lr)
    return Weights(tuned, {**(start.record or {}), "method": "gptq+distill", "distillation": tuning.record()})


def _quantized(request: Request, backend: Any, weights: Weights, fp32: Manifest
               ) -> tuple[Manifest, dict[str, Any]]:
    """The runtime-quantized artifact, and the strategies' part of its quantization record."""
    profile, recipe = request.profile, request.profile.quantization
    strategies: dict[str, Any] = {} if weights.record is None else {"weight_rounding": weights.record}
    if not recipe.mixed_precision:
        return backend.quantize(weights.spec, profile, request.folder, fp32, request.calib), strategies
    from edgekit.quantize.mixed import search

    # judged against the original model: the rounding is part of what the gates measure
    searched = search(backend, weights.spec, profile, request.folder, fp32, request.calib, request.source,
                      request.progress, original=request.spec, held=request.held)
    if searched.activation_ranges is not None:
        strategies["activation_ranges"] = searched.activation_ranges
    strategies["mixed_precision"] = searched.record
    if recipe.weight_rounding != "distill" or weights.record is None:
        return searched.manifest, strategies
    manifest, tuned = _distilled_after_search(request, backend, weights, searched.record)
    if manifest is None:  # not better on the held-out samples: the search's artifact stays
        return searched.manifest, {**strategies, "weight_rounding": tuned.record}
    strategies.pop("activation_ranges", None)  # the final artifact's own quantizer chose again
    return manifest, {**strategies, "weight_rounding": tuned.record}


def _distilled_after_search(request: Request, backend: Any, rounded: Weights, searched: dict[str, Any]
                            ) -> tuple[Manifest | None, Weights]:
    """Distillation with the layers the search kept in float left in float, and the artifact exported and
    quantized again with them (None when distillation was not better). In this order because distilled weights
    learn the rounding they were trained with: a layer moved to float afterwards takes away noise its neighbours
    had learned to expect (EfficientNet-Lite0: distilled, then a second layer to float lowered the search's
    cosine)."""
    from edgekit.quantize.gptq import with_weights_of
    from edgekit.quantize.mixed import keep_pattern

    profile, recipe = request.profile, request.profile.quantization
    stretch = sorted({m for k in searched["kept_float_layers"] for m in (k["module"], *k["with"])})
    keep = (*recipe.keep_float, *map(keep_pattern, stretch))
    start = Weights(with_weights_of(rounded.spec, request.spec, stretch), rounded.record) if stretch else rounded
    tuned = distilled(request, start, keep)  # from the weights the search's artifact has
    tuned = replace(tuned, record={**tuned.record, "distillation": {**tuned.record["distillation"],
                                                                    "after_search": True}})
    if tuned.spec is start.spec:
        return None, tuned
    request.progress(f"{profile.name}: exporting and quantizing the distilled weights ({len(stretch)} modules in "
                     "float)")
    shutil.rmtree(request.folder)
    request.folder.mkdir()
    write_text(request.folder / PROFILE_FILE, profile.text)
    fp32 = backend.export(tuned.spec, profile, request.folder, request.source)
    final = replace(profile, quantization=replace(recipe, keep_float=keep, mixed_precision=False))
    return backend.quantize(tuned.spec, final, request.folder, fp32, request.calib), tuned
