"""The embedded default data set: four noisy waveform classes, generated deterministically."""

from __future__ import annotations

import numpy as np

from pipeline.data.series import SeriesData

WAVEFORMS = ("sine", "square", "sawtooth", "triangle")
DEFAULT_SOURCE = "waveforms (embedded default data)"


def waveforms(n: int = 800, length: int = 128, noise: float = 0.35, seed: int = 1234) -> SeriesData:
    """`n` series of length `length`, balanced over sine/square/sawtooth/triangle, with noise.

    Frequency, phase, amplitude and offset vary per series, so the classes are told apart by
    shape, not by scale; the same arguments always give the same arrays.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(WAVEFORMS)
    rng.shuffle(labels)
    t = np.linspace(0.0, 1.0, length, endpoint=False)[None, :]  # (1, L)
    cycles = rng.uniform(2.0, 6.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    u = (cycles * t + phase) % 1.0  # (N, L) position within each cycle
    shapes = np.stack([
        np.sin(2 * np.pi * u),
        np.where(u < 0.5, 1.0, -1.0),
        2.0 * u - 1.0,
        1.0 - 4.0 * np.abs(u - 0.5),
    ])  # (4, N, L)
    clean = shapes[labels, np.arange(n)]
    amplitude = rng.uniform(0.5, 2.0, size=(n, 1))
    offset = rng.normal(0.0, 0.5, size=(n, 1))
    X = amplitude * clean + offset + rng.normal(0.0, noise, size=(n, length))
    names = np.array(WAVEFORMS)[labels]
    return SeriesData(X[:, None, :].astype(np.float32), names, DEFAULT_SOURCE, "the waveform name",
                      labels_are_classes=True)
