"""Task inference, label encoding and input validation (numpy only).

All problems of all files are collected before training starts and raised together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.series import SeriesData
from pipeline.errors import DataError
from runtime.inputs import not_numbers_text, parse_numbers, plural, rows_text
from runtime.tasks import TASKS

# More distinct integer labels than this are taken for a regression target when inferring the task.
MAX_INFERRED_CLASSES = 50
# Nor is a column where more than this fraction of the series have a label of their own (ids, amounts).
MAX_DISTINCT_FRACTION = 0.5
MIN_SERIES_FOR_FRACTION = 20


@dataclass(frozen=True)
class LabelEncoding:
    """How raw labels map to training targets; saved with the run."""

    task: str
    classes: tuple[str, ...] | None  # class names in index order (binary, multiclass)
    n_outputs: int  # width of the model's raw output

    def to_dict(self) -> dict:
        return {"task": self.task, "classes": list(self.classes) if self.classes else None,
                "n_outputs": self.n_outputs}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelEncoding":
        return cls(d["task"], tuple(d["classes"]) if d["classes"] else None, d["n_outputs"])


def _where(data: SeriesData, mask: np.ndarray) -> str:
    """The series under `mask` as the runtime names them: file lines of text files, 0-based array rows."""
    return rows_text(np.flatnonzero(mask), data.lines)


def _natural_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _too_many_classes(distinct: int, n: int) -> bool:
    """Labels that cannot be classes: too many, each series its own (3 or more), or, from 20 series on,
    more than half of them distinct."""
    return (distinct > MAX_INFERRED_CLASSES or (distinct == n and n >= 3)
            or (n >= MIN_SERIES_FOR_FRACTION and distinct > n * MAX_DISTINCT_FRACTION))


def infer_task(data: SeriesData) -> tuple[str, str]:
    """Guess the task from the training labels; returns (task, the reason to print).

    Never a class task where nearly every series has a label of its own, and never class names because
    a few cells of a numeric column are not numbers (those are reported instead)."""
    y = data.y
    if data.labels_are_classes:
        return "multiclass", f"{data.source} declares class labels"
    if y.dtype.kind == "U":
        numbers, bad = parse_numbers(y)
        if bad.sum() <= MAX_DISTINCT_FRACTION * bad.size:  # mostly numbers: the rest are typos or gaps
            rows = bad.reshape(len(y), -1).any(axis=1)
            raise DataError([f"{data.labels_text} {_where(data, rows)}: {not_numbers_text(y, bad)}; "
                             "the other labels are numbers, so fix or drop those rows (or pass --task multiclass "
                             "if the labels are class names)"])
        distinct = len(np.unique(y))
        if _too_many_classes(distinct, len(y)):
            raise DataError([f"{data.labels_text} holds {distinct} different names for {len(y)} "
                             "series, too many to be classes; pass --task (and --target-column if this is not "
                             "the label)"])
        return "multiclass", f"{data.label_field} holds class names"
    finite = y[np.isfinite(y)]
    integral = finite.size > 0 and bool(np.all(finite == np.round(finite)))
    if y.ndim == 2 and y.shape[1] > 1:
        if integral and set(np.unique(finite).tolist()) <= {0.0, 1.0}:
            return "multilabel", f"{data.label_field} is a 0/1 matrix with {y.shape[1]} columns"
        return "regression", f"{data.label_field} has {y.shape[1]} real-valued columns"
    distinct = np.unique(finite)
    if integral and set(distinct.tolist()) <= {0.0, 1.0}:
        return "binary", f"{data.label_field} holds only 0 and 1"
    if integral and distinct.min() >= 0 and not _too_many_classes(len(distinct), len(y)):
        return "multiclass", (f"{data.label_field} holds {len(distinct)} distinct integers "
                              "(pass --task count or --task regression if they are amounts)")
    return "regression", f"{data.label_field} holds real numbers"


def fit_encoding(task: str, train: SeriesData) -> LabelEncoding:
    """Classes and output width from the training labels."""
    spec, y = TASKS[task], train.y
    if not spec.has_classes:
        return LabelEncoding(task, None, 1 if y.ndim == 1 else int(y.shape[1]))
    if y.dtype.kind == "U":
        classes = tuple(sorted(set(y.tolist()), key=_natural_key))
    elif spec.scores == "sigmoid":  # one logit for two classes
        classes = ("0", "1")
    else:  # integer labels are class indices 0..max
        finite = y[np.isfinite(y)] if y.ndim == 1 else np.array([0.0])
        top = int(finite.max()) if finite.size and np.all(finite == np.round(finite)) else 0
        classes = tuple(str(i) for i in range(max(top, 0) + 1))
    return LabelEncoding(task, classes, 1 if spec.scores == "sigmoid" else max(len(classes), 2))


def encode_labels(enc: LabelEncoding, data: SeriesData, problems: list[str]) -> np.ndarray | None:
    """Targets in the task's dtype and shape, or None with the reasons appended to `problems` (the task's
    own encoding, the one the runtime uses for `evaluate`, so both say the same)."""
    where = f"{data.labels_text}"
    if enc.classes and enc.n_outputs == 1 and len(enc.classes) > 2:
        problems.append(f"{where}: has {len(enc.classes)} classes ({', '.join(enc.classes[:5])}); "
                        f"--task {enc.task} needs exactly two (use --task multiclass)")
        return None
    targets, found = TASKS[enc.task].encode(data.y, enc.classes, enc.n_outputs, where, data.lines)
    problems.extend(found)
    return targets


def check_classes(enc: LabelEncoding, data: SeriesData, targets: np.ndarray, problems: list[str]) -> None:
    """A class task needs at least two classes among its training labels, or there is nothing to learn."""
    if not TASKS[enc.task].has_classes:
        return
    present = np.unique(targets)
    if len(present) < 2:
        only = enc.classes[int(present[0])] if len(present) else "none"
        problems.append(f"{data.labels_text}: every training label is the same class ('{only}'); "
                        f"--task {enc.task} needs at least two classes to learn from (check --target-column, "
                        "or use --task regression for a constant target)")


def check_series(data: SeriesData, problems: list[str], channels: int | None = None,
                 length: int | None = None, fixed_length_model: str | None = None) -> None:
    """NaN/Inf in the series and channel/length mismatches against the training data."""
    X = data.X
    if channels is not None and X.shape[1] != channels:
        problems.append(f"{data.source}: series have {plural(X.shape[1], 'channel')} but the training data has "
                        f"{channels}; all files must have the same channels")
    if length is not None and fixed_length_model and X.shape[2] != length:
        problems.append(f"{data.source}: series have length {X.shape[2]} but --model {fixed_length_model} "
                        f"was built for the training length {length}; use --model fcn or resnet for "
                        "any length")
    if data.windows is not None:  # windows of recordings: their samples were checked as the recordings were read
        return
    bad = _nonfinite_rows(X)
    if bad.any():
        problems.append(f"{data.source}: series {_where(data, bad)} contain NaN or Inf; fill or drop missing "
                        "values (or pass --pad for unequal-length .ts files)")


def _nonfinite_rows(X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    # Chunked so a memory-mapped file is scanned without loading it whole.
    out = np.zeros(len(X), dtype=bool)
    for start in range(0, len(X), chunk):
        block = np.asarray(X[start:start + chunk])
        out[start:start + chunk] = ~np.isfinite(block).reshape(len(block), -1).all(1)
    return out


def stratified_split(targets: np.ndarray, fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices; classes keep their proportions when `stratify`."""
    rng = np.random.default_rng(seed)
    n = len(targets)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    if not stratify:
        perm = rng.permutation(n)
        n_val = max(1, int(round(n * fraction)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    keys = targets.reshape(n, -1)[:, 0]
    val = []
    for value in np.unique(keys):
        rows = rng.permutation(np.flatnonzero(keys == value))
        take = int(round(len(rows) * fraction))
        if len(rows) > 1:
            take = min(max(take, 1), len(rows) - 1)
        val.extend(rows[:take].tolist())
    val = np.sort(np.array(val, dtype=np.int64))
    train = np.setdiff1d(np.arange(n), val)
    return train, val
