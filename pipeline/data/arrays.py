"""Series and labels given as arrays in memory (the Python API): checked as the file readers check a file, each
problem naming the array ("X", "y", "X_val", ...) and its 0-based rows. numpy only."""

from __future__ import annotations

import numpy as np

from pipeline.data.series import SeriesData
from pipeline.errors import DataError
from runtime.inputs import plural

# the arrays of each split, as the Python API names them
ARRAY_NAMES = {"train": ("X", "y"), "val": ("X_val", "y_val"), "test": ("X_test", "y_test")}


def _as_array(value, name: str, problems: list[str]) -> np.ndarray | None:
    if hasattr(value, "to_numpy"):  # a pandas DataFrame or Series
        value = value.to_numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists, or values numpy cannot hold
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(f"{name}: cannot be read as an array ({first}); pass a numpy array of one shape")
        return None


def _series(X: np.ndarray, name: str, problems: list[str]) -> np.ndarray | None:
    if X.dtype == object:  # numbers held as Python objects (pandas, lists of mixed types): numbers or a problem
        try:
            X = X.astype(np.float64)
        except (ValueError, TypeError):
            problems.append(f"{name}: holds values that are not numbers (dtype object); series must be numeric")
            return None
    if X.dtype.kind not in "biuf":
        problems.append(f"{name}: has dtype {X.dtype}; series must be numeric")
        return None
    if X.ndim not in (2, 3):
        problems.append(f"{name}: has shape {tuple(X.shape)}; it must be (N, C, L) or (N, L)")
        return None
    if X.shape[0] == 0 or X.shape[-1] == 0:
        problems.append(f"{name}: has shape {tuple(X.shape)}; pass at least one series of at least one value")
        return None
    return np.ascontiguousarray(X if X.ndim == 3 else X[:, None, :], dtype=np.float32)


def _labels(y: np.ndarray, name: str, n: int | None, problems: list[str]) -> np.ndarray | None:
    if y.dtype == object:
        kinds = {type(v) for v in y.reshape(-1)}
        if kinds <= {str}:
            y = y.astype(str)
        else:
            try:
                y = y.astype(np.float64)
            except (ValueError, TypeError):
                problems.append(f"{name}: mixes {', '.join(sorted(k.__name__ for k in kinds))} values; labels must "
                                "be all numbers or all strings")
                return None
    if y.dtype.kind in "US":
        y = y.astype(str)
    elif y.dtype.kind not in "biuf":
        problems.append(f"{name}: has dtype {y.dtype}; labels must be numbers or strings")
        return None
    if y.ndim == 0 or y.ndim > 2:
        problems.append(f"{name}: has shape {tuple(y.shape)}; pass one label per series, {name}=(N,) or (N, K)")
        return None
    if n is not None and len(y) != n:
        problems.append(f"{name}: holds {plural(len(y), 'label')} but the series hold {n}; pass one label per "
                        "series (the same number of rows in both)")
        return None
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
        if bad.any():
            rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:10])
            problems.append(f"{name}: rows {rows} hold NaN or Inf; drop those series or give them a label")
            return None
    return y


def series_from_arrays(X, y, split: str = "train", labels: bool = True) -> SeriesData:
    """Series X ((N, L) or (N, C, L)) and labels y ((N,) class names or values, (N, K) multi-hot or values) of
    one split; a DataError lists every problem."""
    x_name, y_name = ARRAY_NAMES[split]
    problems: list[str] = []
    raw = _as_array(X, x_name, problems)
    series = None if raw is None else _series(raw, x_name, problems)
    target = None
    if y is None and labels:
        problems.append(f"{y_name}: is missing; pass one label per series of {x_name}")
    elif y is not None:
        raw_y = _as_array(y, y_name, problems)
        if raw_y is not None:
            target = _labels(raw_y, y_name, None if series is None else len(series), problems)
    if problems:
        raise DataError(problems)
    return SeriesData(series, target, x_name, y_name, in_memory=True)
