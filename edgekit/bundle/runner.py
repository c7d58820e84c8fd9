"""edgekit bundle runner: runs this folder's model on the device with numpy and its one runtime (no edgekit; no
torch unless the runtime itself requires it: manifest.json's runtime.package lists what to install).

    python run.py --check              golden inputs -> outputs, compared with the original's under the gates
    python run.py --bench [--seconds]  latency percentiles (1 thread, all threads), throughput, peak RSS, as JSON
    python run.py --input img.png      one prediction, preprocessed as the manifest says (PNG/JPEG needs pillow,
                                       or a .npy array already preprocessed)

Exit codes: 0 ok, 1 a gate failed, 2 bad input or a broken bundle (one line on stderr)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:
    print("run.py: error: numpy is not installed here (No module named 'numpy'): pip install numpy", file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# the one artifact runner, as validation ran this model: its copy beside this file (numpy only)
from edgekit_execute import golden_check, open_bundled, read_bundle, run_batched, to_artifact_layout  # noqa: E402
from edgekit_timing import measure, peak_rss_mb  # noqa: E402


class BundleError(Exception):
    pass


def load_manifest() -> dict:
    return read_bundle(HERE, "the bundle")


def open_session(manifest: dict, threads: int | None = None):
    """The model on its runtime with every option the manifest records, through the same session module that
    edgekit's validation used (``edgekit_session.py``); ``threads`` None is the profile's count."""
    return open_bundled(HERE, manifest, threads)


def check(manifest: dict) -> dict:
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        inputs = {s["name"]: z[f"input:{s['name']}"] for s in manifest["inputs"]}
        golden = {s["name"]: z[f"output:{s['name']}"] for s in manifest["outputs"]}
    session = open_session(manifest)
    status, rows = golden_check(golden, run_batched(session, manifest, inputs), manifest["gates"],
                                manifest["higher_is_better"])
    return {"status": status, "samples": len(next(iter(inputs.values()))), "checks": rows,
            "applied": session.effective()}


def bench(manifest: dict, seconds: float, runs: int) -> dict:
    """As ``edgekit bench`` times a row: batch 1, with one thread and with the profile's threads."""
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        one = to_artifact_layout({s["name"]: z[f"input:{s['name']}"][:1] for s in manifest["inputs"]}, manifest)
    result = {"backend": manifest["backend"], "target": manifest["target"]}
    session = None
    for label, threads in (("latency_1t", 1), ("latency_all", None)):
        session = None  # closed before the next opens: a runtime may keep one thread pool per process
        session = open_session(manifest, threads)
        applied = session.effective()
        timing = measure(lambda run=session.run: run(one), min_runs=runs, min_seconds=seconds)
        result[label] = {**timing.__dict__, "threads": applied["threads"], "applied": applied}
    result["peak_rss_mb"] = peak_rss_mb()
    result["model_bytes"] = sum(f["bytes"] for f in manifest["files"])
    return result


def read_input(path: Path, manifest: dict) -> np.ndarray:
    """An image file preprocessed as the manifest says (needs pillow), or a .npy already preprocessed."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        from PIL import Image
    except ImportError:
        raise BundleError("reading PNG/JPEG needs pillow (pip install pillow); or pass a preprocessed .npy") from None
    from edgekit_pixels import image_to_input

    pre = manifest["preprocess"]
    if pre is None:
        raise BundleError("this model declares no image preprocessing: pass an array already preprocessed (.npy)")
    with Image.open(path) as image:
        return image_to_input(image, pre["size"], pre["grayscale"], pre["scale"], pre["mean"], pre["std"],
                              pre.get("center_crop"), pre.get("interpolation", "bilinear"))[None]


def predict(manifest: dict, path: Path) -> dict:
    if len(manifest["inputs"]) != 1:
        raise BundleError(f"--input feeds one input; this model has {len(manifest['inputs'])}")
    inputs = {manifest["inputs"][0]["name"]: read_input(path, manifest)}
    outputs = run_batched(open_session(manifest), manifest, inputs)
    scores = outputs[manifest["outputs"][0]["name"]][0]
    e = np.exp(scores - scores.max())
    probs = e / e.sum()
    labels = manifest.get("labels") or [str(i) for i in range(len(probs))]
    top = np.argsort(-probs)[:3]
    return {"prediction": labels[top[0]], "top": [{"label": labels[i], "probability": float(probs[i])} for i in top]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--bench", action="store_true")
    mode.add_argument("--input", type=Path)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per mode (--bench)")
    parser.add_argument("--runs", type=int, default=200, help="minimum timed runs per mode (--bench)")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest()
        if args.check:
            result = check(manifest)
        elif args.bench:
            result = bench(manifest, args.seconds, args.runs)
        else:
            if not args.input.is_file():
                raise BundleError(f"{args.input} does not exist")
            result = predict(manifest, args.input)
    except (BundleError, OSError, ValueError, KeyError) as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 1 if result.get("status") == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
