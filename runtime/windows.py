"""Windows of long recordings, defined once (numpy only): where windows start, which label a window takes,
and a stream that turns chunks of a live recording into the outputs of every window they complete.

Training (pipeline.data.recordings), `pipeline predict`/`evaluate` on recordings, `Bundle.predict_windows`
and `Bundle.stream` all cut windows with `window_starts` and label them with `window_labels`, so every path
sees the same windows. The host kits (runtime/hosts) implement the same stream from the manifest's `window`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.errors import InputError
from runtime.manifest import WINDOW_LABELS

# Windows run through the model at most this many at a time, so a chunk of any length needs bounded memory.
STREAM_BATCH = 256


def window_starts(samples: int, length: int, stride: int) -> np.ndarray:
    """First samples of the windows of a recording of `samples` samples: 0, stride, ... while a whole window
    of `length` fits (none when the recording is shorter than one window)."""
    if samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, samples - length + 1, stride, dtype=np.int64)


def window_labels(labels: np.ndarray, starts: np.ndarray, length: int, rule: str) -> np.ndarray:
    """The label of each window of per-time-step `labels` ((T,) or (T, K)) by `rule` (WINDOW_LABELS)."""
    if rule == "last":
        return labels[starts + length - 1]
    if rule == "center":
        return labels[starts + length // 2]
    if rule != "majority":
        raise ValueError(f"window label rule '{rule}' is not one of {', '.join(WINDOW_LABELS)}")
    # integer codes of the distinct labels (rows, for several label columns), then a count per window
    keys = labels.reshape(len(labels), -1)
    _, codes = np.unique(keys, axis=0, return_inverse=True)
    codes = codes.reshape(-1)
    n_codes = int(codes.max()) + 1 if len(codes) else 1
    counts = np.zeros((len(starts), n_codes), dtype=np.int64)
    for offset in range(length):  # W passes over the windows, never a (windows, W) copy of the labels
        np.add.at(counts, (np.arange(len(starts)), codes[starts + offset]), 1)
    # a tie goes to the tied label seen last in the window
    last_seen = np.full((len(starts), n_codes), -1, dtype=np.int64)
    for offset in range(length):
        last_seen[np.arange(len(starts)), codes[starts + offset]] = offset
    best = counts.max(axis=1, keepdims=True)
    winner = np.where(counts == best, last_seen, -1).argmax(axis=1)
    position = last_seen[np.arange(len(starts)), winner]
    return labels[starts + position]


def window_view(samples: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """The windows of `samples` (C, T) at `starts` as one (n, C, length) float32 array."""
    view = np.lib.stride_tricks.sliding_window_view(samples, length, axis=1)  # (C, T - length + 1, length)
    return np.ascontiguousarray(view[:, starts].transpose(1, 0, 2), dtype=np.float32)


class Stream:
    """Feed chunks of one live recording (any length, one sample to many thousands); get the outputs of every
    window each chunk completes, in order, with their start sample. Holds the last `length - 1` samples per
    channel and nothing of the history before them, so its memory does not grow with the recording.

        stream = bundle.stream()
        for chunk in source:                        # chunk: (channels, n) or (n,) for one channel
            out = stream.push(chunk)                # {"start": (w,), "end": (w,), <each output>: (w, ...)}
    """

    def __init__(self, run: Callable[[np.ndarray], dict[str, np.ndarray]], outputs: list[str], channels: int,
                 length: int, stride: int):
        self.run, self.outputs, self.channels = run, list(outputs), channels
        self.length, self.stride = length, stride
        self.buffer = np.zeros((channels, max(length - 1, 0)), dtype=np.float32)  # the last length - 1 samples
        self.seen = 0  # samples pushed so far
        self.next_start = 0  # the start sample of the next window to complete
        self._empty: dict[str, np.ndarray] | None = None  # each output with no rows, once a push completes none

    def push(self, chunk) -> dict[str, np.ndarray]:
        """The outputs of the windows `chunk` completes (possibly none), with their start and end samples."""
        chunk = self._check(chunk)
        n = chunk.shape[1]
        held = min(self.seen, self.length - 1)  # samples of the buffer that are real
        joined = np.concatenate([self.buffer[:, self.buffer.shape[1] - held:], chunk], axis=1)
        first = self.seen - held  # the sample number of joined[:, 0]
        last_start = self.seen + n - self.length  # the last start whose window is complete
        starts = np.arange(self.next_start, last_start + 1, self.stride, dtype=np.int64)
        if len(starts):
            self.next_start = int(starts[-1]) + self.stride
        results = {name: [] for name in self.outputs}
        for i in range(0, len(starts), STREAM_BATCH):
            part = starts[i:i + STREAM_BATCH]
            out = self.run(window_view(joined, part - first, self.length))
            for name in self.outputs:
                results[name].append(out[name])
        self.seen += n
        keep = min(self.seen, self.length - 1)
        self.buffer[:, self.buffer.shape[1] - keep:] = joined[:, joined.shape[1] - keep:]
        found = {"start": starts, "end": starts + self.length}
        for name, parts in results.items():
            found[name] = np.concatenate(parts) if parts else None
        return self._fill_empty(found)

    def _fill_empty(self, found: dict) -> dict[str, np.ndarray]:
        if found["start"].size:
            return found
        if self._empty is None:  # the outputs' trailing shapes and dtypes, from one zero window
            out = self.run(np.zeros((1, self.channels, self.length), dtype=np.float32))
            self._empty = {name: out[name][:0] for name in self.outputs}
        return {**found, **self._empty}

    def _check(self, chunk) -> np.ndarray:
        try:
            chunk = np.asarray(chunk)
        except (ValueError, TypeError) as exc:
            raise InputError(f"chunk: not an array of numbers ({str(exc).splitlines()[0]}); pass ({self.channels}, n) "
                             "samples per push") from None
        if chunk.ndim == 1 and self.channels == 1:
            chunk = chunk[None, :]
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise InputError(f"chunk: has shape {chunk.shape}; pass ({self.channels}, n) samples"
                             + (" or (n,)" if self.channels == 1 else "") + " per push")
        if chunk.dtype.kind not in "biuf":
            raise InputError(f"chunk: has dtype {chunk.dtype}; samples must be numbers")
        chunk = chunk.astype(np.float32, copy=False)
        bad = ~np.isfinite(chunk).all(axis=0)
        if bad.any():
            raise InputError(f"chunk: sample {self.seen + int(np.flatnonzero(bad)[0])} of the stream is NaN or Inf; "
                             "fill gaps before pushing (nothing of this chunk was used)")
        return chunk
