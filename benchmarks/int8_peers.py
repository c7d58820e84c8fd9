"""Edgekit's int8 against each runtime's own quantizer, side by side: for every backend, edgekit's fp32 and default
int8 profiles (edgekit.api.export) and the backend's stock peer (``backend.stock_int8``: the runtime's quantizer run
as its documentation shows it, defaults kept, on edgekit's own fp32 artifact and the same calibration arrays),
all measured on the same validation inputs against torch: SQNR and cosine of the first output, top-1 agreement,
flips that are not near-ties, labelled accuracy where the data has labels, median and p90 ms at one thread and at
all threads in ONE interleaved timing loop (round-robin over every artifact and thread count), file size.

Writes ``OUT/peers.json`` (every number) and ``OUT/peers.md``, the body of docs/results/int8-peers.md (a Command /
Commit / CPU / Date block, then the tables). A peer that fails is a row with its one-line reason. ``--page
PATH#NAME`` also writes that body into PATH between ``<!-- peers NAME -->`` and ``<!-- /peers NAME -->``, and
``--headline PATH#NAME`` a short per-runtime table (the README's); ``make results-peers`` regenerates the page and
the README's table in one command.

    python benchmarks/int8_peers.py --source examples/efficientnet_lite0.py:build \\
        --calib examples/efficientnet_lite0.py:calibration --data examples/efficientnet_lite0.py:validation \\
        --out runs/peers-effnet [--backends onnx,openvino,tflite,executorch] [--rounds 100]
    python benchmarks/int8_peers.py --source zoo:cnn --calib task:calib --data task:val --out runs/peers-cnn

Every artifact is opened by its backend's own ``open`` (the session validation and bench use) and fed by
edgekit's one artifact runner, so every artifact runs, and is timed, the same way. Batch 1 throughout."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.api import calibration_for, export
from edgekit.artifact import Manifest, read_manifest
from edgekit.backends import get_backend
from edgekit.backends.common import STOCK_SUFFIX
from edgekit.backends.execute import run_batched, to_artifact_layout
from edgekit.config import Gates, load_profile, parse_profile
from edgekit.cpu import resolve_threads
from edgekit.errors import one_line
from edgekit.fsutil import write_text
from edgekit.reference import Reference, load_run_reference
from edgekit.runfolder import MANIFEST_FILE, RunFolder
from edgekit.source import load_source
from edgekit.validate.metrics import output_stats

BACKENDS = ("onnx", "openvino", "tflite", "executorch")
# a flip counts when torch's lead over its runner-up is above this share of its median lead: the gates' rule
NEAR_TIE = Gates.near_tie
RUN, PEERS = "run", "peers"


@dataclass
class Artifact:
    name: str  # the target name, e.g. "onnx-cpu-int8", "onnx-stock-int8"
    backend: str
    made_by: str  # "edgekit" or the peer's tool
    folder: Path
    manifest: Manifest | None = None
    error: str | None = None  # why there is no artifact (its stage and reason)
    quality: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def profile_for(backend: str, precision: str, calib_samples: int | None, val_samples: int | None):
    """The backend's standard CPU profile, batch 1 only; optionally fewer calibration / validation samples."""
    base = load_profile(f"{backend}-cpu-{precision}")
    lines = []
    for line in base.text.splitlines():
        if line.startswith("batch_sizes"):
            line = "batch_sizes = [1]"
        elif calib_samples and line.startswith("samples"):
            line = f"samples = {calib_samples}"
        lines.append(line)
    if val_samples:
        lines += ["", "[validation]", f"samples = {val_samples}"]
    return parse_profile("\n".join(lines), base.name)


def edgekit_artifacts(run: Path, names: list[str]) -> list[Artifact]:
    rows = []
    for name in names:
        folder = run / name
        if (folder / MANIFEST_FILE).is_file():
            manifest = read_manifest(folder / MANIFEST_FILE)
            rows.append(Artifact(name, manifest.backend, "edgekit", folder, manifest))
        else:
            failed = json.loads((folder / "validation.json").read_text())
            rows.append(Artifact(name, name.split("-")[0], "edgekit", folder,
                                 error=f"{failed.get('stage')}: {failed.get('reason')}"))
    return rows


def stock_peers(source: str, run: Path, out: Path, backends: list[str], calib: str | None, int8_profile
                ) -> list[Artifact]:
    """Each backend's stock peer of its fp32 artifact, on the calibration arrays edgekit's int8 profile drew."""
    spec = load_source(source)
    calibration = calibration_for(spec, [int8_profile], calib)[int8_profile.name]
    rows = []
    for name in backends:
        backend = get_backend(name)
        peer = Artifact(f"{name}-{STOCK_SUFFIX}", name, "stock", out / f"{name}-{STOCK_SUFFIX}")
        fp32 = run / f"{name}-cpu-fp32"
        if not hasattr(backend, "stock_int8"):
            continue
        peer.folder.mkdir(parents=True, exist_ok=True)
        try:
            started = time.perf_counter()
            peer.manifest = backend.stock_int8(spec, fp32, read_manifest(fp32 / MANIFEST_FILE), calibration,
                                               peer.folder)
            peer.made_by = peer.manifest.extra["quantization"]["tool"]
            print(f"  .. {peer.name}: made in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        except Exception as exc:  # a peer that fails is a row saying why, not a crash
            peer.error = f"QUANTIZE: {one_line(exc)}"
            print(f"  .. {peer.name}: {peer.error}", file=sys.stderr, flush=True)
        rows.append(peer)
    return rows


def _flips(want: np.ndarray, got: np.ndarray) -> tuple[list[dict], float]:
    """Every top-1 flip with torch's lead of its class over its runner-up, and torch's median lead."""
    top2 = np.sort(want, axis=1)[:, -2:]
    leads = top2[:, 1] - top2[:, 0]
    flipped = np.flatnonzero(want.argmax(1) != got.argmax(1))
    return [{"sample": int(i), "lead": float(leads[i])} for i in flipped], float(np.median(leads))


def measure_quality(artifact: Artifact, reference: Reference) -> None:
    """Run the validation inputs through the artifact; its first output against torch's."""
    session = get_backend(artifact.backend).open(artifact.folder, artifact.manifest)
    got = run_batched(session, artifact.manifest, reference.inputs)
    name = reference.logits
    stats = output_stats(name, reference.outputs[name], got[name])
    quality = {"output": name, "sqnr_db": stats.sqnr_db, "cosine": stats.cosine,
               "top1_agreement": stats.top1_agreement, "nonfinite": stats.nonfinite}
    if stats.top1_agreement is not None:
        flips, median = _flips(reference.outputs[name].astype(np.float64), got[name])
        quality.update(flips=flips, median_lead=median,
                       confident_flips=[f for f in flips if f["lead"] > NEAR_TIE * median])
        if reference.labels is not None:
            quality["accuracy"] = float((got[name].argmax(1) == reference.labels).mean())
    artifact.quality = quality


def time_interleaved(artifacts: list[Artifact], sample: dict[str, np.ndarray], rounds: int, per_turn: int,
                     warmup: int) -> None:
    """One loop over every (artifact, thread count): each turn one untimed call (a session whose threads another
    runtime's spinning pool just held gets them back), then ``per_turn`` timed calls; the start rotates every round.
    Median and p90 of all timed calls."""
    every = resolve_threads(0)
    slots = []
    for artifact in artifacts:
        backend = get_backend(artifact.backend)
        for threads in dict.fromkeys((1, every)):
            session = backend.open(artifact.folder, artifact.manifest, threads)
            feed = to_artifact_layout(sample, artifact.manifest)
            slots.append((artifact, threads, session, feed, []))
    for _ in range(warmup):
        for _, _, session, feed, _ in slots:
            session.run(feed)
    for r in range(rounds):
        for _, _, session, feed, times in slots[r % len(slots):] + slots[:r % len(slots)]:
            session.run(feed)
            for _ in range(per_turn):
                start = time.perf_counter()
                session.run(feed)
                times.append((time.perf_counter() - start) * 1000)
    for artifact, threads, _, _, times in slots:
        artifact.timing[str(threads)] = {"median_ms": float(np.median(times)),
                                         "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()


def provenance(argv: list[str]) -> dict:
    """Command, commit, CPU kind and date of this run."""
    flags = subprocess.run("lscpu | grep -o 'avx512[a-z_]*\\|amx[a-z_]*' | sort -u", shell=True,
                           capture_output=True, text=True).stdout.split()
    model = next((line.split(":", 1)[1].strip() for line in
                  subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), "unknown CPU")
    return {"command": "python benchmarks/int8_peers.py " + shlex.join(argv), "commit": _git("rev-parse", "--short",
            "HEAD"), "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "cpu": f"{model}, {os.cpu_count()} cores; {' '.join(flags) or 'no AVX-512, no AMX'}",
            "date": datetime.date.today().isoformat()}


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(a: Artifact, every: int) -> str:
    if a.error:
        return f"| {a.name} | {a.made_by} | {a.error} |" + " |" * 7
    q, t = a.quality, a.timing
    flips = "-" if "flips" not in q else f"{len(q['confident_flips'])} of {len(q['flips'])}"
    speed = [f"{t[k]['median_ms']:.2f} ({t[k]['p90_ms']:.2f})" if k in t else "-" for k in ("1", str(every))]
    size = sum(f.bytes for f in a.manifest.files) / 1e6
    return (f"| {a.name} | {a.made_by} | {q['sqnr_db']:.1f} | {q['cosine']:.5f} | "
            f"{_cell(q.get('top1_agreement'), '.3f')} | {flips} | {_cell(q.get('accuracy'), '.3f')} | "
            f"{speed[0]} | {speed[1]} | {size:.2f} |")


def markdown(info: dict, reference: Reference, artifacts: list[Artifact], calib_origin: str) -> str:
    every = resolve_threads(0)
    dirty = " and uncommitted changes in the working tree" if info["uncommitted_changes"] else ""
    lines = ['!!! abstract "Measured"', f"    - **Command:** `{info['command']}`",
             f"    - **Commit:** `{info['commit']}`{dirty}", f"    - **CPU:** {info['cpu']}",
             f"    - **Date:** {info['date']}", "",
             f"Calibration: {calib_origin}, the same arrays for edgekit's int8 and every stock peer. "
             f"{reference.describe()}; batch 1. Flips: top-1 changes against torch; \"not near-ties\" counts those "
             f"where torch led its runner-up by more than {NEAR_TIE} x its median lead. Speed: median (p90) ms in "
             "one interleaved loop over every artifact and thread count.", "",
             f"| artifact | made by | {reference.logits} SQNR dB | cosine | top-1 agreement | flips not near-ties "
             f"(of all) | accuracy | ms, 1 thread (p90) | ms, {every} threads (p90) | size MB |",
             "|" + "---|" * 10]
    torch_accuracy = reference.accuracy()
    lines.append(f"| torch fp32 | the model | - | 1 | 1 | - | {_cell(torch_accuracy, '.3f')} | - | - | - |")
    lines += [_row(a, every) for a in artifacts]
    flipped = [a for a in artifacts if a.quality.get("flips")]
    if flipped:
        lines += ["", "Every flip, with torch's lead of its class over its runner-up (its median lead in brackets):",
                  ""]
        lines += [f"- {a.name} ({a.quality['median_lead']:.3g}): " + ", ".join(
            f"#{f['sample']} {f['lead']:.3g}" for f in a.quality["flips"]) for a in flipped]
    return "\n".join(lines) + "\n"


def _marked(where: str) -> tuple[Path, str, str]:
    """``PATH#NAME`` -> the file and its ``<!-- peers NAME -->`` / ``<!-- /peers NAME -->`` markers, checked before
    any work: a page without them is a one-line error (exit 2), not a table written nowhere."""
    path, _, name = where.partition("#")
    begin, end = f"<!-- peers {name} -->", f"<!-- /peers {name} -->"
    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
    if not name or begin not in text or end not in text or text.index(begin) > text.index(end):
        print(f"int8_peers.py: {path} has no '{begin}' ... '{end}' section to write (--page and --headline take "
              "PATH#NAME)", file=sys.stderr)
        raise SystemExit(2)
    return Path(path), begin, end


def write_section(where: str, body: str) -> None:
    """Replace the marked section of a page with ``body``, atomically."""
    path, begin, end = _marked(where)
    text = path.read_text(encoding="utf-8")
    write_text(path, text[:text.index(begin) + len(begin)] + "\n" + body.rstrip() + "\n" + text[text.index(end):])


def headline(info: dict, reference: Reference, artifacts: list[Artifact], source: str) -> str:
    """The README's table: per runtime, edgekit's default int8 against the runtime's own quantizer."""
    by_name = {a.name: a for a in artifacts}
    lines = [f"{source}, {reference.describe()}; batch 1, one thread, timed in one interleaved loop.", "",
             "| runtime | edgekit int8: SQNR dB / top-1 agreement / ms | its own quantizer: SQNR dB / agreement / ms |",
             "|---|---|---|"]

    def cell(a: Artifact | None) -> str:
        if a is None or a.error or not a.quality:
            return "-" if a is None else (a.error or "-")
        agree = _cell(a.quality.get("top1_agreement"), ".3f")
        ms = a.timing.get("1", {}).get("median_ms")
        return f"{a.quality['sqnr_db']:.1f} / {agree} / {_cell(ms, '.2f')}"
    for backend in dict.fromkeys(a.backend for a in artifacts):
        lines.append(f"| {backend} | {cell(by_name.get(f'{backend}-cpu-int8'))} | "
                     f"{cell(by_name.get(f'{backend}-{STOCK_SUFFIX}'))} |")
    dirty = " and uncommitted changes" if info["uncommitted_changes"] else ""
    lines += ["", f"- **Command:** `{info['command']}`", f"- **Commit:** `{info['commit']}`{dirty}",
              f"- **CPU:** {info['cpu']}", f"- **Date:** {info['date']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--calib", help="calibration DATA (a zoo model has task:calib by default)")
    parser.add_argument("--data", required=True, help="validation DATA")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--calib-samples", type=int, help="calibration samples (default: the int8 profiles')")
    parser.add_argument("--val-samples", type=int, help="validation samples (default: the profiles')")
    parser.add_argument("--rounds", type=int, default=100, help="timing rounds over all artifacts")
    parser.add_argument("--per-turn", type=int, default=3, help="timed calls per artifact and round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--page", help="PATH#NAME: also write the table into PATH's <!-- peers NAME --> section")
    parser.add_argument("--headline", help="PATH#NAME: write the short per-runtime table there (the README's)")
    args = parser.parse_args(argv)
    for where in filter(None, (args.page, args.headline)):
        _marked(where)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    backends = args.backends.split(",")
    profiles = [profile_for(b, p, args.calib_samples, args.val_samples) for b in backends for p in ("fp32", "int8")]
    run = args.out / RUN
    export(args.source, profiles, run, calib=args.calib, data=args.data,
           progress=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
    reference = load_run_reference(RunFolder(run))
    ours = edgekit_artifacts(run, [p.name for p in profiles])
    with contextlib.redirect_stdout(sys.stderr):  # ai-edge-quantizer prints its report on stdout
        peers = {p.backend: p for p in stock_peers(args.source, run, args.out / PEERS, backends, args.calib,
                                                   profiles[1])}
    artifacts = [a for b in backends for a in (*[x for x in ours if x.backend == b], peers.get(b)) if a is not None]
    for a in artifacts:
        if a.error is None:
            try:
                measure_quality(a, reference)
            except Exception as exc:
                a.error = f"RUN: {one_line(exc)}"
    sample = {k: v[:1] for k, v in reference.inputs.items()}
    time_interleaved([a for a in artifacts if a.error is None], sample, args.rounds, args.per_turn, args.warmup)
    info = provenance(argv)
    record = next((a.manifest.extra["quantization"] for a in peers.values() if a.manifest), {})
    calibration = {"origin": record.get("calibration"), "samples": record.get("calibration_samples")}
    calib_text = f"{calibration['samples']} samples of {calibration['origin']}"
    page = markdown(info, reference, artifacts, calib_text)
    (args.out / "peers.md").write_text(page, encoding="utf-8")
    if args.page:
        write_section(args.page, page)
    if args.headline:
        write_section(args.headline, headline(info, reference, artifacts, args.source))
    (args.out / "peers.json").write_text(json.dumps(
        {**info, "validated_on": reference.describe(), "calibration": calibration, "near_tie": NEAR_TIE,
         "torch_accuracy": reference.accuracy(),
         "artifacts": [{"name": a.name, "backend": a.backend, "made_by": a.made_by, "error": a.error,
                        "precision": None if a.manifest is None else a.manifest.precision.compute,
                        "quantization": None if a.manifest is None else a.manifest.extra.get("quantization"),
                        "bytes": None if a.manifest is None else sum(f.bytes for f in a.manifest.files),
                        "quality": a.quality, "timing": a.timing} for a in artifacts]}, indent=2) + "\n")
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
