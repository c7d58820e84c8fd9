"""edgekit bundle runner: runs this folder's model on the device with numpy and its one runtime (no torch, no edgekit).

    python run.py --check              golden inputs -> outputs, compared with the original's under the gates
    python run.py --bench [--seconds]  latency percentiles (1 thread, all threads), throughput, peak RSS, as JSON
    python run.py --input img.png      one prediction, preprocessed as the manifest says (PNG/JPEG needs pillow,
                                       or a .npy array already preprocessed)

Exit codes: 0 ok, 1 a gate failed, 2 bad input or a broken bundle (one line on stderr)."""
from __future__ import annotations

import argparse
import hashlib
import json
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

from edgekit_metrics import output_stats  # noqa: E402
from edgekit_timing import measure, peak_rss_mb  # noqa: E402


class BundleError(Exception):
    pass


def inside(relative: str) -> Path:
    """A path named by the manifest, refused unless it stays inside this folder."""
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        raise BundleError(f"manifest names {relative!r}: bundle paths must be relative and stay inside the bundle")
    path = (HERE / relative).resolve()
    if HERE not in path.parents:
        raise BundleError(f"manifest names {relative!r}, which resolves outside the bundle")
    return path


def load_manifest() -> dict:
    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        path = inside(entry["path"])
        if not path.is_file():
            raise BundleError(f"{entry['path']} is missing from the bundle")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise BundleError(f"{entry['path']} does not match its sha256 in manifest.json (modified or corrupt)")
    return manifest


def threads_all() -> int:
    return os.cpu_count() or 1


class OnnxSession:
    def __init__(self, manifest: dict, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(inside(manifest["model_file"])), options,
                                             providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: dict) -> dict:
        return dict(zip(self._names, self._session.run(None, inputs)))


class OpenVinoSession:
    def __init__(self, manifest: dict, threads: int) -> None:
        import openvino as ov

        config = dict(manifest["runtime"].get("compile_config", {}))
        config["INFERENCE_NUM_THREADS"] = str(threads)
        compiled = ov.Core().compile_model(str(inside(manifest["model_file"])), manifest["runtime"]["device"],
                                           config)
        self._request = compiled.create_infer_request()
        self._outputs = [(o, o.get_any_name()) for o in compiled.outputs]

    def run(self, inputs: dict) -> dict:
        result = self._request.infer(inputs, share_inputs=True)  # no copy of the input; outputs are copied below
        return {name: np.array(result[port]) for port, name in self._outputs}


class TfliteSession:
    def __init__(self, manifest: dict, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(inside(manifest["model_file"])), num_threads=threads)
        runtime = manifest["runtime"]
        self._runners = {int(b): interpreter.get_signature_runner(name) for name, b in runtime["signatures"].items()}
        self._inputs = runtime["signature_inputs"]
        self._outputs = {v: k for k, v in runtime["signature_outputs"].items()}

    def run(self, inputs: dict) -> dict:
        batch = len(next(iter(inputs.values())))
        if batch not in self._runners:
            raise BundleError(f"this model has signatures for batch {sorted(self._runners)}, not {batch}")
        result = self._runners[batch](**{self._inputs[k]: v for k, v in inputs.items()})
        return {self._outputs[k]: v for k, v in result.items()}


SESSIONS = {"onnx": OnnxSession, "openvino": OpenVinoSession, "tflite": TfliteSession}


def open_session(manifest: dict, threads: int):
    try:
        return SESSIONS[manifest["backend"]](manifest, threads)
    except ImportError as exc:
        raise BundleError(f"the {manifest['backend']} runtime is not installed here ({exc.name}); "
                          f"pip install {manifest['runtime']['package']}") from None


def to_model(inputs: dict, manifest: dict) -> dict:
    """The caller's NCHW arrays in the model's layout and dtypes."""
    out = {}
    for spec in manifest["inputs"]:
        value = inputs[spec["name"]]
        if manifest["layout"] == "NHWC" and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        out[spec["name"]] = np.ascontiguousarray(value, dtype=spec["dtype"])
    return out


def run_all(session, manifest: dict, inputs: dict) -> dict:
    """Every sample, in batches the model accepts (fixed-batch models: one of their sizes, padded)."""
    feed = to_model(inputs, manifest)
    n = len(next(iter(feed.values())))
    sizes = manifest.get("batch_sizes") or [n]
    batch = max(sizes)
    chunks: dict = {}
    for start in range(0, n, batch):
        part = {k: v[start:start + batch] for k, v in feed.items()}
        size = len(next(iter(part.values())))
        fit = min((b for b in sizes if b >= size), default=batch)
        if fit != size:
            part = {k: np.concatenate([v, np.repeat(v[-1:], fit - size, axis=0)]) for k, v in part.items()}
        for name, value in session.run(part).items():
            chunks.setdefault(name, []).append(np.asarray(value)[:size])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def gate(value: float, threshold: dict, higher_is_better: bool) -> str:
    if higher_is_better:
        return "FAIL" if value < threshold["fail"] else "WARN" if value < threshold["warn"] else "PASS"
    return "FAIL" if value > threshold["fail"] else "WARN" if value > threshold["warn"] else "PASS"


def check(manifest: dict) -> dict:
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        inputs = {s["name"]: z[f"input:{s['name']}"] for s in manifest["inputs"]}
        golden = {s["name"]: z[f"output:{s['name']}"] for s in manifest["outputs"]}
    actual = run_all(open_session(manifest, threads_all()), manifest, inputs)
    rows, status = [], "PASS"
    for name, expected in golden.items():
        stats = output_stats(name, expected, actual[name])
        gates = {**manifest["gates"].get("*", {}), **manifest["gates"].get(name, {})}
        for metric, threshold in gates.items():
            value = getattr(stats, metric, None)
            if value is None:
                continue
            result = gate(value, threshold, metric in manifest["higher_is_better"])
            status = max(status, result, key=["PASS", "WARN", "FAIL"].index)
            rows.append({"output": name, "metric": metric, "value": value, **threshold, "status": result})
    return {"status": status, "samples": len(next(iter(inputs.values()))), "checks": rows}


def bench(manifest: dict, seconds: float) -> dict:
    with np.load(HERE / "golden.npz", allow_pickle=False) as z:
        one = to_model({s["name"]: z[f"input:{s['name']}"][:1] for s in manifest["inputs"]}, manifest)
    result = {"backend": manifest["backend"], "target": manifest["target"]}
    for label, threads in (("latency_1t", 1), ("latency_all", threads_all())):
        session = open_session(manifest, threads)
        timing = measure(lambda: session.run(one), min_runs=200, min_seconds=seconds)
        result[label] = {**timing.__dict__, "threads": threads}
    result["peak_rss_mb"] = peak_rss_mb()
    result["model_bytes"] = sum(f["bytes"] for f in manifest["files"])
    return result


def read_input(path: Path, manifest: dict) -> np.ndarray:
    """An image file preprocessed as the manifest says (needs pillow), or a .npy already preprocessed."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    pre = manifest["preprocess"]
    try:
        from PIL import Image
    except ImportError:
        raise BundleError("reading PNG/JPEG needs pillow (pip install pillow); or pass a preprocessed .npy") from None
    image = Image.open(path).convert("L" if pre["grayscale"] else "RGB")
    image = image.resize((pre["size"][1], pre["size"][0]), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) * pre["scale"]
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    mean = np.array(pre["mean"], np.float32)[:, None, None]
    std = np.array(pre["std"], np.float32)[:, None, None]
    return ((pixels - mean) / std)[None]


def predict(manifest: dict, path: Path) -> dict:
    if len(manifest["inputs"]) != 1:
        raise BundleError(f"--input feeds one input; this model has {len(manifest['inputs'])}")
    inputs = {manifest["inputs"][0]["name"]: read_input(path, manifest)}
    outputs = run_all(open_session(manifest, threads_all()), manifest, inputs)
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
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest()
        if args.check:
            result = check(manifest)
        elif args.bench:
            result = bench(manifest, args.seconds)
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
