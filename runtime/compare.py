"""Compare graph outputs with reference outputs (numpy only): shared by export verification and the runtime."""

from __future__ import annotations

import numpy as np


def format_table(rows: list[dict]) -> str:
    header = f"{'graph':<6} {'engine':<12} {'output':<16} {'case':<22} {'max_abs':>10} {'max_rel':>10}  problem"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['graph']:<6} {r['engine']:<12} {r['output']:<16} {r['case']:<22} "
                     f"{_num(r['max_abs']):>10} {_num(r['max_rel']):>10}  {r['problem'] or 'ok'}")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def summary(rows: list[dict]) -> str:
    """'N checks, worst |diff| D, at most F of the tolerance': one line for a set of compared outputs."""
    worst = max((r["max_abs"] or 0.0) for r in rows) if rows else 0.0
    used = max((r.get("tolerance_used") or 0.0) for r in rows) if rows else 0.0
    return f"{len(rows)} checks, worst |diff| {worst:.3g}, at most {used:.2g} of the tolerance"


def compare(expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> dict:
    """Shape, dtype, NaN/Inf counts and max abs/rel differences of one output."""
    row = {"shape": list(actual.shape), "dtype": str(actual.dtype), "max_abs": None, "max_rel": None,
           "tolerance_used": None, "nonfinite": 0, "problem": None}
    if actual.shape != expected.shape:
        row["problem"] = f"shape {list(actual.shape)} != eager {list(expected.shape)}"
        return row
    if actual.dtype != expected.dtype:
        row["problem"] = f"dtype {actual.dtype} != eager {expected.dtype}"
        return row
    if actual.dtype.kind in "iub":
        mismatches = int((actual != expected).sum())
        row["max_abs"] = float(np.abs(actual.astype(np.float64) - expected).max()) if actual.size else 0.0
        if mismatches:
            row["problem"] = f"{mismatches} of {actual.size} values differ"
        return row
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    row["nonfinite"] = int((~np.isfinite(a)).sum())
    if row["nonfinite"] != int((~np.isfinite(e)).sum()):
        row["problem"] = f"{row['nonfinite']} NaN/Inf values (eager has {int((~np.isfinite(e)).sum())})"
        return row
    finite = np.isfinite(e)
    diff = np.abs(a - e)[finite]
    row["max_abs"] = float(diff.max()) if diff.size else 0.0
    row["max_rel"] = float((diff / np.maximum(np.abs(e[finite]), 1e-12)).max()) if diff.size else 0.0
    # the largest difference as a fraction of what the tolerance allows at that value (<= 1 passes)
    allowed = atol + rtol * np.abs(e[finite])
    row["tolerance_used"] = float((diff / np.maximum(allowed, 1e-300)).max()) if diff.size else 0.0
    if not np.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        row["problem"] = "values differ beyond tolerance"
    return row
