"""Run every exported graph on a grid of shapes and compare with eager PyTorch, collecting all failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from export.graphs import as_tuple
from runtime.compare import Comparison, Row, compare, format_table

if TYPE_CHECKING:
    from export.thresholds import Allowance

BATCH_SIZES = (1, 2, 7, 64)


class VerificationError(Exception):
    """Exported graphs disagree with eager PyTorch; carries every failing check."""

    def __init__(self, failures: list[Row], atol: float, rtol: float):
        self.failures = failures
        super().__init__(f"{len(failures)} exported output(s) disagree with eager PyTorch "
                         f"(atol {atol:g}, rtol {rtol:g}):\n" + format_table(failures))


@dataclass(frozen=True)
class Case:
    """One input set for a graph, with a label such as 'batch=7 length=64'."""

    label: str
    inputs: tuple[torch.Tensor, ...]


def verify_graph(graph: str, eager: torch.nn.Module, engines: dict[str, Callable], cases: list[Case],
                 output_names: tuple[str, ...], atol: float, rtol: float, decision: str | None = None,
                 allowance: Callable[[Case], Allowance | None] | None = None) -> list[Row]:
    """One row per engine x case x output; decision agreement ('argmax' or 'threshold') for raw scores.
    `allowance`: per case, the differences near-threshold comparisons may cause (export.thresholds)."""
    rows = []
    for case in cases:
        with torch.inference_mode():
            expected = [t.numpy() for t in as_tuple(eager(*case.inputs))]
        allowed = allowance(case) if allowance is not None and engines else None
        for engine, run in engines.items():
            try:
                actual = [np.asarray(a) for a in run(case.inputs)]
            except Exception as exc:
                failed = f"failed to run: {str(exc).splitlines()[0] if str(exc) else exc}"
                rows.append(Row.of(graph, engine, "*", case.label, Comparison(problem=failed)))
                continue
            for i, (name, e, a) in enumerate(zip(output_names, expected, actual)):
                extra = allowed.outputs[i] if allowed is not None else None
                row = Row.of(graph, engine, name, case.label, compare(e, a, atol, rtol, extra))
                if allowed is not None:
                    row = replace(row, near_threshold=allowed.near_ties,
                                  threshold_allowance=float(extra.max()) if extra.size else 0.0)
                if decision and name == output_names[0] and row.problem is None:
                    row = replace(row, agreement=_agreement(decision, e, a))
                rows.append(row)
    return rows


def _agreement(decision: str, expected: np.ndarray, actual: np.ndarray) -> float:
    """Fraction of decisions (argmax, or logit > 0) that are the same as eager's."""
    if decision == "argmax":
        return float((expected.argmax(1) == actual.argmax(1)).mean())
    return float(((expected > 0) == (actual > 0)).mean())
