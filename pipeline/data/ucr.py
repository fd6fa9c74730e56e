"""Readers for the UCR archive's .tsv files and the UCR/UEA .ts format (numpy only, no torch); called by
`read_series` in pipeline/data/readers.py; `SeriesData` and the label parsing are in pipeline/data/series.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.series import SeriesData, is_number, parse_labels
from pipeline.errors import DataError


def read_ucr_tsv(path: Path, labels: bool) -> SeriesData:
    """UCR archive 2018 .tsv: label first, then the series, tab separated, no header."""
    name = path.name
    problems, series, raw_labels, lines = [], [], [], []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            cells = line.rstrip("\n").split("\t")
            if len(cells) < 2:
                problems.append(f"{name}: line {line_no} has no tab-separated values; UCR .tsv rows are "
                                "'label<TAB>v1<TAB>v2...'")
                continue
            try:
                series.append([float(c) for c in cells[1:]])
            except ValueError:
                bad = next(c for c in cells[1:] if not is_number(c))
                problems.append(f"{name}: line {line_no}: '{bad}' is not a number; series values must be numeric")
                continue
            if labels and not cells[0].strip():
                problems.append(f"{name}: line {line_no}: the label (the first value) is missing; every series "
                                "needs one")
                continue
            raw_labels.append(cells[0])
            lines.append(line_no)
            if len(problems) >= 20:
                break
    lengths = {len(s) for s in series}
    if len(lengths) > 1:
        problems.append(f"{name}: rows have different lengths ({min(lengths)}..{max(lengths)}); "
                        "every series in a .tsv must have the same length")
    if problems:
        raise DataError(problems)
    if not series:
        raise DataError([f"{name}: is empty; it needs one series per line"])
    X = np.asarray(series, dtype=np.float32)[:, None, :]
    y = np.array([s.strip() for s in raw_labels], dtype=str) if labels else None
    return SeriesData(X, y, name, "label column 1", labels_are_classes=True, lines=np.asarray(lines))


def read_ts(path: Path, pad: bool, labels: bool) -> SeriesData:
    """UCR/UEA sktime .ts: '@' header lines, then 'dim1:dim2:...:label' per case."""
    name = path.name
    header: dict[str, str] = {}
    cases: list[list[list[float]]] = []
    raw_labels: list[str] = []
    lines: list[int] = []
    problems: list[str] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    problems.append(f"{name}: line {line_no}: expected an '@' header line or '@data' before "
                                    "the series; this is not a valid .ts file")
                    break
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                else:
                    header[key] = value.strip()
                continue
            has_label = header.get("classlabel", "false").split(" ")[0].lower() == "true" or \
                header.get("targetlabel", "false").lower().startswith("true")
            fields = line.split(":")
            label = fields.pop().strip() if has_label else None
            if has_label and (not fields or not label):
                problems.append(f"{name}: line {line_no}: the label is missing; with @classLabel/@targetLabel true "
                                "each series ends in ':label'")
                continue
            try:
                dims = [[float("nan") if v.strip() == "?" else float(v) for v in d.split(",")] for d in fields]
            except ValueError as exc:
                problems.append(f"{name}: line {line_no}: {exc}; series values must be numbers or '?'")
                continue
            cases.append(dims)
            raw_labels.append(label)
            lines.append(line_no)
            if len(problems) >= 20:
                break
    if not in_data and not problems:
        problems.append(f"{name}: no '@data' line; a .ts file needs its header and then '@data'")
    if problems:
        raise DataError(problems)
    if not cases:
        raise DataError([f"{name}: has no series after '@data'"])
    X = _stack_ts_cases(name, cases, header, pad)
    y = None
    if labels and raw_labels[0] is not None:
        is_class = header.get("classlabel", "false").lower().startswith("true")
        y = np.array(raw_labels, dtype=str) if is_class else parse_labels(raw_labels)
        return SeriesData(X, y, name, "the class label", labels_are_classes=is_class, lines=np.asarray(lines))
    if labels:
        raise DataError([f"{name}: has no labels (@classLabel/@targetLabel false); training needs labelled series"])
    return SeriesData(X, None, name, "", lines=np.asarray(lines))


def _stack_ts_cases(name: str, cases: list[list[list[float]]], header: dict[str, str], pad: bool) -> np.ndarray:
    n_dims = {len(c) for c in cases}
    if len(n_dims) > 1:
        raise DataError([f"{name}: cases have different numbers of dimensions ({sorted(n_dims)}); "
                         "every case needs the same channels"])
    lengths = [len(d) for c in cases for d in c]
    max_len = max(lengths)
    if min(lengths) != max_len and not pad:
        raise DataError([f"{name}: series have unequal lengths ({min(lengths)}..{max_len}); pass --pad to "
                         "right-pad each series with its last value to length "
                         f"{max_len}"])
    X = np.empty((len(cases), len(cases[0]), max_len), dtype=np.float32)
    for i, case in enumerate(cases):
        for c, values in enumerate(case):
            X[i, c, : len(values)] = values
            X[i, c, len(values):] = values[-1]
    return X
