"""What `edgekit check` reports: a finding (one thing a target will refuse or run differently) and a target's
result. Data types only: the backends that find them and the reports that print them both import these."""
from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """One thing a target will refuse (``error``) or run differently / slower than torch (``warning``)."""

    target: str
    severity: str  # ERROR | WARNING
    kind: str  # "unsupported op", "no kernel", "pinned dim", "layout", "torch.export", ...
    op: str | None  # as the converter names it, e.g. "aten._linalg_det.default" or "Mul"
    module_path: str | None  # the innermost module that calls it, e.g. "head.solver" ("" is the root module)
    message: str


@dataclass(frozen=True)
class CheckResult:
    target: str
    backend: str
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """The target can work (warnings allowed)."""
        return not any(f.severity == ERROR for f in self.findings)
