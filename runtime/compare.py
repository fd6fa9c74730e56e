"""Compare graph outputs with reference outputs (numpy only): shared by export verification and the runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """One output against its reference: shape, dtype, NaN/Inf count, differences, and the problem if any."""

    shape: list | None = None
    dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance_used: float | None = None  # the largest difference as a fraction of what the tolerance allows
    nonfinite: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class Row(Comparison):
    """One verification check: a graph's output on one input case by one engine (verification.json's rows)."""

    graph: str = ""
    engine: str = ""
    output: str = ""
    case: str = ""
    agreement: float | None = None  # the fraction of decisions (argmax, logit > 0) equal to eager's
    near_threshold: int | None = None  # kernel models: (series, feature) pairs with a comparison near its threshold
    threshold_allowance: float | None = None  # the largest difference those comparisons could cause (allowed)

    @classmethod
    def of(cls, graph: str, engine: str, output: str, case: str, comparison: Comparison) -> "Row":
        return cls(graph=graph, engine=engine, output=output, case=case, **asdict(comparison))

    def renamed(self, graph: str) -> "Row":
        return replace(self, graph=graph)

    def to_dict(self) -> dict:
        d = {"graph": self.graph, "engine": self.engine, "output": self.output, "case": self.case,
             **asdict(Comparison(self.shape, self.dtype, self.max_abs, self.max_rel, self.tolerance_used,
                                 self.nonfinite, self.problem))}
        extra = {k: v for k, v in (("agreement", self.agreement), ("near_threshold", self.near_threshold),
                                   ("threshold_allowance", self.threshold_allowance)) if v is not None}
        return {**d, **extra}


def format_table(rows: list[Row]) -> str:
    header = f"{'graph':<6} {'engine':<12} {'output':<16} {'case':<22} {'max_abs':>10} {'max_rel':>10}  problem"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.graph:<6} {r.engine:<12} {r.output:<16} {r.case:<22} "
                     f"{_num(r.max_abs):>10} {_num(r.max_rel):>10}  {r.problem or 'ok'}")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def summary(rows: list[Row]) -> str:
    """'N checks, worst |diff| D, at most F of the tolerance': one line for a set of compared outputs."""
    worst = max((r.max_abs or 0.0) for r in rows) if rows else 0.0
    used = max((r.tolerance_used or 0.0) for r in rows) if rows else 0.0
    return f"{len(rows)} checks, worst |diff| {worst:.3g}, at most {used:.2g} of the tolerance"


def compare(expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float,
            allowance: np.ndarray | None = None) -> Comparison:
    """Shape, dtype, NaN/Inf counts and max abs/rel differences of one output. `allowance`: per element, an
    extra absolute difference allowed (for integers: where a difference is allowed), see export.thresholds."""
    shape, dtype = list(actual.shape), str(actual.dtype)
    if actual.shape != expected.shape:
        return Comparison(shape, dtype, problem=f"shape {list(actual.shape)} != eager {list(expected.shape)}")
    if actual.dtype != expected.dtype:
        return Comparison(shape, dtype, problem=f"dtype {actual.dtype} != eager {expected.dtype}")
    if actual.dtype.kind in "iub":
        differs = actual != expected
        if allowance is not None:
            differs &= ~(np.broadcast_to(allowance, differs.shape) > 0)
        mismatches = int(differs.sum())
        max_abs = float(np.abs(actual.astype(np.float64) - expected).max()) if actual.size else 0.0
        return Comparison(shape, dtype, max_abs, problem=f"{mismatches} of {actual.size} values differ"
                          if mismatches else None)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    nonfinite = int((~np.isfinite(a)).sum())
    if nonfinite != int((~np.isfinite(e)).sum()):
        return Comparison(shape, dtype, nonfinite=nonfinite,
                          problem=f"{nonfinite} NaN/Inf values (eager has {int((~np.isfinite(e)).sum())})")
    finite = np.isfinite(e)
    diff = np.abs(a - e)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(e[finite]), 1e-12)).max()) if diff.size else 0.0
    extra = 0.0 if allowance is None else np.broadcast_to(allowance, e.shape)[finite]
    allowed = atol + extra + rtol * np.abs(e[finite])
    used = float((diff / np.maximum(allowed, 1e-300)).max()) if diff.size else 0.0
    tolerance = atol if allowance is None else atol + np.broadcast_to(allowance, e.shape)
    within = np.isclose(a, e, atol=tolerance, rtol=rtol, equal_nan=True).all()
    problem = None if within else "values differ beyond tolerance"
    return Comparison(shape, dtype, max_abs, max_rel, used, nonfinite, problem)
