"""Readers for .npz, .npy, .csv, UCR .tsv and UCR/UEA .ts files (numpy only, no torch).

Every reader returns a `SeriesData` with X shaped (N, C, L) float32 and the raw labels; problems
are collected and raised together as one `DataError`, each naming the file, the row and the fix.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from pipeline.data import ucr
from pipeline.data.series import SeriesData, is_number, parse_labels
from pipeline.errors import DataError
from runtime.inputs import plural

# Arrays above this size are memory-mapped instead of read into memory.
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
SUFFIXES = (".npz", ".npy", ".csv", ".tsv", ".ts")


def read_series(path: str | Path, target_column: str | None = None, pad: bool = False,
                labels: bool = True) -> SeriesData:
    """Read one data file by its suffix; `labels=False` allows files without labels."""
    path = Path(path)
    if not path.exists():
        raise DataError([f"{path}: file not found; check the path given to --data"])
    if path.is_dir():
        raise DataError([f"{path}: is a folder; pass a data file ({', '.join(SUFFIXES)})"])
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            data = _read_npz(path, labels)
        elif suffix == ".npy":
            data = _read_npy(path, labels)
        elif suffix == ".csv":
            data = _read_csv(path, target_column, labels)
        elif suffix == ".tsv":
            data = ucr.read_ucr_tsv(path, labels)
        elif suffix == ".ts":
            data = ucr.read_ts(path, pad, labels)
        else:
            raise DataError([f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}"])
    except UnicodeDecodeError:
        raise DataError([f"{path.name}: line {_first_undecodable_line(path)} is not UTF-8 text; save the file as "
                         "UTF-8 (text files must be UTF-8)"]) from None
    if data.n == 0:
        raise DataError([f"{path}: holds no series; the file must contain at least one row"])
    return data


def _first_undecodable_line(path: Path) -> int:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _as_ncl(X: np.ndarray, name: str, problems: list[str]) -> np.ndarray | None:
    if X.ndim == 2:
        return X[:, None, :]
    if X.ndim == 3:
        return X
    problems.append(f"{name}: X has shape {tuple(X.shape)}; it must be (N, C, L) or (N, L)")
    return None


def _read_header(f, name: str, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header bytes) of the .npy stream at f, or a DataError naming it."""
    try:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f, max_header_size=10_000)
    except Exception as exc:  # a foreign or truncated header
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        subject = f"{what} is not" if what else "not"
        raise DataError([f"{name}: {subject} a readable .npy array ({first}); save it with numpy.save"]) from None
    return tuple(shape), fortran, dtype, f.tell()


def _check_declared(name: str, what: str, shape: tuple[int, ...], dtype: np.dtype, data_bytes: int) -> None:
    """Refuse object arrays and headers whose shape the file does not hold, before anything is allocated."""
    if dtype.hasobject:
        raise DataError([f"{name}: {what} holds Python objects (dtype {dtype}), which are not loaded because "
                         "unpickling can run code; save numbers, e.g. X.astype(np.float32)"])
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != data_bytes:
        raise DataError([f"{name}: {what} declares shape {shape} of {dtype} ({declared:,} bytes) but the file "
                         f"holds {data_bytes:,} bytes; it is truncated or altered, save it again with numpy"])


def _npz_members(path: Path) -> dict[str, tuple]:
    """Each .npy member's (shape, fortran, dtype, zip entry, header bytes) from the headers alone, checked."""
    members = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            what = f"array '{info.filename[:-4]}'"
            with zf.open(info) as f:
                shape, fortran, dtype, header = _read_header(f, path.name, what)
            _check_declared(path.name, what, shape, dtype, info.file_size - header)
            members[info.filename[:-4]] = (shape, fortran, dtype, info, header)
    return members


def _npz_member_memmap(path: Path, shape, fortran: bool, dtype, info: zipfile.ZipInfo,
                       header: int) -> np.ndarray | None:
    """Memory-map an uncompressed array inside an .npz (np.load cannot mmap zip members); `header` is the
    member's .npy header length, read (and checked) by _npz_members."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size < MMAP_THRESHOLD_BYTES:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + name_len + extra_len + header
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


def _read_npz(path: Path, labels: bool) -> SeriesData:
    name = path.name
    try:
        members = _npz_members(path)
        archive = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:  # zipfile/npy format errors: not an npz at all
        raise DataError([f"{name}: not a readable .npz archive ({exc}); save it with numpy.savez"]) from None
    keys = set(archive.files)
    problems = []
    if "X" not in keys:
        problems.append(f"{name}: has no array 'X' (found {sorted(keys)}); save series as X=(N, C, L) or (N, L)")
    if labels and "y" not in keys:
        problems.append(f"{name}: has no array 'y' (found {sorted(keys)}); save labels as y=(N,) or (N, K)")
    if problems:
        raise DataError(problems)
    X = _npz_member_memmap(path, *members["X"]) if "X" in members else None
    try:
        X = archive["X"] if X is None else X
        y = archive["y"] if "y" in keys and labels else None
    except Exception as exc:  # a member that is not an array numpy reads
        raise DataError([f"{name}: not a readable .npz archive ({exc}); save it with numpy.savez"]) from None
    X = _as_ncl(X, name, problems)
    if y is not None and y.dtype.kind in "US":
        y = y.astype(str)
    elif y is not None and y.dtype.kind not in "biuf":
        problems.append(f"{name}: array 'y' has dtype {y.dtype}; labels must be numbers or strings")
    if y is not None and y.ndim == 0:
        problems.append(f"{name}: array 'y' is a single value; save one label per series, y=(N,) or (N, K)")
    elif y is not None and X is not None and len(y) != len(X):
        problems.append(f"{name}: X holds {len(X)} series but y holds {plural(len(y), 'label')}; save one label per "
                        "series (the same number of rows in both)")
    if X is not None and X.dtype.kind not in "biuf":
        problems.append(f"{name}: array 'X' has dtype {X.dtype}; series must be numeric")
    if problems:
        raise DataError(problems)
    return SeriesData(_float32(X), y, name, "array 'y'")


def _read_npy(path: Path, labels: bool) -> SeriesData:
    name = path.name
    if labels:
        raise DataError([f"{name}: a .npy file holds no labels; save X and y together with numpy.savez"])
    with open(path, "rb") as f:
        shape, _, dtype, header = _read_header(f, name, "")
    _check_declared(name, "the file", shape, dtype, path.stat().st_size - header)
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated, not a .npy, or an object array
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError([f"{name}: not a readable .npy array ({first}); save it with numpy.save"]) from None
    problems: list[str] = []
    X = _as_ncl(X, name, problems)
    if X is not None and X.dtype.kind not in "iuf":
        problems.append(f"{name}: has dtype {X.dtype}; series must be numeric")
    if problems:
        raise DataError(problems)
    # Kept memory-mapped in its own dtype: only prediction reads .npy, and the runtime converts each
    # batch to float32, so a float64 file larger than memory streams through too.
    return SeriesData(X, None, name, "")


def _float32(X: np.ndarray) -> np.ndarray:
    # A float32 memmap stays mapped; anything else is converted in memory.
    return X if X.dtype == np.float32 else X.astype(np.float32)


def _read_csv(path: Path, target_column: str | None, labels: bool) -> SeriesData:
    name = path.name
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        reader = csv.reader(f)
        numbered = [(reader.line_num, r) for r in reader if r]  # the file line where each row ends
    if not numbered:
        raise DataError([f"{name}: is empty; it needs one series per row"])
    if ";" in sample and "," not in sample or "\t" in sample and "," not in sample:
        raise DataError([f"{name}: values are not comma separated; a .csv needs ',' between values "
                         "(UCR tab-separated files must end in .tsv)"])
    header = csv_header(numbered[0][1], target_column)
    if header:
        numbered = numbered[1:]
    width = len(header) if header else len(numbered[0][1]) if numbered else 0
    targets = _target_indices(name, header, width, target_column, labels)
    problems = []
    features, raw_labels, lines = [], [], []
    for line, row in numbered:
        if len(row) != width:
            problems.append(f"{name}: line {line} has {plural(len(row), 'value')}, expected {width}; every row "
                            "must have the same number of columns (pad unequal series yourself)")
            continue
        values = []
        for j, cell in enumerate(row):
            if j in targets:
                continue
            try:
                values.append(float(cell))
            except ValueError:
                col = f"'{header[j]}'" if header else str(j + 1)
                problems.append(f"{name}: line {line} column {col}: '{cell}' is not a number; "
                                "series values must be numeric")
                break
        features.append(values)
        lines.append(line)
        raw_labels.append([row[j].strip() for j in targets])
        for j in targets:
            if not row[j].strip():
                col = f"'{header[j]}'" if header else str(j + 1)
                problems.append(f"{name}: line {line} column {col}: the label is missing; every series needs one "
                                "(drop unlabelled rows, or use pipeline predict for them)")
        if len(problems) >= 20:
            problems.append(f"{name}: stopped after 20 problems")
            break
    if problems:
        raise DataError(problems)
    if not features:
        raise DataError([f"{name}: has a header but no data rows; it needs one series per row"])
    X = np.asarray(features, dtype=np.float32)[:, None, :]
    field = ", ".join(f"'{header[j]}'" if header else str(j + 1) for j in targets)
    y = None
    if targets:
        cols = [parse_labels([r[k] for r in raw_labels]) for k in range(len(targets))]
        y = cols[0] if len(cols) == 1 else np.stack(cols, axis=1) if len({c.dtype.kind for c in cols}) == 1 \
            else np.stack([c.astype(str) for c in cols], axis=1)
    label_columns = tuple(header[j] if header else str(j) for j in targets)
    return SeriesData(X, y, name, f"column {field}", lines=np.asarray(lines), label_columns=label_columns,
                      columns=width)


def csv_header(first_row: list[str], target_column: str | None) -> list[str] | None:
    """The first row when it is a header: a cell that is not a number (the last may be a class name), or
    the name given to --target-column."""
    if any(not is_number(c) for c in first_row[:-1]):
        return first_row
    if target_column is not None and any(t.strip() in first_row for t in target_column.split(",")):
        return first_row
    return None


def peek_csv_header(path: Path) -> tuple[list[str] | None, int]:
    """(the header or None, the number of columns) of a .csv, from its first row alone."""
    try:
        with open(path, newline="") as f:
            first = next((r for r in csv.reader(f) if r), [])
    except (OSError, UnicodeDecodeError):
        return None, 0
    return csv_header(first, None), len(first)


def _target_indices(name: str, header: list[str] | None, width: int, target_column: str | None,
                    labels: bool) -> list[int]:
    if target_column is None:
        return [width - 1] if labels else []
    indices = []
    for wanted in target_column.split(","):
        wanted = wanted.strip()
        if header and wanted in header:
            indices.append(header.index(wanted))
        elif wanted.lstrip("-").isdigit() and -width <= int(wanted) < width:
            indices.append(int(wanted) % width)
        else:
            known = f"columns are {', '.join(header)}" if header else f"the file has {width} unnamed columns"
            raise DataError([f"{name}: --target-column '{wanted}' not found; {known} "
                             "(give a header name or a 0-based column number)"])
    return indices
