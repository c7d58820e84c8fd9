"""edgekit segmented bundle runner: the model's segments chained on the device, each on its own runtime, with
numpy and those runtimes only (no edgekit; no torch unless a runtime requires it). Each segmentN/ folder is an
ordinary edgekit bundle of one segment (its own run.py checks it alone).

    python run.py --check              golden inputs -> every segment in turn -> outputs, under the gates
    python run.py --bench [--seconds]  the chain as a pipeline (a thread per segment) and one after another

Exit codes: 0 ok, 1 a gate failed, 2 bad input or a broken bundle (one line on stderr)."""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:
    print("run.py: error: numpy is not installed here (No module named 'numpy'): pip install numpy", file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# the one artifact runner, as edgekit ran each segment: the copies beside this file (numpy only)
from edgekit_cpu import share_cores  # noqa: E402
from edgekit_execute import golden_check, inside, open_bundled, read_bundle, runner  # noqa: E402
from edgekit_pipeline import Stage, run_chain, stream, summary  # noqa: E402
from edgekit_timing import measure  # noqa: E402


def load() -> tuple[dict, list[tuple[dict, Path]]]:
    """The chain's manifest and each segment's (manifest, folder), every file checked against its hash."""
    chain = read_bundle(HERE, "the bundle")
    segments = []
    for stage in chain["stages"]:
        folder = inside(HERE, stage["folder"], "the bundle")
        segments.append((read_bundle(folder, folder.name), folder))
    return chain, segments


def stages(chain: dict, segments: list[tuple[dict, Path]], threads: int | None, batched: bool) -> list[Stage]:
    """Each segment on its runtime (through its own session module), fed as validation fed it (``batched``) or
    one sample at a time (the stream)."""
    return [Stage(stage["folder"], tuple(stage["inputs"]), tuple(stage["outputs"]),
                  runner(open_bundled(folder, manifest, threads, folder.name), manifest, batched),
                  tuple(stage["drop"]))
            for stage, (manifest, folder) in zip(chain["stages"], segments)]


def _golden(chain: dict) -> tuple[dict, dict]:
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        return ({n: z[f"input:{n}"] for n in chain["inputs"]}, {n: z[f"output:{n}"] for n in chain["outputs"]})


def check(chain: dict, segments: list[tuple[dict, Path]]) -> dict:
    inputs, golden = _golden(chain)
    actual = run_chain(stages(chain, segments, None, batched=True), inputs)
    status, rows = golden_check(golden, actual, chain["gates"], chain["higher_is_better"])
    return {"status": status, "samples": len(next(iter(inputs.values()))), "checks": rows}


def bench(chain: dict, segments: list[tuple[dict, Path]], seconds: float, runs: int) -> dict:
    """As edgekit measured the pipeline: batch-1 samples, one thread per segment, queues of 2."""
    inputs, _ = _golden(chain)
    samples = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(len(next(iter(inputs.values()))))]
    threads = share_cores(len(segments))
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
    except (OSError, ValueError, KeyError) as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 1 if result.get("status") == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
