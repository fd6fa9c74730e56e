"""The stream row of `pipeline bench`: a recording pushed through `Bundle.stream()` the way a live service
pushes it (one stride of samples per push, so each push completes one window), against `predict_windows` of
the same recording (every window in bounded batches), both on the exported bundle in the same rounds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import runtime

STREAM_WINDOW = 128
STREAM_STRIDES = (1, 16, 128)


def _windows(quick: bool) -> int:
    return 200 if quick else 2000


def stream_rows(bundle_dir: Path, threads: int, quick: bool, rounds: int, log) -> list[dict]:
    """Per-window latency and samples per second through the stream, and the batch predict of the same
    recording, for a window of 128 (the model's own length for a fixed-length model) and strides 1, 16, 128."""
    bundle = runtime.load(bundle_dir, threads=threads)
    length = bundle.series.fixed or STREAM_WINDOW
    channels = bundle.series.channels
    rows = []
    for stride in STREAM_STRIDES:
        samples = length + stride * (_windows(quick) - 1)
        recording = np.random.default_rng(stride).normal(size=(channels, samples)).astype(np.float32)
        log(f"streaming: window {length}, stride {stride}: {samples:,} samples, {_windows(quick)} windows, "
            f"{rounds} round(s)")
        stream_s, batch_s, pushes = [], [], []
        for _ in range(rounds):
            stream = bundle.stream(length=length, stride=stride)
            stream.push(recording[:, :length - 1])  # the first window's first samples: no window yet
            start = time.perf_counter()
            for at in range(length - 1, samples, stride):
                t = time.perf_counter()
                stream.push(recording[:, at:at + stride])
                pushes.append(time.perf_counter() - t)
            stream_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            bundle.predict_windows(recording, length=length, stride=stride)
            batch_s.append(time.perf_counter() - start)
        stream_t, batch_t = float(np.median(stream_s)), float(np.median(batch_s))
        metric = f"window {length}, stride {stride}"
        rows.append({"section": "streaming", "name": "Bundle.stream", "metric": metric, "unit": "ms per window",
                     "value": float(np.median(pushes)) * 1e3, "p90": float(np.percentile(pushes, 90)) * 1e3,
                     "samples_per_second": samples / stream_t, "ratio": batch_t / stream_t,
                     "note": f"{samples / stream_t:,.0f} samples/s; one push of {stride} sample(s) completes one "
                             "window; ratio: samples/s against predict_windows"})
        rows.append({"section": "streaming", "name": "Bundle.predict_windows", "metric": metric,
                     "unit": "ms per window", "value": batch_t / _windows(quick) * 1e3,
                     "samples_per_second": samples / batch_t, "ratio": 1.0,
                     "note": f"{samples / batch_t:,.0f} samples/s; the whole recording, windows in batches"})
    return rows
