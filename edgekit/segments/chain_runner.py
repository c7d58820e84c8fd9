"""edgekit segmented bundle runner: the model's segments chained on the device, each on its own runtime, with
numpy and those runtimes only (no edgekit; no torch unless a runtime requires it). Each segmentN/ folder is an
ordinary edgekit bundle of one segment (its own run.py checks it alone).

    python run.py --check              golden inputs -> every segment in turn -> outputs, under the gates
    python run.py --bench [--seconds]  the chain as a pipeline (a thread per segment) and one after another

Exit codes: 0 ok, 1 a gate failed, 2 bad input or a broken bundle (one line on stderr)."""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import json
import math
import os
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:
    print("run.py: error: numpy is not installed here (No module named 'numpy'): pip install numpy", file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edgekit_execute import run_batched, to_artifact_layout  # noqa: E402 (the copies beside this file, above)
from edgekit_metrics import gate_status, output_stats  # noqa: E402
from edgekit_pipeline import Stage, run_chain, stream, summary  # noqa: E402
from edgekit_timing import measure  # noqa: E402


class BundleError(Exception):
    pass


def _checked(folder: Path, manifest: dict) -> None:
    for entry in manifest["files"]:
        path = (folder / entry["path"]).resolve()
        if os.path.isabs(entry["path"]) or folder.resolve() not in path.parents:
            raise BundleError(f"{folder.name}/manifest.json names {entry['path']!r}, outside its folder")
        if not path.is_file():
            raise BundleError(f"{folder.name}/{entry['path']} is missing from the bundle")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise BundleError(f"{folder.name}/{entry['path']} does not match its sha256 (modified or corrupt)")


def load() -> tuple[dict, list[tuple[dict, Path]]]:
    """The chain's manifest and each segment's (manifest, folder), every file checked against its hash."""
    chain = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    _checked(HERE, chain)
    segments = []
    for stage in chain["stages"]:
        folder = HERE / stage["folder"]
        if folder.resolve().parent != HERE:
            raise BundleError(f"manifest.json names the segment folder {stage['folder']!r}, outside the bundle")
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        _checked(folder, manifest)
        segments.append((manifest, folder))
    return chain, segments


def open_session(manifest: dict, folder: Path, threads: int | None):
    """A segment on its runtime through its own session module (segments may use different runtimes, so each
    is imported from its folder under a name of its own)."""
    spec = importlib.util.spec_from_file_location(f"edgekit_session_{folder.name}", folder / "edgekit_session.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise BundleError(f"{folder.name}: the {manifest['backend']} runtime is not installed here "
                          f"({exc.name or exc}); pip install {manifest['runtime']['package']}") from None
    return module.open_session(folder / manifest["model_file"], manifest["runtime"], threads)


def stages(chain: dict, segments: list[tuple[dict, Path]], threads: int | None, batched: bool) -> list[Stage]:
    found = []
    for stage, (manifest, folder) in zip(chain["stages"], segments):
        session = open_session(manifest, folder, threads)

        def run(feed, session=session, manifest=manifest):
            return run_batched(session, manifest, feed) if batched else session.run(to_artifact_layout(feed, manifest))

        found.append(Stage(stage["folder"], tuple(stage["inputs"]), tuple(stage["outputs"]), run,
                           tuple(stage["drop"])))
    return found


def _golden(chain: dict) -> tuple[dict, dict]:
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        return ({n: z[f"input:{n}"] for n in chain["inputs"]}, {n: z[f"output:{n}"] for n in chain["outputs"]})


def check(chain: dict, segments: list[tuple[dict, Path]]) -> dict:
    inputs, golden = _golden(chain)
    actual = run_chain(stages(chain, segments, None, batched=True), inputs)
    rows, status = [], "PASS"
    for name, expected in golden.items():
        stats = output_stats(name, expected, actual[name])
        for metric, threshold in chain["gates"].get(name, {}).items():
            value = getattr(stats, metric, None)
            if value is None:
                continue
            result = gate_status(value, threshold["warn"], threshold["fail"], metric in chain["higher_is_better"])
            status = max(status, result, key=["PASS", "WARN", "FAIL"].index)
            rows.append({"output": name, "metric": metric, "value": value, **threshold, "status": result})
    return {"status": status, "samples": len(next(iter(inputs.values()))), "checks": rows}


def bench(chain: dict, segments: list[tuple[dict, Path]], seconds: float, runs: int) -> dict:
    """As edgekit measured the pipeline: batch-1 samples, one thread per segment, queues of 2."""
    inputs, _ = _golden(chain)
    samples = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(len(next(iter(inputs.values()))))]
    threads = max(1, (os.cpu_count() or 1) // len(segments))
    found = stages(chain, segments, threads, batched=False)
    for sample in samples:
        run_chain(found, sample)
    probe = stream(found, samples, count=20, warmup=5)
    timed = max(runs, math.ceil(probe.per_second * seconds))
    pipelined = summary([stream(found, samples, timed, 10) for _ in range(3)])
    cycle = itertools.cycle(samples)
    sequential = measure(lambda: run_chain(found, next(cycle)), min_runs=runs, min_seconds=seconds)
    return {"stage_threads": threads, "pipeline": pipelined,
            "sequential": {"per_second": 1000.0 / sequential.mean_ms, "latency_median_ms": sequential.median_ms,
                           "latency_p90_ms": sequential.p90_ms}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--bench", action="store_true")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per stream (--bench)")
    parser.add_argument("--runs", type=int, default=200, help="minimum timed samples per stream (--bench)")
    args = parser.parse_args(argv)
    try:
        chain, segments = load()
        result = check(chain, segments) if args.check else bench(chain, segments, args.seconds, args.runs)
    except (BundleError, OSError, ValueError, KeyError) as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 1 if result.get("status") == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
