"""The bundle of a segmented run: what goes onto the device to run the chain. One ordinary edgekit bundle per
segment (``segment0/``, ...: its model, manifest, golden data and runner), and at the top a runner that chains
them (numpy and the segments' runtimes), the model-level golden data and the end-to-end gates."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgekit._version import __version__
from edgekit.artifact import file_entry
from edgekit.bundle.make import BUNDLE_MARKER, GOLDEN_SAMPLES, HELPERS, bundle
from edgekit.config import HIGHER_IS_BETTER
from edgekit.errors import EdgekitError
from edgekit.fsutil import jsonable, staged_folder
from edgekit.reference import load_run_reference
from edgekit.runfolder import RunFolder
from edgekit.segments.record import read_segments

BUNDLE_SCHEMA = "edgekit.segments-bundle/1"
HERE = Path(__file__).parent
FILES = {"run.py": HERE / "chain_runner.py", "edgekit_pipeline.py": HERE / "pipeline.py", **HELPERS}


def _gates(run: Path, record) -> dict:
    """Each model output under the gates of the profile of the segment that makes it, as the export gated it."""
    gates = {}
    for stage in record.stages:
        profile = RunFolder(run / stage.folder).profile(stage.target)
        for name in stage.outputs:
            if name in record.outputs:
                gates[name] = {m: {"warn": t.warn, "fail": t.fail} for m, t in profile.gates.for_output(name).items()}
    return gates


def bundle_segments(run_dir: str | Path, out: str | Path) -> Path:
    """Write the segmented bundle of a run made by ``edgekit export --segments``; it appears only when complete."""
    run = Path(run_dir)
    record, results = read_segments(run)
    for stage in record.stages:
        if not RunFolder(run / stage.folder).has_manifest(stage.target):
            raise EdgekitError(f"{run / stage.folder} has no artifact for {stage.target} (its export failed)")
    reference = load_run_reference(RunFolder(run))
    with staged_folder(Path(out), marker=BUNDLE_MARKER) as stage_dir:
        for stage in record.stages:
            bundle(run / stage.folder, stage.target, stage_dir / stage.folder)
        for name, path in FILES.items():
            shutil.copy2(path, stage_dir / name)
        arrays = {f"input:{k}": reference.inputs[k][:GOLDEN_SAMPLES] for k in record.inputs}
        arrays.update({f"output:{k}": reference.outputs[k][:GOLDEN_SAMPLES] for k in record.outputs})
        np.savez_compressed(stage_dir / "golden.npz", **arrays)
        document = {
            "schema": BUNDLE_SCHEMA, "edgekit": __version__, "source": record.source, "segments": record.segments,
            "inputs": list(record.inputs), "outputs": list(record.outputs),
            "stages": [{"folder": s.folder, "target": s.target, "inputs": list(s.inputs), "outputs": list(s.outputs),
                        "drop": list(s.drop)} for s in record.stages],
            "gates": _gates(run, record), "higher_is_better": sorted(HIGHER_IS_BETTER),
            "validated": {"status": results.get("validation", {}).get("status"),
                          "pipeline": results.get("pipeline")},
            "golden": {"file": "golden.npz", "samples": len(next(iter(arrays.values())))},
            "files": [jsonable(file_entry(stage_dir, name)) for name in [*FILES, "golden.npz"]],
        }
        (stage_dir / BUNDLE_MARKER).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return Path(out)
