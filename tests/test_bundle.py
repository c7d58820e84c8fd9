"""Bundles: made for every backend, their runner works where torch and edgekit cannot be imported (torch only
where the runtime itself requires it, and then it says so), tampering and escaping paths are refused, and the C
array compiles and matches the model file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.backends import get_backend
from edgekit.bundle.make import bundle
from edgekit.cli import main

from .conftest import BACKENDS, fp32_profile, write_digits

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict[str, str]:
    """An environment where `import torch` and `import edgekit` fail, as on a device that has neither."""
    blocker = tmp_path_factory.mktemp("blocker")
    for name in ("torch", "edgekit"):
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not on this device')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocker), "HOME": str(blocker)}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "not on this device" in probe.stderr
    return env


@pytest.fixture(scope="module")
def no_edgekit(no_torch) -> dict[str, str]:
    """A device with the runtime and what it requires, torch included, but no edgekit."""
    blocker = Path(no_torch["PYTHONPATH"]).parent / "edgekit-only"
    (blocker / "edgekit").mkdir(parents=True, exist_ok=True)
    (blocker / "edgekit" / "__init__.py").write_text("raise ImportError('edgekit is not on this device')\n")
    return {**no_torch, "PYTHONPATH": str(blocker)}


def needs_torch(backend: str) -> bool:
    """A runtime that cannot run without torch says so (``runtime_requires``); its device has torch."""
    return "torch" in getattr(get_backend(backend), "runtime_requires", ())


@pytest.fixture
def device(backend, no_torch, no_edgekit) -> dict[str, str]:
    return no_edgekit if needs_torch(backend) else no_torch


def run_py(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(folder / "run.py"), *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=folder.parent)


@pytest.fixture(scope="module")
def fusion_bundles(zoo_run, tmp_path_factory) -> dict[str, Path]:
    run = zoo_run("fusion")
    out = tmp_path_factory.mktemp("bundles")
    return {b: bundle(run.folder, fp32_profile(b), out / b) for b in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bundle_check_passes_without_torch(fusion_bundles, device, backend):
    folder = fusion_bundles[backend]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema"] == "edgekit.bundle/1" and manifest["backend"] == backend
    assert {i["name"] for i in manifest["inputs"]} == {"image", "tokens"}
    assert manifest["preprocess"]["size"] == [28, 28] and manifest["golden"]["samples"] == 16
    done = run_py(folder, device, "--check")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "PASS" and report["samples"] == 16
    assert any(c["metric"] == "max_rel_error" and c["value"] < 1e-5 for c in report["checks"])
    assert_applied_as_recorded(report["applied"], folder)


def expected_applied(folder: Path) -> dict:
    """What a consumer of this bundle must run with: the recorded threads (0: every core) and, for OpenVINO, the
    precision the shared rule picks for this CPU, which the host's manifest also read back."""
    from edgekit.cpu import resolve_threads

    manifest = json.loads((folder / "manifest.json").read_text())
    threads = resolve_threads(manifest["runtime"]["threads"])
    expected = {"threads": threads}
    if manifest["backend"] == "openvino":
        expected["precision"] = manifest["precision"]["evidence"]["inference_precision_hint"]
    return expected


def assert_applied_as_recorded(applied: dict, folder: Path) -> None:
    for key, value in expected_applied(folder).items():
        assert applied[key] == value, (key, applied)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if needs_torch(b)])
def test_a_runtime_that_needs_torch_says_what_to_install(fusion_bundles, no_torch, backend):
    folder = fusion_bundles[backend]
    package = json.loads((folder / "manifest.json").read_text())["runtime"]["package"]
    assert f"torch=={torch_version()}" in package.split()
    done = run_py(folder, no_torch, "--check")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"run.py: error: the {backend} runtime is not installed here (torch is not on this device); "
        f"pip install {package}"]


def torch_version() -> str:
    from importlib import metadata

    return metadata.version("torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_bundle_carries_current_copies_of_the_one_runner(fusion_bundles, backend):
    """run.py, the artifact runner, the session module and every helper in a freshly written bundle are edgekit's
    own files byte for byte, each listed with its hash: the device runs what validation ran."""
    from edgekit.bundle.make import copied_sources

    folder = fusion_bundles[backend]
    copies = copied_sources(get_backend(backend))
    assert {"run.py", "edgekit_execute.py", "edgekit_cpu.py", "edgekit_session.py"} <= set(copies)
    stale = [name for name, source in copies.items() if (folder / name).read_bytes() != source.read_bytes()]
    assert stale == []
    listed = {f["path"] for f in json.loads((folder / "manifest.json").read_text())["files"]}
    assert set(copies) <= listed


@pytest.mark.parametrize("backend", BACKENDS)
def test_example_py_applies_the_manifest_options(zoo_run, tmp_path, device, backend):
    """The integration example opens the model through the same session module, with the same options."""
    folder = bundle(zoo_run("cnn").folder, fp32_profile(backend), tmp_path / "cnn")
    image = write_digits("val", tmp_path / "digits", class_folders=False, limit=1) / "0003.png"  # a 0 (val.npz)
    done = subprocess.run([sys.executable, str(folder / "example.py"), str(image)], env=device,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 (")
    expected = expected_applied(folder)
    said = done.stderr.strip().splitlines()[-1]
    assert f"with {expected['threads']} threads" in said
    assert "precision" not in expected or f"ran in {expected['precision']} " in said


def test_bundle_bench_prints_timing_json(fusion_bundles, no_torch):
    folder = fusion_bundles[next(b for b in BACKENDS if not needs_torch(b))]
    done = run_py(folder, no_torch, "--bench", "--seconds", "0.05", "--runs", "50")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for mode in ("latency_1t", "latency_all"):
        assert 0 < result[mode]["median_ms"] <= result[mode]["p99_ms"] and result[mode]["runs"] >= 50
    assert result["latency_1t"]["threads"] == 1
    assert_applied_as_recorded(result["latency_all"]["applied"], folder)
    assert result["peak_rss_mb"] > 0 and result["model_bytes"] > 0


def test_bundle_predicts_a_real_digit(zoo_run, tmp_path, no_torch):
    folder = bundle(zoo_run("cnn").folder, fp32_profile(BACKENDS[-1]), tmp_path / "cnn")
    image = write_digits("val", tmp_path / "digits", class_folders=False, limit=1) / "0003.png"  # a 0 (val.npz)
    done = run_py(folder, no_torch, "--input", str(image))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["prediction"] == "0"


def _flip_a_byte(folder: Path, manifest: dict) -> None:
    model = folder / manifest["model_file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))


def _grow(folder: Path, manifest: dict) -> None:
    with open(folder / manifest["model_file"], "ab") as f:
        f.write(b"\0" * 4096)


def _symlink_out(folder: Path, manifest: dict) -> None:
    model = folder / manifest["model_file"]
    outside = folder.parent / "outside.bin"
    outside.write_bytes(model.read_bytes())
    model.unlink()
    model.symlink_to(outside)


def _path(path: str):
    def rewrite(folder: Path, manifest: dict) -> None:
        manifest["files"][0]["path"] = path
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return rewrite


def _truncate_manifest(folder: Path, manifest: dict) -> None:
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text[: len(text) // 2])


@pytest.mark.parametrize("tamper, message", [
    (_flip_a_byte, "does not match its manifest hash"),
    (_grow, "bytes, its manifest says"),  # refused by its size, before a byte of it is read
    (_symlink_out, "stay inside the bundle"),
    (_path("../../etc/passwd"), "stay inside the bundle"),
    (_path("/etc/passwd"), "stay inside the bundle"),
    (_truncate_manifest, "manifest.json"),
], ids=["byte-flipped", "grown", "symlink-out", "dot-dot", "absolute", "truncated-manifest"])
def test_tampered_files_and_escaping_paths_are_refused_in_one_line(fusion_bundles, tmp_path, no_torch, tamper,
                                                                     message):
    folder = tmp_path / "copy"
    shutil.copytree(fusion_bundles[next(b for b in BACKENDS if not needs_torch(b))], folder)
    tamper(folder, json.loads((folder / "manifest.json").read_text()))
    done = run_py(folder, no_torch, "--check")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("backend", BACKENDS)
def test_c_array_compiles_and_matches_the_model(zoo_run, tmp_path, backend):
    folder = bundle(zoo_run("fusion").folder, fp32_profile(backend), tmp_path / "fusion", c_array=True)
    files = [f["path"] for f in json.loads((folder / "manifest.json").read_text())["files"]
             if not f["path"].startswith("c/") and f["path"].startswith("model")]
    c = folder / "c"
    for name in files:
        header = (c / f"g_{name.replace('.', '_')}.h").read_text()
        assert f"extern const unsigned char g_{name.replace('.', '_')}[];" in header
    binary = tmp_path / "check"
    sources = [c / "check_model.c", *sorted(c.glob("g_*.c"))]
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-O1", "-o", str(binary), *map(str, sources)],
                   check=True, capture_output=True, text=True)
    paths = [str(folder / name) for name in files]
    ok = subprocess.run([str(binary), *paths], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.count("ok: ") == len(files), ok.stdout
    data = bytearray((folder / files[0]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "other.bin").write_bytes(bytes(data))
    bad = subprocess.run([str(binary), str(tmp_path / "other.bin"), *paths[1:]], capture_output=True, text=True)
    assert bad.returncode == 1 and "bytes differ" in bad.stdout


def test_cli_bundle_refuses_an_unknown_target(zoo_run, tmp_path, capsys):
    assert main(["bundle", str(zoo_run("cnn").folder), "--target", "nope", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no target 'nope'" in err[0]
    assert not (tmp_path / "b").exists()


def test_export_for_device_script(tmp_path):
    """tools/export_for_device.py as a user runs it, in its own process."""
    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "tools" / "export_for_device.py"), *args],
                              capture_output=True, text=True, timeout=600)

    out = tmp_path / "cnn-device"
    done = script("--profile", fp32_profile(BACKENDS[0]), "--model", "zoo:cnn", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "run.py").is_file() and (tmp_path / "cnn-device.run" / "run.json").is_file()
    refused = script("--profile", "no-such-profile", "--model", "zoo:cnn", "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "no-such-profile" in refused.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_openvino_c_example_compiles_and_matches_the_golden_output(fusion_bundles, tmp_path):
    """The bundle's C integration example, built against the C API that the openvino wheel ships."""
    import numpy as np
    import openvino

    if "openvino" not in fusion_bundles:
        pytest.skip("openvino backend not registered")
    folder = fusion_bundles["openvino"]
    root = Path(openvino.__file__).parent
    library = next((root / "libs").glob("libopenvino_c.so.*"))
    binary = tmp_path / "example"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-O1", "-o", str(binary),
                    str(folder / "c" / "example_openvino.c"), f"-I{root / 'include'}", f"-L{root / 'libs'}",
                    f"-l:{library.name}"], check=True, capture_output=True, text=True)
    inputs = sorted((folder / "c").glob("input_*.bin"))
    done = subprocess.run([str(binary), str(folder / "c" / "properties.txt"), str(folder / "model.xml"),
                           *map(str, inputs)], capture_output=True, text=True,
                          env={"LD_LIBRARY_PATH": str(root / "libs")}, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    values = np.array([float(v) for v in lines[:-2]])
    golden = np.load(folder / "golden.npz")["output:logits"][0]
    assert len(inputs) == 2 and values.shape == golden.shape
    # bf16 (the plugin's default on CPUs with bf16) is off by ~1e-2 here: the example applies the manifest's f32
    assert np.abs(values - golden).max() < 1e-4 and int(lines[-1]) == int(golden.argmax())
    applied = dict(zip(*[iter(done.stderr.split("applied:")[1].split())] * 2))
    expected = expected_applied(folder)
    assert applied["INFERENCE_NUM_THREADS"] == str(expected["threads"])
    assert applied["INFERENCE_PRECISION_HINT"] == {"float32": "f32"}[expected["precision"]]
    # an fp16 bundle's properties on this CPU: f16 only where it is native (the rule of compute_hint), never bf16
    from edgekit.backends.openvino_session import compute_hint, device_capabilities

    fp16 = tmp_path / "fp16.txt"
    fp16.write_text((folder / "c" / "properties.txt").read_text().replace("INFERENCE_PRECISION_HINT f32",
                                                                          "INFERENCE_PRECISION_HINT f16"))
    done = subprocess.run([str(binary), str(fp16), str(folder / "model.xml"), *map(str, inputs)],
                          capture_output=True, text=True, env={"LD_LIBRARY_PATH": str(root / "libs")}, timeout=120)
    assert done.returncode == 0, done.stderr
    hint, note = compute_hint("fp16", device_capabilities("CPU"))
    assert f"INFERENCE_PRECISION_HINT {hint} " in done.stderr and ("no native FP16" in done.stderr) == bool(note)
