"""Long recordings (train --window): per-sample .csv tables, .npz arrays, or a folder of either (one file per
recording), read into one `Recordings`, then cut into windows by runtime.windows (numpy only, no torch).

A per-sample .csv has one row per time step: one column per channel, the label column (--target-column,
default the last), optionally a recording-id column (--recording-column) and a time column (--time-column,
which must increase within each recording). An .npz holds X (recordings, channels, samples) or
(channels, samples) and y per recording ((recordings,) or (recordings, K)) or per time step ((recordings,
samples) or (samples,)). Every problem names the file, the line (or recording and sample) and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.readers import csv_header
from pipeline.data.series import SeriesData, is_number, parse_labels
from pipeline.errors import DataError
from runtime.inputs import plural
from runtime.windows import window_labels, window_starts, window_view

RECORDING_SUFFIXES = (".csv", ".npz")
MAX_PROBLEMS = 20


@dataclass
class Recordings:
    """Recordings of one file (or folder), end to end: samples (C, total) and where each recording starts."""

    samples: np.ndarray  # (C, total samples) float32, the recordings one after another
    offsets: np.ndarray  # (R + 1,) int64: recording r is samples[:, offsets[r]:offsets[r + 1]]
    names: list[str]  # each recording's name in messages ("walk.csv", "rec.csv: recording 'a'", "x.npz: recording 3")
    ids: list[str]  # each recording's id in prediction tables (the id column's value, the file name, or its index)
    labels: np.ndarray | None  # per step (total,) / (total, K), or per recording (R,) / (R, K); floats or str
    per_step: bool  # labels per time step (else per recording)
    source: str  # the file or folder name
    label_field: str  # "column 'label'" or "array 'y'"
    lines: np.ndarray | None = None  # (total,) 1-based file line of each sample (.csv); None for arrays
    label_columns: tuple[str, ...] = ()  # .csv: the label columns
    columns: int = 0  # .csv: columns per row
    channel_names: tuple[str, ...] = ()  # .csv with a header: the signal columns, in channel order
    times: np.ndarray | None = None  # (total,) each sample's --time-column value (.csv with one); None otherwise

    def by_name(self, names: list[str] | tuple[str, ...]) -> "Recordings":
        """These recordings with their channels in the order of `names` (header names of the signal columns, as
        training read them): a .csv whose columns are in another order is matched by name, not position; a
        missing name is refused, naming the order expected. Recordings without names (.npz, a .csv without a
        header) are taken by position."""
        names = tuple(names)
        if not names or not self.channel_names or self.channel_names == names:
            return self
        missing = [n for n in names if n not in self.channel_names]
        if missing:
            raise DataError([f"{self.source}: no column {', '.join(repr(n) for n in missing)}; the model reads the "
                             f"channels {', '.join(repr(n) for n in names)} (matched by header name, in any order); "
                             f"this file's signal columns are {', '.join(repr(n) for n in self.channel_names)}"])
        order = [self.channel_names.index(n) for n in names]
        return dataclasses.replace(self, samples=np.ascontiguousarray(self.samples[order]), channel_names=names)

    @property
    def count(self) -> int:
        return len(self.names)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class WindowedSeries:
    """The windows of recordings as an (N, C, length) array-like, cut on demand: indexing with an int, a slice
    or an index array returns float32 windows; the recordings are held once, never as overlapping copies."""

    def __init__(self, recordings: Recordings, recording: np.ndarray, starts: np.ndarray, length: int,
                 horizon: int = 0):
        self.recordings = recordings
        self.horizon = horizon  # --task forecast: each window's target is the next `horizon` samples after it
        self.recording = recording  # (N,) which recording each window comes from
        self.starts = starts  # (N,) first sample of each window within its recording
        self.length = length
        self.first = recordings.offsets[recording] + starts  # (N,) first sample in recordings.samples
        self.shape = (len(starts), recordings.samples.shape[0], length)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return window_view(self.recordings.samples, self.first[[index]], self.length)[0]
        return window_view(self.recordings.samples, self.first[index], self.length)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


def read_recordings(path: str | Path, target_column: str | None = None, recording_column: str | None = None,
                    time_column: str | None = None, labels: bool = True,
                    channels: list[str] | tuple[str, ...] | None = None) -> Recordings:
    """Recordings from a per-sample .csv, an .npz, or a folder of them (one recording per file, by name).
    A .csv's signal columns are matched by header name to `channels` (a bundle's, as it was trained), else to
    the first .csv of a folder's, so files with their columns in another order never swap channels."""
    path = Path(path)
    if not path.exists():
        raise DataError([f"{path}: file not found; check the path given to --data"])
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in RECORDING_SUFFIXES) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataError([f"{path}: holds no .csv or .npz files; put one recording per file in the folder"])
    parts, problems = [], []
    for file in files:
        try:
            parts.append(_read_file(file, target_column, recording_column, time_column, labels))
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems)
    reference = channels or next((p.channel_names for p in parts if p.channel_names), ())
    parts = [p.by_name(reference) for p in parts]
    return parts[0] if len(parts) == 1 else _join(parts, f"{path.name}/", problems)


def _read_file(path: Path, target_column, recording_column, time_column, labels: bool) -> Recordings:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, target_column, recording_column, time_column, labels)
    if suffix == ".npz":
        return _read_npz(path, labels)
    raise DataError([f"{path}: unsupported file type '{suffix}' for recordings (--window); use a per-sample .csv "
                     "or an .npz, or a folder of them"])


def _join(parts: list[Recordings], source: str, problems: list[str]) -> Recordings:
    """One Recordings of several files (a folder): their recordings in file-name order."""
    kinds = {p.per_step for p in parts}
    channels = {p.samples.shape[0] for p in parts}
    if len(channels) > 1:
        raise DataError([f"{source}: files have {sorted(channels)} channels; every recording needs the same channels"])
    if len(kinds) > 1:
        raise DataError([f"{source}: some files label every time step and others the whole recording; label all "
                         "the same way"])
    have = [p.labels is not None for p in parts]
    labels = None
    if all(have):
        if len({p.labels.dtype.kind == "U" for p in parts}) > 1:
            raise DataError([f"{source}: some files have number labels and others names; a label is one kind in "
                             "every file (make them all names or all numbers)"])
        labels = np.concatenate([p.labels for p in parts])
    sizes = np.concatenate([[0], np.cumsum([p.samples.shape[1] for p in parts])])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + sizes[i] for i, p in enumerate(parts)])
    lines = None if any(p.lines is None for p in parts) else np.concatenate([p.lines for p in parts])
    times = None if any(p.times is None for p in parts) else np.concatenate([p.times for p in parts])
    return Recordings(np.concatenate([p.samples for p in parts], axis=1), offsets.astype(np.int64),
                      sum((p.names for p in parts), []), sum((p.ids for p in parts), []), labels, parts[0].per_step,
                      source, parts[0].label_field, lines, parts[0].label_columns, parts[0].columns,
                      next((p.channel_names for p in parts if p.channel_names), ()), times)


def _column(name: str, header: list[str] | None, width: int, flag: str, given: str) -> int:
    if header and given in header:
        return header.index(given)
    if given.lstrip("-").isdigit() and -width <= int(given) < width:
        return int(given) % width
    known = f"columns are {', '.join(header)}" if header else f"the file has {width} unnamed columns"
    raise DataError([f"{name}: {flag} '{given}' not found; {known} (give a header name or a 0-based column number)"])


def _read_csv(path: Path, target_column, recording_column, time_column, labels: bool) -> Recordings:
    name = path.name
    with open(path, newline="") as f:
        reader = csv.reader(f)
        numbered = [(reader.line_num, r) for r in reader if r]
    if not numbered:
        raise DataError([f"{name}: is empty; a recording needs one row per time step"])
    header = csv_header(numbered[0][1], target_column)
    rows = numbered[1:] if header else numbered
    width = len(numbered[0][1])
    targets = ([_column(name, header, width, "--target-column", t.strip()) for t in target_column.split(",")]
               if target_column else ([width - 1] if labels else []))
    rec = _column(name, header, width, "--recording-column", recording_column) if recording_column else None
    time = _column(name, header, width, "--time-column", time_column) if time_column else None
    channels = [j for j in range(width) if j not in targets and j != rec and j != time]
    col = lambda j: f"'{header[j]}'" if header else str(j)  # noqa: E731
    if not channels:
        raise DataError([f"{name}: no column is left for the signal after the label, recording and time columns"])
    if not rows:
        raise DataError([f"{name}: has a header but no data rows; a recording needs one row per time step"])
    problems: list[str] = []
    values = np.full((len(rows), len(channels)), np.nan, dtype=np.float32)
    raw_labels, ids, times, lines = [], [], [], np.array([line for line, _ in rows])
    refused: set[int] = set()  # signal columns already reported as text
    label_kinds: dict[int, str] = {}  # per label column: "number" or "text", the kind of its first label
    for i, (line, row) in enumerate(rows):
        if len(problems) >= MAX_PROBLEMS:
            problems.append(f"{name}: stopped after {MAX_PROBLEMS} problems")
            break
        if len(row) != width:
            problems.append(f"{name}: line {line} has {plural(len(row), 'value')}, expected {width}; every row needs "
                            "the same columns")
            continue
        for k, j in enumerate(channels):
            try:
                values[i, k] = float(row[j])
            except ValueError:
                if j not in refused:  # once per column: a text column is one problem, not one per row
                    refused.add(j)
                    problems.append(f"{name}: line {line} column {col(j)}: '{row[j]}' is not a number; samples must "
                                    "be numeric (a column that names recordings is --recording-column, a time "
                                    "column --time-column)")
                break
            if not np.isfinite(values[i, k]):
                problems.append(f"{name}: line {line} column {col(j)}: the sample is {row[j].strip()}; fill or drop "
                                "missing samples (every sample of a recording must be a number)")
                break
        cells = [row[j].strip() for j in targets]
        for j, cell in zip(targets, cells):
            kind = "number" if is_number(cell) else "text"
            if not cell:
                problems.append(f"{name}: line {line} column {col(j)}: the label is missing; every time step needs "
                                "one (drop unlabelled rows, or use pipeline predict for them)")
            elif j not in label_kinds:
                label_kinds[j] = kind
            elif kind != label_kinds[j]:
                said = {"number": ("a number", "numbers"), "text": ("a name", "names")}
                problems.append(f"{name}: line {line} column {col(j)}: '{cell}' is {said[kind][0]} but the labels "
                                f"above it are {said[label_kinds[j]][1]}; a label column holds one kind (fix the cell, "
                                "or make every label a name)")
        raw_labels.append(cells)
        ids.append(row[rec].strip() if rec is not None else "")
        if time is not None:
            try:
                times.append(float(row[time]))
            except ValueError:
                problems.append(f"{name}: line {line} column {col(time)}: '{row[time]}' is not a time; the time "
                                "column must hold numbers")
                times.append(np.nan)
    if problems:
        raise DataError(problems)
    order, names, id_list, offsets = _group(name, ids, rec is not None)
    if time is not None:
        _check_time(name, np.asarray(times)[order], offsets, lines[order], col(time))
    y = None
    if targets:
        columns = [parse_labels([r[k] for r in raw_labels]) for k in range(len(targets))]
        y = columns[0] if len(columns) == 1 else np.stack(columns, axis=1)
        y = y[order]
    field = ", ".join(col(j) for j in targets)
    label_columns = tuple(header[j] if header else str(j) for j in targets)
    return Recordings(np.ascontiguousarray(values[order].T), offsets, names, id_list, y, True, name,
                      f"column {field}", lines[order], label_columns, width,
                      tuple(header[j] for j in channels) if header else (),
                      np.asarray(times, dtype=np.float64)[order] if time is not None else None)


def _group(name: str, ids: list[str], has_column: bool):
    """Rows of each recording together (in the order recordings first appear, rows in file order)."""
    if not has_column:
        return np.arange(len(ids)), [name], [Path(name).stem], np.array([0, len(ids)], dtype=np.int64)
    distinct = list(dict.fromkeys(ids))
    index = {r: i for i, r in enumerate(distinct)}
    codes = np.array([index[r] for r in ids])
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(distinct))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, [f"{name}: recording '{r}'" for r in distinct], distinct, offsets


def _check_time(name: str, times: np.ndarray, offsets: np.ndarray, lines: np.ndarray, column: str) -> None:
    for r in range(len(offsets) - 1):
        t = times[offsets[r]:offsets[r + 1]]
        back = np.flatnonzero(~(np.diff(t) > 0))
        if len(back):
            line = lines[offsets[r] + back[0] + 1]
            raise DataError([f"{name}: line {line} column {column}: time {t[back[0] + 1]:g} does not come after "
                             f"{t[back[0]]:g}; sort each recording's rows by time (the windows follow the row order)"])


def _read_npz(path: Path, labels: bool) -> Recordings:
    name = path.name
    try:
        archive = np.load(path, allow_pickle=False)
        X = archive["X"] if "X" in archive.files else None
        y = archive["y"] if labels and "y" in archive.files else None
    except Exception as exc:  # not a zip, an object array, a damaged member
        raise DataError([f"{name}: not a readable .npz archive ({str(exc).splitlines()[0]}); save it with "
                         "numpy.savez(X=..., y=...)"]) from None
    if X is None:
        raise DataError([f"{name}: has no array 'X'; save recordings as X=(recordings, channels, samples) or "
                         "(channels, samples)"])
    if labels and y is None:
        raise DataError([f"{name}: has no array 'y'; save labels per recording y=(recordings,) or per time step "
                         "y=(recordings, samples)"])
    if X.dtype.kind not in "biuf" or X.ndim not in (2, 3):
        raise DataError([f"{name}: array 'X' has shape {X.shape} and dtype {X.dtype}; save numbers shaped "
                         "(recordings, channels, samples) or (channels, samples)"])
    single = X.ndim == 2
    X = X[None] if single else X
    R, C, T = X.shape
    per_step = False
    if y is not None:
        if y.dtype.kind in "US":
            y = y.astype(str)
        elif y.dtype.kind not in "biuf":
            raise DataError([f"{name}: array 'y' has dtype {y.dtype}; labels must be numbers or strings"])
        y = y.astype(np.float64) if y.dtype.kind != "U" else y
        if single:
            y = y.reshape(1, -1) if y.ndim == 1 and len(y) == T else y.reshape(1, *y.shape[1:]) if y.ndim else y[None]
        if y.ndim >= 2 and y.shape[:2] == (R, T):
            per_step, y = True, y.reshape(R * T, *y.shape[2:])
        elif len(y) != R:
            raise DataError([f"{name}: X holds {plural(R, 'recording')} of {T} samples but y has shape {y.shape}; "
                             "save a label per recording (recordings,) or per time step (recordings, samples)"])
    bad = ~np.isfinite(X).all(axis=1)  # (R, T)
    if bad.any():
        r, t = np.argwhere(bad)[0]
        raise DataError([f"{name}: array 'X' recording {r} sample {t} is NaN or Inf; fill or drop missing samples "
                         "(recordings of different lengths go in separate files of a folder)"])
    samples = np.ascontiguousarray(X.transpose(1, 0, 2).reshape(C, R * T), dtype=np.float32)
    names = [name] if single else [f"{name}: recording {r}" for r in range(R)]
    ids = [Path(name).stem] if single else [f"{Path(name).stem}:{r}" for r in range(R)]
    offsets = np.arange(R + 1, dtype=np.int64) * T
    return Recordings(samples, offsets, names, ids, y, per_step, name, "array 'y'")


def cut_windows(recs: Recordings, length: int, stride: int, rule: str, min_length: int | None = None) -> SeriesData:
    """Windows of `length` every `stride` samples of every recording, labelled by `rule` (or per recording),
    as SeriesData whose X cuts windows on demand; `windows` says where each came from. Rule `each` keeps the
    labels per sample (y (total,) or (total, K), lines per sample): pipeline.data.load cuts them after encoding."""
    short = [(n, int(size)) for n, size in zip(recs.names, recs.lengths()) if size < length]
    if short:
        shown = "; ".join(f"{n} has {plural(size, 'sample')}" for n, size in short[:5])
        more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
        raise DataError([f"{shown}{more}: shorter than one window of --window {length}; lower --window or drop "
                         "recordings that short"])
    per_rec = [window_starts(int(size), length, stride) for size in recs.lengths()]
    recording = np.concatenate([np.full(len(s), r, dtype=np.int64) for r, s in enumerate(per_rec)])
    starts = np.concatenate(per_rec)
    X = WindowedSeries(recs, recording, starts, length)
    y = lines = None
    if recs.labels is not None:
        if recs.per_step and rule == "each":  # every sample's label, encoded as such, then cut (runtime.segments)
            y, lines = recs.labels, recs.lines
        elif recs.per_step:
            y = window_labels(recs.labels, X.first, length, rule)
            # messages about a window's label name the line of its labelling sample (majority: its last)
            at = X.first + (length // 2 if rule == "center" else length - 1)
            lines = None if recs.lines is None else recs.lines[at]
        else:
            y = recs.labels[recording]
    elif recs.lines is not None:
        lines = recs.lines[X.first + length - 1]
    data = SeriesData(X, y, recs.source, recs.label_field, lines=lines, label_columns=recs.label_columns,
                      columns=recs.columns, windows=X)
    return data


def target_channels(recs: Recordings, columns: str | None) -> tuple[list[int], list[str]]:
    """--forecast-columns as channel indices and names: header names or 0-based indices, default every channel."""
    names = list(recs.channel_names) or [str(c) for c in range(recs.samples.shape[0])]
    if columns is None:
        return list(range(len(names))), names
    picked = []
    for item in (part.strip() for part in columns.split(",")):
        if item in names:
            picked.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            picked.append(int(item))
        else:
            raise DataError([f"{recs.source}: --forecast-columns '{item}' is not a signal column; the channels are "
                             f"{', '.join(repr(n) for n in names)} (by header name or 0-based index)"])
    if len(set(picked)) != len(picked):
        raise DataError([f"--forecast-columns {columns}: names a channel twice; name each target once"])
    return picked, [names[c] for c in picked]


def cut_forecast_windows(recs: Recordings, length: int, stride: int, horizon: int, targets: list[int]) -> SeriesData:
    """--task forecast: windows of `length` every `stride` samples whose next `horizon` samples lie in the same
    recording; each window's target is those samples of the target channels, flat (T * H, runtime.forecast)."""
    short = [(n, int(size)) for n, size in zip(recs.names, recs.lengths()) if size < length + horizon]
    if short:
        shown = "; ".join(f"{n} has {plural(size, 'sample')}" for n, size in short[:5])
        more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
        raise DataError([f"{shown}{more}: shorter than one window of --window {length} and its --horizon {horizon}; "
                         "lower --window or --horizon, or drop recordings that short"])
    per_rec = [window_starts(int(size) - horizon, length, stride) for size in recs.lengths()]
    recording = np.concatenate([np.full(len(s), r, dtype=np.int64) for r, s in enumerate(per_rec)])
    X = WindowedSeries(recs, recording, np.concatenate(per_rec), length, horizon)
    future = window_view(recs.samples[targets], X.first + length, horizon)  # (N, T, H)
    return SeriesData(X, future.reshape(len(future), -1).astype(np.float64), recs.source,
                      f"the next {plural(horizon, 'sample')} of each window", windows=X)
