"""Accuracy-aware mixed precision: int8 everywhere except the fewest, most sensitive layers, kept in float until
every gate of the profile is within its warn threshold.

The search is the same for every backend. Each backend keeps layers in float through its own quantizer's
mechanism (excluded nodes, an ignored scope, per-op recipes, a filter), reached by the recipe's ``keep_float``
patterns of torch module paths, which every backend matches against the module each of its ops came from.

A round quantizes and runs the artifact on calibration samples in a worker; the validation data stays unseen, so
the final validation is not what the search tuned on. When a gate is short, the round's per-layer ledger (each
module's output on the runtime against torch) charges every module's growth of the noise-to-signal power to the
weight layer that ran last before it, and the layers that add the most noise go to float with the leaf modules of
their stretch (``rank_by``: "sqnr_drop", the largest dB drops instead; "auto", whichever of the two helped more when
tried; "noise_per_ms", the most noise per ms a layer costs in float). A backend without per-layer tensors ranks the
weight layers once, by quantizing with each alone in float. Layers go one at a time at first, then in growing
steps, up to ``max_float_layers``."""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import Manifest
from edgekit.config import TargetProfile
from edgekit.data.calib import CalibrationData
from edgekit.errors import EdgekitError
from edgekit.fsutil import write_text
from edgekit.results import Stage, Status, Validation
from edgekit.runfolder import MANIFEST_FILE, PROFILE_FILE
from edgekit.spec import ModelSpec

LEDGER_SAMPLES = 16  # of the search samples, how many the per-layer ledger runs (it keeps every tensor)
# the speed check: a layer goes to float when its ops take SLOWER times as long in int8 as in fp32 (one thread,
# the runtime's profiler, mean of the profiled runs) and the difference is at least MIN_SHARE of the fp32
# artifact's profiled time, which keeps it above the profiler's noise
SLOWER = 1.10
MIN_SHARE = 0.01
SPEED_RUNS = 100


def keep_pattern(module: str) -> str:
    """The keep_float regex of one torch module and everything inside it."""
    return f"^{re.escape(module)}(\\.|$)"


@dataclass(frozen=True)
class Trial:
    kept: tuple[str, ...]  # module paths kept in float in this round (the search's, not the profile's own)
    status: str
    reason: str
    metrics: dict[str, float]  # the gated values on the search samples, e.g. {"logits cosine": 0.9987}

    def added(self, now: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(k for k in now if k not in self.kept)

    def record(self) -> dict[str, Any]:
        return {"kept_float": list(self.kept), "status": self.status, "reason": self.reason, "metrics": self.metrics}


def _metrics(validation: Validation) -> dict[str, float]:
    return {f"{c.subject} {c.metric}": round(float(c.value), 6) for c in validation.checks}


def passes(validation: Validation) -> bool:
    """Every gate within its warn threshold: the search's goal (a WARN is not yet a pass)."""
    return validation.stage is None and all(c.status is Status.PASS for c in validation.checks)


def shortfall(validation: Validation) -> float:
    """How far the checks that do not pass are beyond their warn thresholds, each relative to its threshold."""
    from edgekit.config import HIGHER_IS_BETTER

    if validation.stage is not None and not validation.checks:  # it did not run
        return float("inf")
    total = 0.0
    for c in validation.checks:
        if c.status is not Status.PASS:
            gap = c.warn - c.value if c.metric in HIGHER_IS_BETTER else c.value - c.warn
            total += gap / max(abs(c.warn), 1e-6) if np.isfinite(gap) else float("inf")
    return total


def _short(validation: Validation) -> str:
    """The checks short of passing, for progress lines and the record."""
    if validation.stage is not None and not validation.checks:
        return f"{validation.stage.value}: {validation.reason}"
    return "; ".join(f"{c.subject} {c.metric} {c.value:.4g} (warn {c.warn:g}, fail {c.fail:g})"
                     for c in validation.checks if c.status is not Status.PASS) or validation.status.value


def _step(kept: int) -> int:
    """How many layers the next round adds: one at a time while few are kept, then half as many as are."""
    return 1 if kept < 4 else (kept + 1) // 2


def _one_at_a_time(attempt, candidates: list[str], baseline: float, target: str, progress
                   ) -> list[tuple[str, float]]:
    """Each candidate's sensitivity, where no per-layer tensors can be read: quantize with it alone in float and
    see how much of the gates' shortfall goes (largest first)."""
    gains = []
    for i, path in enumerate(candidates, 1):
        progress(f"{target}: mixed precision, sensitivity of {path} ({i}/{len(candidates)})")
        gains.append((path, round(baseline - shortfall(attempt((path,))[1]), 6)))
    return sorted((g for g in gains if g[1] > 0), key=lambda g: -g[1])


def held_apart(calib: CalibrationData, search_samples: int) -> tuple[CalibrationData, CalibrationData | None]:
    """The samples the quantizers calibrate on, and the ones the search judges on, held apart from them: up to
    ``search_samples``, at most a third (the last of the seeded draw). Judged on samples the quantizer calibrated
    on, a search could pass where validation then fails. None: too few to hold apart (under 6), and the search
    judges on calibration samples, as its record says."""
    held = min(search_samples, len(calib) // 3)
    if held < 2:
        return calib, None
    return calib.split(len(calib) - held)


class _Judge:
    """Runs a quantized artifact on the search samples in a worker, against torch's outputs on them."""

    def __init__(self, spec: ModelSpec, source: str, profile: TargetProfile, calib: CalibrationData,
                 held: CalibrationData | None, scratch: Path) -> None:
        from edgekit.reference import Reference, run_torch, save_reference

        if held is not None:
            inputs, origin = held.inputs, f"{len(held)} calibration samples held apart (not calibrated on)"
        else:
            n = min(profile.quantization.search_samples, len(calib))
            inputs, origin = {k: v[:n] for k, v in calib.inputs.items()}, f"{n} calibration samples"
        outputs = run_torch(spec.module, inputs, spec.input_names, spec.output_names)
        self.reference = Reference(source, spec, tuple(spec.input_names), tuple(spec.output_names), inputs,
                                   outputs, None, spec.task, origin, real=True)
        self.run_dir = scratch / "search"
        self.run_dir.mkdir()
        save_reference(self.reference, self.run_dir / "reference.npz")
        self.profile = profile
        self._layers = None
        self.stretches: dict[str, set[str]] = {}  # weight layer -> the leaf modules its stretch holds
        self.weighted = set(_parametrized(spec))
        self._fp32_timed = None
        self.leaves = {p for p, m in spec.module.named_modules() if not any(True for _ in m.children())}

    def layers(self):
        from edgekit.ledger import torch_layers

        if self._layers is None:
            head = {k: v[:LEDGER_SAMPLES] for k, v in self.reference.inputs.items()}
            self._layers = head, torch_layers(self.reference.spec.module.eval(), head,
                                              self.reference.input_names)
        return self._layers

    def _linked(self, folder: Path) -> str:
        link = self.run_dir / folder.name
        if not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
        return folder.name

    def validate(self, folder: Path, manifest: Manifest) -> Validation:
        from edgekit.isolation.validate import validate_in_worker

        return validate_in_worker(self.reference, self.run_dir, self._linked(folder), manifest.precision,
                                  self.profile)

    def owners(self) -> dict[str, str]:
        """Each module that runs, in execution order, to the weight layer that ran last before it (or is it)."""
        owner, owners = None, {}
        for path, _, _ in self.layers()[1]:
            owner = path if path in self.weighted else owner
            owners[path] = owner or path
        return owners

    def timed(self, folder: Path, scratch: Path):
        """(measurement, "") of the artifact benched in a worker on one-sample inputs (one-thread median,
        per-op profile), or (None, why) when it did not run there."""
        from edgekit.isolation.process import run_worker
        from edgekit.isolation.worker import Job

        name = self._linked(folder)
        outcome = run_worker(Job("artifact", str(self.run_dir.resolve()), name, str(scratch / f"bench-{name}"),
                                 SPEED_RUNS, 0.5, 0.05, memory_mb=self.profile.limits.memory_mb),
                             self.profile.limits.bench)
        if outcome.stage is not None:
            return None, f"{name}: {outcome.stage.value}: {outcome.reason}"
        return outcome.measurement, ""

    def timed_fp32(self, pristine: Path, scratch: Path):
        """``timed`` of the float artifact, which never changes during a search: measured once, whoever asks."""
        if self._fp32_timed is None:
            self._fp32_timed = self.timed(pristine, scratch)
        return self._fp32_timed

    def rankings(self, folder: Path, manifest: Manifest, kept: tuple[str, ...]) -> dict[str, list[tuple[str, float]]]:
        """Layers not yet kept in float, largest first, by two readings of one per-layer ledger of the artifact on
        its runtime: "noise", the growth of the noise-to-signal power, and "sqnr_drop", the dB the SQNR drops,
        each over the matched module before. A module's share is charged to the weight layer (conv, linear) that
        ran last before it or is it: the norms, activations and pooling after a convolution are its stretch of the
        network, and keeping that convolution in float is what lets the quantizers leave the stretch alone."""
        from edgekit.backends.execute import to_artifact_layout
        from edgekit.ledger import compare_layers, noise_growth, run_intermediates, sqnr_drops

        head, layers = self.layers()
        tensors = run_intermediates(self.run_dir / self._linked(folder), to_artifact_layout(head, manifest),
                                    self.profile.limits.ledger, self.profile.limits.memory_mb)
        compared, _ = compare_layers(layers, tensors)
        owners = self.owners()
        order = [p for p, _, _ in layers]
        for path in order:
            if owners[path] and path in self.leaves:
                # a converter may name a fused op after any module of the stretch (the dynamo exporter names a
                # convolution with its batch norm folded in after the norm): all of them are kept with it
                self.stretches.setdefault(owners[path], set()).add(path)
        found = {}
        for name, metric in (("noise", noise_growth), ("sqnr_drop", sqnr_drops)):
            charged: dict[str, float] = {}
            for path, share in metric(order, compared):
                if share > 0 and owners[path]:
                    charged[owners[path]] = charged.get(owners[path], 0.0) + share
            fresh = [(p, float(f"{g:.4g}")) for p, g in charged.items()
                     if not any(p == k or p.startswith(k + ".") for k in kept)]
            found[name] = sorted(fresh, key=lambda x: -x[1])
        return found


def _parents(kept: tuple[str, ...]) -> list[str]:
    """The modules directly holding the kept ones (the root excluded), innermost first."""
    parents = {k.rpartition(".")[0] for k in kept} - {""}
    return sorted(parents, key=lambda p: -p.count("."))


def _parametrized(spec: ModelSpec) -> list[str]:
    """Modules holding a weight matrix or kernel of their own (conv, linear, embedding, attention projections; not
    the 1-D scales of norms), in definition order: the layers a quantizer puts in int8."""
    return [path for path, m in spec.module.named_modules()
            if path and any(p.ndim >= 2 for p in m.parameters(recurse=False))]


def by_layer(ops, owners: dict[str, str], weighted: set[str]) -> dict[str, float]:
    """Profiled ms per weight layer: each op charged to the layer whose stretch its torch module is in; ops the
    runtime added itself (reorders, no module) are nobody's."""
    times: dict[str, float] = {}
    for op in ops:
        module = op.module
        while module and module not in owners and module not in weighted:
            module = module.rpartition(".")[0]
        layer = owners.get(module, module if module in weighted else None) if module else None
        if layer:
            times[layer] = times.get(layer, 0.0) + op.ms
    return times


def slower_layers(int8_ops, fp32_ops, owners: dict[str, str], weighted: set[str], kept: tuple[str, ...]
                  ) -> list[tuple[str, float, float]]:
    """(layer, int8 ms, fp32 ms) of the layers not yet in float whose ops run slower in int8 than in fp32 by
    SLOWER and by MIN_SHARE of the fp32 total, the largest loss first."""
    mine, theirs = by_layer(int8_ops, owners, weighted), by_layer(fp32_ops, owners, weighted)
    floor = MIN_SHARE * sum(op.ms for op in fp32_ops)
    slow = [(layer, round(ms, 5), round(theirs[layer], 5)) for layer, ms in mine.items()
            if layer in theirs and layer not in kept and ms > SLOWER * theirs[layer] and ms - theirs[layer] > floor]
    return sorted(slow, key=lambda s: s[2] - s[1])


def float_costs(int8_ops, fp32_ops, owners: dict[str, str], weighted: set[str]) -> dict[str, float]:
    """The ms each weight layer costs when it runs in float instead of int8: its ops' fp32 time minus their int8
    time, one thread, the runtime's profiler (negative where the runtime's int8 ops are the slower)."""
    mine, theirs = by_layer(int8_ops, owners, weighted), by_layer(fp32_ops, owners, weighted)
    return {layer: round(theirs[layer] - ms, 5) for layer, ms in mine.items() if layer in theirs}


def per_ms(ranked: list[tuple[str, float]], costs: dict[str, float], floor: float) -> list[tuple[str, float]]:
    """``ranked`` (layer, noise it adds) ordered by that noise per ms the layer costs in float. A layer that is free or
    faster in float costs ``floor`` (the profiler's noise), added to every cost so that none divides by zero; a
    layer the profile did not time costs the median of the others."""
    known = sorted(costs.values())
    unknown = known[len(known) // 2] if known else 0.0
    return sorted(ranked, key=lambda r: -r[1] / (max(costs.get(r[0], unknown), 0.0) + floor))


def _profiled_costs(judge: _Judge, backend, pristine: Path, folder: Path, scratch: Path
                    ) -> tuple[dict[str, float], float, dict[str, Any]]:
    """(cost in ms of each weight layer in float, the floor, the record) from the fp32 artifact and the plain
    int8 one in ``folder``, each profiled in a worker; no costs (rank by accuracy) where that is not possible."""
    if not hasattr(backend, "profile_ops"):
        return {}, 0.0, {"by": "noise", "why": "the runtime has no per-op profiler"}
    (fp32_m, fp32_why), (int8_m, int8_why) = judge.timed_fp32(pristine, scratch), judge.timed(folder, scratch)
    profiles = [m.profile if m is not None else None for m in (fp32_m, int8_m)]
    if any(p is None or not p.ops for p in profiles):
        why = fp32_why or int8_why or next((p.error for p in profiles if p is not None and p.error), "no profile")
        return {}, 0.0, {"by": "noise", "why": f"not profiled: {why}"}
    costs = float_costs(profiles[1].ops, profiles[0].ops, judge.owners(), judge.weighted)
    floor = MIN_SHARE * profiles[0].total_ms
    return costs, floor, {"by": "noise_per_ms", "fp32_profile_ms": round(profiles[0].total_ms, 5),
                          "int8_profile_ms": round(profiles[1].total_ms, 5), "floor_ms": round(floor, 5),
                          "float_cost_ms": costs}


def _median(measurement) -> float | None:
    return None if measurement is None else round(measurement.latency_1t.median_ms, 5)


def _speed_check(judge: _Judge, attempt, backend, pristine: Path, folder: Path, scratch: Path,
                 state: tuple[Manifest, Validation, tuple[str, ...]], progress, name: str
                 ) -> tuple[Manifest, tuple[str, ...], dict[str, Any], list[tuple[str, float, float]]]:
    """Whether the int8 artifact is slower than the fp32 one on this runtime, and where the runtime has a
    per-op profiler, the layers whose int8 ops are slower than their fp32 ops moved to float when that makes the
    artifact faster without a gate getting worse. Returns (manifest, kept, record, layers moved)."""
    manifest, validation, kept = state
    progress(f"{name}: mixed precision, timing int8 against fp32 on the runtime")
    (fp32_m, fp32_why), (int8_m, int8_why) = judge.timed_fp32(pristine, scratch), judge.timed(folder, scratch)
    record: dict[str, Any] = {"fp32_ms": _median(fp32_m), "int8_ms": _median(int8_m), "threads": 1}
    if fp32_m is None or int8_m is None:
        return manifest, kept, {**record, "outcome": f"not timed: {fp32_why or int8_why}"}, []
    # from the figures the record shows, so that it never says "slower" beside two equal numbers
    record["slower_than_fp32"] = record["int8_ms"] > record["fp32_ms"]
    if not hasattr(backend, "profile_ops") or not int8_m.profile or not int8_m.profile.ops or \
            not fp32_m.profile or not fp32_m.profile.ops:
        why = (int8_m.profile.error if int8_m.profile and int8_m.profile.error else "no per-op profile")
        return manifest, kept, {**record, "outcome": f"per-layer speed not checked: {why}"}, []
    slow = slower_layers(int8_m.profile.ops, fp32_m.profile.ops, judge.owners(), judge.weighted, kept)
    record["slower_layers"] = [{"module": m, "int8_ms": i, "fp32_ms": f} for m, i, f in slow]
    if not slow:
        return manifest, kept, {**record, "outcome": "no layer is slower in int8 than in fp32"}, []
    trial = (*kept, *(m for m, _, _ in slow))
    progress(f"{name}: mixed precision, {len(slow)} layer(s) slower in int8 than in fp32: trying them in float")
    manifest2, validation2 = attempt(trial)
    timed2, _ = judge.timed(folder, scratch)
    gates_hold = passes(validation2) if passes(validation) else shortfall(validation2) <= shortfall(validation)
    faster = timed2 is not None and timed2.latency_1t.median_ms < int8_m.latency_1t.median_ms
    record["int8_ms_with_them_in_float"] = _median(timed2)
    if gates_hold and faster:
        return manifest2, trial, {**record, "outcome": f"{len(slow)} layer(s) moved to float for speed",
                                  "int8_ms": _median(timed2), "int8_ms_before": _median(int8_m),
                                  "slower_than_fp32": _median(timed2) > record["fp32_ms"]}, slow
    manifest, _ = attempt(kept)  # back to the searched artifact
    because = "a gate got worse" if not gates_hold else "the artifact was not faster"
    return manifest, kept, {**record, "outcome": f"left in int8: with them in float {because}"}, []


def _duel(attempt, rankings: dict[str, list[tuple[str, float]]], kept: tuple[str, ...], validation: Validation,
          round_: int, duels: list[dict[str, Any]], leader: str) -> str:
    """Which reading of the ledger to follow: where their first layers differ, each is tried alone in float and
    the one that leaves the smaller shortfall of the gates wins (the folder is left holding it); where they agree,
    the reading followed so far (``leader``) goes on.
    Neither reading is right everywhere: the noise growth found the six layers MiniLM's per-row int8 needed, the
    dB drop the front of EfficientNet-Lite0 that OpenVINO needs; the search measures which fits this model."""
    tops = {name: ranked[0][0] for name, ranked in rankings.items() if ranked}
    if len(set(tops.values())) < 2:
        return leader
    results = {name: shortfall(attempt((*kept, layer))[1]) for name, layer in tops.items()}
    winner = min(results, key=lambda name: results[name])
    duels.append({"round": round_, "candidates": {n: {"layer": tops[n], "shortfall": round(results[n], 6)}
                                                  for n in tops},
                  "shortfall_before": round(shortfall(validation), 6), "chosen": winner})
    if winner != list(tops)[-1]:  # the folder holds the loser: put the winner back, as the next round expects
        attempt((*kept, tops[winner]))
    return winner


@dataclass(frozen=True)
class SearchOutcome:
    """The searched artifact's manifest (as the backend wrote it), the search's record, and the activation ranges
    the backend measured and chose in the first round (``activation_ranges = "auto"``), which later rounds reuse."""

    manifest: Manifest
    record: dict[str, Any]
    activation_ranges: dict[str, Any] | None


def search(backend, spec: ModelSpec, profile: TargetProfile, folder: Path, fp32: Manifest,
           calib: CalibrationData | None, source: str, progress=lambda _: None,
           original: ModelSpec | None = None, held: CalibrationData | None = None) -> SearchOutcome:
    """Quantize ``folder`` (holding the float artifact ``fp32``, exported from ``spec``) with the fewest layers in
    float that let the gates pass on the search samples (``held``, apart from ``calib``; see :func:`held_apart`);
    the record says which and why. The gates and the ledger compare with ``original`` (default ``spec``): the
    model before its weights were rounded."""
    if calib is None:
        raise EdgekitError(f"{profile.name}: mixed precision judges on calibration samples: pass --calib")
    with tempfile.TemporaryDirectory(prefix="edgekit-mixed-") as tmp:
        run = _Search(backend, spec, original or spec, profile, folder, fp32, calib, source, progress, Path(tmp),
                      held)
        manifest, validation, outcome = run.rounds()
        speed: dict[str, Any] = {"outcome": "not checked (speed_check = false)"}
        if run.recipe.speed_check and validation.stage in (None, Stage.MISMATCH):
            manifest, speed = run.speed(manifest, validation)
    return SearchOutcome(manifest, run.record(outcome, speed), run.ranges)


class _Search:
    """One search's state: the layers kept so far and why, the rounds, and how the layers are ranked."""

    def __init__(self, backend, spec: ModelSpec, original: ModelSpec, profile: TargetProfile, folder: Path,
                 fp32: Manifest, calib: CalibrationData, source: str, progress, scratch: Path,
                 held: CalibrationData | None = None) -> None:
        self.backend, self.spec, self.original, self.profile = backend, spec, original, profile
        self.folder, self.fp32, self.calib, self.source, self.progress = folder, fp32, calib, source, progress
        self.recipe, self.scratch = profile.quantization, scratch
        self.pristine = scratch / "fp32"
        shutil.copytree(folder, self.pristine)
        write_text(self.pristine / MANIFEST_FILE, fp32.to_json())  # export writes the folder's own only at the end
        self.judge = _Judge(original, source, profile, calib, held, scratch)
        self.rounded = original is not spec  # the export's weights are not the model's
        self.kept: tuple[str, ...] = ()
        self.why: dict[str, str] = {}
        self.trials: list[Trial] = []
        self.by_trial: list[tuple[str, float]] | None = None  # a backend without per-layer tensors: ranked once
        self.costs: dict[str, float] | None = None  # rank_by = "noise_per_ms": each layer's ms in float
        self.floor = 0.0
        self.ranking: dict[str, Any] = {"by": self.recipe.rank_by} if self.recipe.rank_by != "noise_per_ms" else \
            {"by": "noise", "why": "no layer was ranked per ms (no per-layer tensors, or no layer needed)"}
        self.duels: list[dict[str, Any]] = []  # rank_by = "auto": the measured choice between the two readings
        self.leader = "noise"
        self.last: tuple[tuple[str, ...], tuple[Manifest, Validation]] | None = None
        self.ranges: dict[str, Any] | None = None  # a backend's first measured choice of activation ranges

    def attempt(self, keep: tuple[str, ...]) -> tuple[Manifest, Validation]:
        """Quantize the folder again with ``keep`` (and their stretches) in float, and judge it."""
        shutil.rmtree(self.folder)
        stretch = sorted({m for k in keep for m in (k, *self.judge.stretches.get(k, ()))})
        trial_profile = replace(self.profile, quantization=replace(
            self.recipe, keep_float=(*self.recipe.keep_float, *map(keep_pattern, stretch))))
        trial, trial_fp32 = self.spec, self.fp32
        if not self.rounded or not stretch:
            shutil.copytree(self.pristine, self.folder)
        else:  # a layer kept in float keeps its own weights, not their int8 rounding: exported again
            from edgekit.quantize.gptq import with_weights_of

            trial = with_weights_of(self.spec, self.original, stretch)
            self.folder.mkdir()
            shutil.copy2(self.pristine / PROFILE_FILE, self.folder / PROFILE_FILE)
            trial_fp32 = self.backend.export(trial, self.profile, self.folder, self.source)
        manifest = self.backend.quantize(trial, trial_profile, self.folder, trial_fp32, self.calib)
        chosen = manifest.extra.get("quantization", {}).get("activation_ranges", {})
        if self.recipe.activation_ranges == "auto" and "held_out_sqnr_db" in chosen:
            # measured once on the whole model; later rounds differ by a few float layers only
            self.ranges = chosen
            self.recipe = replace(self.recipe, activation_ranges="per_tensor" if chosen["chosen"] == "per_tensor"
                                  else "per_channel")
        write_text(self.folder / MANIFEST_FILE, manifest.to_json())  # the worker reads it; rewritten at the end
        validation = self.judge.validate(self.folder, manifest)
        self.last = keep, (manifest, validation)
        return manifest, validation

    def rounds(self) -> tuple[Manifest, Validation, str]:
        """Add layers to float, round by round, until the gates pass or the search has to stop."""
        while True:
            # the folder already holds this set when a duel tried it last
            last = self.last
            manifest, validation = last[1] if last is not None and last[0] == self.kept else self.attempt(self.kept)
            passed = passes(validation)
            short = "" if passed else _short(validation)
            self.trials.append(Trial(self.kept, "PASS" if passed else validation.status.value, short,
                                     _metrics(validation)))
            added = f" (last added: {', '.join(self.trials[-2].added(self.kept))})" if len(self.trials) > 1 else ""
            self.progress(f"{self.profile.name}: mixed precision, {len(self.kept)} layer(s) in float{added}: "
                          + (short or "PASS"))
            if passed:
                return manifest, validation, "the gates pass on the search samples"
            if validation.stage not in (None, Stage.MISMATCH):
                return manifest, validation, f"stopped: the artifact did not run ({validation.reason})"
            room = self.recipe.max_float_layers - len(self.kept)
            if room <= 0:
                return manifest, validation, (f"stopped at max_float_layers = {self.recipe.max_float_layers}: "
                                              "the gates still fail")
            ranked, because = self._ranked(manifest, validation)
            if not ranked:
                return manifest, validation, "stopped: no layer left that loses accuracy on the runtime"
            for path, drop in ranked[:min(_step(len(self.kept)), room)]:
                cost = f", {self.costs[path]:.4g} ms more in float" if self.costs and path in self.costs else ""
                self.why[path] = f"round {len(self.trials)}: {because(drop)}{cost} ({short})"
                self.kept = (*self.kept, path)

    def _ranked(self, manifest: Manifest, validation: Validation):
        """The layers not yet in float, most to blame first, and how to say why one was chosen."""
        if hasattr(self.backend, "intermediates"):
            ranked, because = self._by_ledger(manifest, validation)
        else:
            if self.by_trial is None:
                self.by_trial = _one_at_a_time(self.attempt, _parametrized(self.spec), shortfall(validation),
                                               self.profile.name, self.progress)
                self.ranking = {"by": "trial", "why": "no per-layer tensors on this runtime: each weight layer "
                                                      "was tried alone in float"}
            ranked = [(p, g) for p, g in self.by_trial if p not in self.kept]
            because = "removes {:.3g} of the gates' shortfall when kept in float alone".format
        if not ranked:  # the error comes from between the layers: keep the block that holds them
            ranked = [(parent, 0.0) for parent in _parents(self.kept) if parent not in self.kept]
            because = lambda _: "the block holding the layers kept so far"  # noqa: E731
        return ranked, because

    def _by_ledger(self, manifest: Manifest, validation: Validation):
        rankings = self.judge.rankings(self.folder, manifest, self.kept)
        reading = self.recipe.rank_by if self.recipe.rank_by in rankings else self.leader
        if self.recipe.rank_by == "auto" and _step(len(self.kept)) == 1:
            self.leader = reading = _duel(self.attempt, rankings, self.kept, validation, len(self.trials),
                                          self.duels, self.leader)
        ranked = rankings[reading]
        because = ("loses {:.3g} dB SQNR on the runtime" if reading == "sqnr_drop" else
                   "adds {:.3g} to the noise-to-signal power on the runtime").format
        if self.recipe.rank_by == "noise_per_ms":
            if self.costs is None:  # the first round's artifact: every layer in int8
                self.progress(f"{self.profile.name}: mixed precision, profiling int8 against fp32 per layer")
                self.costs, self.floor, self.ranking = _profiled_costs(self.judge, self.backend, self.pristine,
                                                                       self.folder, self.scratch)
            ranked = per_ms(ranked, self.costs, self.floor) if self.costs else ranked
        return ranked, because

    def speed(self, manifest: Manifest, validation: Validation) -> tuple[Manifest, dict[str, Any]]:
        manifest, self.kept, speed, moved = _speed_check(
            self.judge, self.attempt, self.backend, self.pristine, self.folder, self.scratch,
            (manifest, validation, self.kept), self.progress, self.profile.name)
        for path, int8_ms, fp32_ms in moved:
            self.why[path] = (f"speed: its ops took {int8_ms:.4g} ms in int8 against {fp32_ms:.4g} ms in fp32 "
                              "(one thread, the runtime's profiler)")
        return manifest, speed

    def record(self, outcome: str, speed: dict[str, Any]) -> dict[str, Any]:
        ranking = self.ranking
        if ranking["by"] == "auto":
            ranking = {**ranking, "followed": self.leader, "duels": self.duels}
        return {"samples": self.judge.reference.samples, "judged_on": self.judge.reference.origin,
                "outcome": outcome,
                "kept_float_layers": [{"module": p, "with": sorted(self.judge.stretches.get(p, set()) - {p}),
                                       "why": self.why[p]} for p in self.kept],
                "rounds": [t.record() for t in self.trials], "ranking": ranking, "speed": speed}
