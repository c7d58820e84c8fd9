"""``segments.json``: how a run's model was split, which segment runs where, and what the chain measured. The
export writes it, the chain worker and the pipeline bench read it. No torch: the workers import this."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.fsutil import write_json

SEGMENTS_FILE = "segments.json"
SEGMENTS_SCHEMA = "edgekit.segments/1"


@dataclass(frozen=True)
class CutTensor:
    """A tensor that crosses at least one cut."""

    name: str
    module: str  # the module path that made it; "" the root module, "input" for a model input
    shape: tuple[int | str, ...]  # "batch" first
    dtype: str
    produced_by: int  # the segment that makes it (-1: a model input)
    used_by: tuple[int, ...]  # the later segments that read it


@dataclass(frozen=True)
class StageRecord:
    """One segment of the run: its own run folder, holding one target."""

    folder: str  # relative to the run folder
    target: str  # the profile it was exported under (the artifact is FOLDER/TARGET)
    begins_at: str  # the module it begins at ("" for the first)
    modules: tuple[str, ...]  # the top-level modules it runs
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    drop: tuple[str, ...]  # values freed after it: no later segment reads them and the model does not return them
    carried: tuple[str, ...]  # values passed along past it by the runner (made before, read or returned after)
    flops: int  # per sample


@dataclass(frozen=True)
class SegmentsRecord:
    source: str
    segments: str  # the --segments value it was split with
    stages: tuple[StageRecord, ...]
    inputs: tuple[str, ...]  # the model's
    outputs: tuple[str, ...]
    tensors: tuple[CutTensor, ...]
    unsplit: tuple[str, ...]  # targets of the unsplit model in the run folder: the pipeline's baselines
    schema: str = SEGMENTS_SCHEMA

    def write(self, run_dir: Path, **results: Any) -> None:
        """segments.json: the record, and the results so far (``validation``, ``pipeline``)."""
        write_json(run_dir / SEGMENTS_FILE, {**asdict(self), **results})


def read_segments(run_dir: Path) -> tuple[SegmentsRecord, dict[str, Any]]:
    """The record of a segmented run and the results segments.json holds beside it."""
    path = Path(run_dir) / SEGMENTS_FILE
    if not path.is_file():
        raise EdgekitError(f"{run_dir} is not a segmented run (no {SEGMENTS_FILE}); make one with "
                           "`edgekit export SRC --segments N --target A,B`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("schema") != SEGMENTS_SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r} is not {SEGMENTS_SCHEMA}")
        stages = tuple(StageRecord(**{**s, **{k: tuple(s[k]) for k in ("modules", "inputs", "outputs", "drop",
                                                                      "carried")}}) for s in raw["stages"])
        tensors = tuple(CutTensor(**{**t, "shape": tuple(t["shape"]), "used_by": tuple(t["used_by"])})
                        for t in raw["tensors"])
        record = SegmentsRecord(raw["source"], raw["segments"], stages, tuple(raw["inputs"]), tuple(raw["outputs"]),
                                tensors, tuple(raw["unsplit"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EdgekitError(f"{path}: not a readable segments record ({exc})") from None
    results = {k: v for k, v in raw.items() if k not in asdict(record)}
    return record, results
