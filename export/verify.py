"""Run every exported graph on a grid of shapes and compare with eager PyTorch, collecting all failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from export.graphs import as_tuple

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
BATCH_SIZES = (1, 2, 7, 64)


class VerificationError(Exception):
    """Exported graphs disagree with eager PyTorch; carries every failing check."""

    def __init__(self, failures: list[dict], atol: float, rtol: float):
        self.failures = failures
        super().__init__(f"{len(failures)} exported output(s) disagree with eager PyTorch "
                         f"(atol {atol:g}, rtol {rtol:g}):\n" + format_table(failures))


@dataclass(frozen=True)
class Case:
    """One input set for a graph, with a label such as 'batch=7 length=64'."""

    label: str
    inputs: tuple[torch.Tensor, ...]


def format_table(rows: list[dict]) -> str:
    header = f"{'graph':<6} {'engine':<12} {'output':<16} {'case':<22} {'max_abs':>10} {'max_rel':>10}  problem"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['graph']:<6} {r['engine']:<12} {r['output']:<16} {r['case']:<22} "
                     f"{_num(r['max_abs']):>10} {_num(r['max_rel']):>10}  {r['problem'] or 'ok'}")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def compare(expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> dict:
    """Shape, dtype, NaN/Inf counts and max abs/rel differences of one output."""
    row = {"shape": list(actual.shape), "dtype": str(actual.dtype), "max_abs": None, "max_rel": None,
           "nonfinite": 0, "problem": None}
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
    if not np.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        row["problem"] = "values differ beyond tolerance"
    return row


def verify_graph(graph: str, eager: torch.nn.Module, engines: dict[str, Callable], cases: list[Case],
                 output_names: tuple[str, ...], atol: float, rtol: float, decision: str | None = None) -> list[dict]:
    """One row per engine x case x output; decision agreement ('argmax' or 'threshold') for raw scores."""
    rows = []
    for case in cases:
        with torch.inference_mode():
            expected = [t.numpy() for t in as_tuple(eager(*case.inputs))]
        for engine, run in engines.items():
            try:
                actual = [np.asarray(a) for a in run(case.inputs)]
            except Exception as exc:
                rows.append({"graph": graph, "engine": engine, "output": "*", "case": case.label,
                             "shape": None, "dtype": None, "max_abs": None, "max_rel": None, "nonfinite": 0,
                             "problem": f"failed to run: {str(exc).splitlines()[0] if str(exc) else exc}"})
                continue
            for name, e, a in zip(output_names, expected, actual):
                row = {"graph": graph, "engine": engine, "output": name, "case": case.label,
                       **compare(e, a, atol, rtol)}
                if decision and name == output_names[0] and row["problem"] is None:
                    row["agreement"] = _agreement(decision, e, a)
                rows.append(row)
    return rows


def _agreement(decision: str, expected: np.ndarray, actual: np.ndarray) -> float:
    """Fraction of decisions (argmax, or logit > 0) that are the same as eager's."""
    if decision == "argmax":
        return float((expected.argmax(1) == actual.argmax(1)).mean())
    return float(((expected > 0) == (actual > 0)).mean())
