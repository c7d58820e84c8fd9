"""Validate one artifact of a run folder in a worker process (export and ``edgekit validate`` do)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit.artifact import Precision
from edgekit.config import TargetProfile
from edgekit.isolation.process import run_worker
from edgekit.isolation.worker import Job
from edgekit.reference import Reference
from edgekit.results import Validation
from edgekit.validate.validate import compare, failure


def validate_in_worker(reference: Reference, run_dir: Path, target: str, precision: Precision,
                       profile: TargetProfile) -> Validation:
    """Validate one artifact of a run folder in a worker process: a runtime that aborts or hangs while loading or
    running becomes a CRASH / TIMEOUT / MEMORY row (the profile's ``[limits]``) instead of taking the caller
    down."""
    with tempfile.TemporaryDirectory(prefix="edgekit-validate-") as scratch:
        job = Job("artifact", str(run_dir.resolve()), target, scratch, measure=False,
                  memory_mb=profile.limits.memory_mb)
        outcome = run_worker(job, profile.limits.validate)
    if outcome.stage is not None:
        return failure(profile, outcome.stage, outcome.reason, precision)
    return compare(reference, outcome.validation_outputs(), precision, profile)
