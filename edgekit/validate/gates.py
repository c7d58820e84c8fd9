"""Gates: compare a measured value with a profile's warn/fail thresholds."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgekit.config import HIGHER_IS_BETTER, Threshold
from edgekit.validate.metrics import gate_status


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    subject: str  # an output name, or "task"
    metric: str
    value: float
    warn: float
    fail: float
    status: Status
    note: str = ""  # how the value was judged when it is not the plain metric, e.g. "2 near-tie flips forgiven"


def check(subject: str, metric: str, value: float, gate: Threshold) -> Check:
    status = Status(gate_status(value, gate.warn, gate.fail, metric in HIGHER_IS_BETTER))
    return Check(subject, metric, value, gate.warn, gate.fail, status)


def worst(statuses) -> Status:
    order = [Status.PASS, Status.WARN, Status.FAIL]
    return max(statuses, key=order.index, default=Status.PASS)
