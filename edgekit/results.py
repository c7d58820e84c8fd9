"""What flows out of the stages, in one neutral module: a target's row (Validation) with the stage it failed in,
a bench row and result, an export's result. Export, validate, bench and the reports all import these; none of
them imports another for its types. Numpy and the standard library only: workers read them without torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.artifact import Precision
from edgekit.bench.measurement import Measurement
from edgekit.config import TargetProfile
from edgekit.validate.attention import HeadStats
from edgekit.validate.explain import MapAgreement, OcclusionPlan
from edgekit.validate.gates import Check, Status
from edgekit.validate.metrics import OutputStats

if TYPE_CHECKING:
    from edgekit.compress.recipe import CompressionReport
    from edgekit.reference import Reference


class Stage(str, Enum):
    """The stage a target failed in (the way ExecuTorch's test suite tallies a run: one count per stage)."""

    EXPORT = "EXPORT"
    QUANTIZE = "QUANTIZE"
    LOAD = "LOAD"
    RUN = "RUN"
    MISMATCH = "MISMATCH"
    CRASH = "CRASH"
    TIMEOUT = "TIMEOUT"
    MEMORY = "MEMORY"  # a worker went over ``[limits] memory_mb``


@dataclass(frozen=True)
class Validation:
    """One target's row: PASS / WARN / FAIL from the gates, or the stage that failed and why."""

    target: str
    backend: str
    status: Status
    stage: Stage | None = None
    reason: str = ""
    samples: int = 0
    outputs: tuple[OutputStats, ...] = ()
    torch_accuracy: float | None = None
    accuracy: float | None = None
    checks: tuple[Check, ...] = ()
    precision: Precision | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.FAIL)


class StageFailed(Exception):
    """A stage of making an artifact failed: the target becomes a row with this stage and reason."""

    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def failure(profile: TargetProfile, stage: Stage, reason: str, precision: Precision | None = None) -> Validation:
    return Validation(profile.name, profile.backend, Status.FAIL, stage, reason, precision=precision,
                      warnings=precision.warnings if precision else ())


@dataclass(frozen=True)
class Timing:
    """How long each row is timed; ``quick`` is for demos and tests, the default for numbers you quote."""

    min_runs: int = 200
    min_seconds: float = 1.0
    throughput_seconds: float = 2.0
    timeout: float | None = None  # seconds per row; None: each profile's [limits] bench

    @staticmethod
    def quick() -> Timing:
        return Timing(min_runs=50, min_seconds=0.2, throughput_seconds=0.3)


@dataclass(frozen=True)
class BenchRow:
    validation: Validation
    measurement: Measurement | None = None
    attention: tuple[HeadStats, ...] = ()
    occlusion: MapAgreement | None = None
    seconds: float = 0.0

    @property
    def target(self) -> str:
        return self.validation.target


@dataclass(frozen=True)
class Explanation:
    """The maps behind the occlusion columns (arrays: plotted, not written to report.json)."""

    plan: OcclusionPlan
    classes: np.ndarray  # torch's predicted class per sample
    images: np.ndarray  # [samples, C, H, W]
    torch_maps: np.ndarray
    maps: dict[str, np.ndarray]  # target -> [samples, gh, gw]
    saliency: np.ndarray | None  # [samples, H, W] from torch gradients
    saliency_vs_occlusion: float | None  # Spearman's rho, torch saliency pooled to the grid vs torch occlusion


@dataclass(frozen=True)
class BenchResult:
    source: str
    folder: Path
    task: str | None
    torch_accuracy: float | None
    torch: BenchRow | None
    rows: tuple[BenchRow, ...]
    attention_outputs: tuple[str, ...] = ()
    explanation: Explanation | None = None
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # target -> val outputs, for plots
    reference: Reference | None = None
    timing: Timing | None = None

    @property
    def failed(self) -> bool:
        return any(r.validation.status is Status.FAIL for r in self.rows)


@dataclass(frozen=True)
class RunResult:
    source: str
    folder: Path
    torch_accuracy: float | None
    rows: tuple[Validation, ...]
    compression: CompressionReport | None = None
    validated_on: str = ""  # e.g. "validated on 500 samples: 500 images from photos/"

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.rows)


def stage_totals(rows: list[Validation]) -> dict[str, int]:
    """Rows per outcome: PASS / WARN for the rows that ran, else the stage each failed in (every stage listed, so
    a report can be compared with another)."""
    totals = {"PASS": 0, "WARN": 0, **{s.value: 0 for s in Stage}}
    for row in rows:
        key = row.stage.value if row.stage is not None else row.status.value
        totals[key] = totals.get(key, 0) + 1
    return totals
