"""Targets for the loss graph: raw labels encoded with the bundle's classes, and checked (numpy only)."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.inputs import as_array, not_numbers_text, number_text, parse_numbers, rows_text


def encode_labels(task: str, classes: list[str] | None, n_outputs: int, y, name: str = "y",
                  lines: np.ndarray | None = None) -> np.ndarray:
    """Raw labels (class names or numbers) as the targets the loss graph takes.

    multiclass -> (N,) int64 class index; binary -> (N, 1) float32 0/1 by class name;
    multilabel, count, regression -> (N, K) float32.
    """
    y = np.asarray(y)
    if y.ndim == 0:
        raise InputError(f"{name}: is a single value; pass one label per series")
    if task in ("multiclass", "binary"):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise InputError(f"{name}: has shape {y.shape}; a {task} bundle takes one class label per series")
        index = {c: i for i, c in enumerate(classes)}
        texts = [number_text(v).strip() for v in y.tolist()]  # 7.0 -> '7', ' a' -> 'a'
        unknown = np.array([t not in index for t in texts], dtype=bool)
        if unknown.any():
            first = texts[int(np.flatnonzero(unknown)[0])]
            raise InputError(f"{name} {rows_text(np.flatnonzero(unknown), lines)}: class '{first}' is not one of the "
                             f"bundle's classes ({', '.join(classes[:10])})")
        idx = np.array([index[t] for t in texts], dtype=np.int64)
        return idx if task == "multiclass" else idx.astype(np.float32)[:, None]
    if y.dtype.kind in "US":  # numbers read from a text file
        numbers, bad = parse_numbers(y)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(y), -1).any(axis=1))
            raise InputError(f"{name} {rows_text(rows, lines)}: {not_numbers_text(y, bad)}; a {task} bundle takes "
                             "numbers as labels")
        y = numbers
    return check_targets(task, n_outputs, y, name, lines)


def check_targets(task: str, n_outputs: int, target, name: str = "target",
                  lines: np.ndarray | None = None) -> np.ndarray:
    """Encoded targets in the loss graph's dtype and shape, with values the task allows."""
    target = as_array(target, name)
    if task == "multiclass":
        if target.ndim != 1:
            raise InputError(f"{name}: has shape {target.shape}; multiclass targets are class indices (N,)")
        bad = (target != np.round(target)) | (target < 0) | (target >= n_outputs)
        if bad.any():
            first = number_text(target[bad][0])
            raise InputError(f"{name} {rows_text(np.flatnonzero(bad), lines)}: {first} is not a class index "
                             f"0..{n_outputs - 1}")
        return target.astype(np.int64)
    if target.ndim == 1 and n_outputs == 1:
        target = target[:, None]
    if target.ndim != 2 or target.shape[1] != n_outputs:
        raise InputError(f"{name}: has shape {target.shape}; {task} targets are (N, {n_outputs})"
                         + (" or (N,)" if n_outputs == 1 else ""))
    target = target.astype(np.float32)
    bad = ~np.isfinite(target).all(axis=1)
    if bad.any():
        raise InputError(f"{name} {rows_text(np.flatnonzero(bad), lines)}: NaN or Inf; every series needs a target")
    rules = {"binary": ((target != 0) & (target != 1), "is not 0 or 1"),
             "multilabel": ((target != 0) & (target != 1), "is not 0 or 1"),
             "count": ((target < 0) | (target != np.round(target)), "is not a non-negative integer count")}
    if task in rules:
        bad_cells, why = rules[task]
        bad = bad_cells.any(axis=1)
        if bad.any():
            first = number_text(target[bad_cells][0])
            raise InputError(f"{name} {rows_text(np.flatnonzero(bad), lines)}: {first} {why}")
    return target
