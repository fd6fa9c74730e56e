"""Checking what callers pass to a bundle, and cutting large inputs into bounded batches (numpy only)."""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np

from runtime.errors import InputError

# A batch of series is at most this many bytes of float32 input (and at most MAX_BATCH rows), so a
# memory-mapped file far larger than RAM streams through in pieces.
BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH = 256
# Longest series a model of any length takes unless its manifest sets a maximum: the model's activations
# grow with the length (fcn holds 256 channels x length floats), so one endless series must not exhaust memory.
DEFAULT_MAX_LENGTH = 1 << 20
MAX_ROWS_LISTED = 5


def plural(count: int, word: str) -> str:
    """'1 channel', '2 channels' (words whose plural adds an s)."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def rows_text(rows: np.ndarray, lines: np.ndarray | None = None) -> str:
    """Where series are: 'row 3' or 'rows 1, 4, 9 and 12 more' (0-based, as numpy indexes an array), or with
    `lines` (the 1-based file line of each series of a text file) 'line 5' or 'lines 2, 5, 10'."""
    rows = np.asarray(rows)
    word, numbers = ("row", rows) if lines is None else ("line", np.asarray(lines)[rows])
    shown = ", ".join(str(int(i)) for i in numbers[:MAX_ROWS_LISTED])
    more = f" and {len(rows) - MAX_ROWS_LISTED} more" if len(rows) > MAX_ROWS_LISTED else ""
    return f"{word}{'s' if len(rows) > 1 else ''} {shown}{more}"


def parse_numbers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text labels as float64, and a mask of those that are not numbers (read as NaN)."""
    flat = np.asarray(values).reshape(-1)
    numbers = np.full(flat.shape, np.nan)
    bad = np.zeros(flat.shape, dtype=bool)
    for i, text in enumerate(flat.tolist()):
        try:
            numbers[i] = float(text)
        except (TypeError, ValueError):
            bad[i] = True
    return numbers.reshape(np.shape(values)), bad.reshape(np.shape(values))


def not_numbers_text(values: np.ndarray, bad: np.ndarray) -> str:
    """"'abc' is not a number" or "'abc', 'NA' are not numbers" for the text values under `bad`."""
    distinct = list(dict.fromkeys(np.asarray(values)[bad].tolist()))
    shown = ", ".join(repr(v) for v in distinct[:3]) + (", ..." if len(distinct) > 3 else "")
    return f"{shown} {'is not a number' if len(distinct) == 1 else 'are not numbers'}"


def number_text(value) -> str:
    """A value as the user wrote it: 3 not np.int64(3) or 3.0."""
    value = value.item() if isinstance(value, np.generic) else value
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def as_array(value, name: str) -> np.ndarray:
    """A numpy view of `value` (memmaps stay mapped) with a numeric dtype, or an InputError."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{name}: cannot be read as an array ({exc}); pass a numpy array") from None
    if value.dtype.kind not in "biuf" or value.dtype.kind == "b":
        raise InputError(f"{name}: has dtype {value.dtype}; pass real numbers (float32 is used inside)")
    return value


class SeriesSpec:
    """The model input the manifest promises: channels and allowed lengths."""

    def __init__(self, manifest_input):  # a runtime.manifest.InputSpec
        self.channels = int(manifest_input.channels)
        length = manifest_input.length
        self.fixed = length.fixed
        self.min_length = int(self.fixed if self.fixed is not None else length.min or 1)
        max_length = self.fixed if self.fixed is not None else length.max
        self.max_length = DEFAULT_MAX_LENGTH if max_length is None else int(max_length)
        self.trained_length = int(self.fixed if self.fixed is not None else length.trained)

    def check(self, x, name: str = "x") -> np.ndarray:
        """(N, C, L) view of x (an (N, L) input gets its one channel), checked against the spec."""
        x = as_array(x, name)
        if x.ndim == 2 and self.channels == 1:
            x = x[:, None, :]
        elif x.ndim == 2:
            raise InputError(f"{name}: has shape {x.shape}; this model takes {self.channels} channels, so pass "
                             f"(N, {self.channels}, L)")
        elif x.ndim != 3:
            shapes = "(N, C, L) or (N, L)" if self.channels == 1 else f"(N, {self.channels}, L)"
            hint = "; for one series use x[None]" if x.ndim == 1 else ""
            raise InputError(f"{name}: has shape {x.shape}; pass {shapes}{hint}")
        n, c, length = x.shape
        if n == 0:
            raise InputError(f"{name}: holds no series (shape {x.shape}); pass at least one")
        if c != self.channels:
            raise InputError(f"{name}: series have {plural(c, 'channel')} but the model was trained on {self.channels}")
        if self.fixed is not None and length != self.fixed:
            raise InputError(f"{name}: series have length {length} but this model takes exactly {self.fixed} "
                             "(it was trained with a fixed-length model; resample or crop the series)")
        if length < self.min_length or length > self.max_length:
            split = "; split longer series into windows" if length > self.max_length else ""
            raise InputError(f"{name}: series have length {length}; this model takes lengths "
                             f"{self.min_length}..{self.max_length}{split}")
        return x


def batch_rows(x: np.ndarray, batch_size: int | None = None, series_per_call: int | None = None) -> int:
    """Rows per batch: the caller's choice, else as many as fit BATCH_BYTES (at least one) and at most the
    bundle's `series_per_call` (manifest batch_bound: kernel models, whose intermediates outgrow their input)."""
    if batch_size is not None:
        if batch_size < 1:
            raise InputError(f"batch_size: {batch_size} must be at least 1")
        return int(batch_size)
    per_row = 4 * x.shape[1] * x.shape[2]  # (N, C, L)
    rows = min(MAX_BATCH, max(1, BATCH_BYTES // max(per_row, 1)))
    return int(rows if series_per_call is None else min(rows, series_per_call))


def _file_mapping(x: np.ndarray) -> mmap.mmap | None:
    """The mmap under a memory-mapped array (np.load(mmap_mode=...) and its views), if any."""
    base = x
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    return base


def _page_releaser(x: np.ndarray):
    """A function dropping the pages of rows [start, stop) from our resident memory once they are read.

    Clean file pages stay in the OS page cache, but counted in this process (and its container's)
    memory they would grow to the whole file; this keeps a file larger than RAM at one batch.
    """
    mapping = _file_mapping(x)
    if mapping is None or not x.flags.c_contiguous or not hasattr(mapping, "madvise"):
        return lambda start, stop: None
    origin = np.frombuffer(mapping, dtype=np.uint8).__array_interface__["data"][0]
    first = x.__array_interface__["data"][0] - origin
    row_bytes = x.strides[0]

    def release(start: int, stop: int) -> None:
        begin = first + start * row_bytes
        aligned = begin - begin % mmap.PAGESIZE
        end = min(first + stop * row_bytes, len(mapping))
        if end > aligned:
            mapping.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)

    return release


def batches(x: np.ndarray, rows: int, name: str = "x",
            lines: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float32 C-contiguous batch) pairs; only one batch is ever copied out of a memmap."""
    release = _page_releaser(x)
    for start in range(0, len(x), rows):
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, reported below
            batch = np.ascontiguousarray(x[start:start + rows], dtype=np.float32)  # a view if already so
        finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite) + start
            raise InputError(f"{name}: NaN or Inf in series {rows_text(bad, lines)} (or values too large for float32); "
                             "fill or drop missing values first")
        yield start, batch
        release(start, start + len(batch))  # after the caller is done with it: the batch may be a view
