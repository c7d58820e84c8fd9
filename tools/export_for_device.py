"""Export a model for one device profile and bundle it: the script to copy into your own repository.

    python tools/export_for_device.py --profile tflite-rpi4-int8 --model zoo:fusion --calib task:calib \
        --out fusion-rpi4 [--c-array] [--prune channels:0.3 --recover distill]

It exports (and quantizes, for int8 profiles), validates the artifact against torch on the model's data, and writes
the bundle (model, manifest, golden data, runner) to --out; the run folder is kept beside it as OUT.run/.
Exit codes: 0 passed, 1 a gate failed (the bundle is still written, and says so), 2 bad input."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgekit.api import export
from edgekit.bundle.make import bundle
from edgekit.compress.recipe import CompressionRecipe
from edgekit.config import load_profile
from edgekit.errors import EdgekitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="a profile name from targets/ or a TOML path")
    parser.add_argument("--model", required=True, help="zoo:NAME | path/file.py:factory | package.module:factory")
    parser.add_argument("--calib", help="calibration data for int8 profiles: an image folder or task:calib")
    parser.add_argument("--out", required=True, type=Path, help="the bundle folder")
    parser.add_argument("--c-array", action="store_true", help="also embed the model as a C array")
    parser.add_argument("--prune", help="e.g. channels:0.3 or l1:0.5")
    parser.add_argument("--recover", choices=("finetune", "distill"))
    parser.add_argument("--recover-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    try:
        profile = load_profile(args.profile)
        recipe = CompressionRecipe.parse(args.prune, args.recover, args.recover_epochs)
        run = export(args.model, [profile], args.out.with_name(args.out.name + ".run"), calib=args.calib,
                     compression=recipe, progress=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
        row = run.rows[0]
        print(f"{profile.name}: {row.status.value}" + (f" ({row.stage.value}: {row.reason})" if row.stage else ""))
        if row.stage is not None and row.stage.value in ("EXPORT", "QUANTIZE"):
            return 1
        folder = bundle(run.folder, profile.name, args.out, c_array=args.c_array)
    except EdgekitError as exc:
        print(f"export_for_device: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle: {folder}\non the device: python {folder.name}/run.py --check   (or --bench, --input IMAGE)")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
