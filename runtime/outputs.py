"""Predictions as a table for people (class names, probabilities) and writers for .csv, .jsonl, .npy, .npz."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

import numpy as np

from runtime.bundle import Bundle
from runtime.segments import decide, step_rows

OUT_SUFFIXES = (".csv", ".jsonl", ".npy", ".npz")


def prediction_table(bundle: Bundle, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns of one row per series: decisions by name where the task has classes, then the scores."""
    w = bundle.window
    if bundle.steps:  # a label per time step: one row per step of each window (stitched rows: runtime.segments)
        p = np.asarray(outputs[bundle.spec.main_output])  # (N, K, W)
        rows = step_rows(p)
        found = {"probabilities": rows, "label": decide(rows, bundle.spec.scores)}
        return {"window": np.repeat(np.arange(p.shape[0]), p.shape[2]), "step": np.tile(np.arange(p.shape[2]), p.shape[0]),
                **bundle.spec.step_columns(found, bundle.classes, bundle.n_outputs)}
    if w is not None and w.horizon:  # a forecast: a column per target, step and quantile
        return bundle.spec.prediction_columns(outputs, w.target_names, bundle.n_outputs, tuple(w.quantiles or ()))
    return bundle.spec.prediction_columns(outputs, bundle.classes, bundle.n_outputs)


def main_scores(bundle: Bundle, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The one matrix a .npy holds: probabilities for classifiers, predictions or rates otherwise."""
    return outputs[bundle.spec.main_output]


def _cell(value):
    if isinstance(value, np.floating):
        return float(str(value))  # the float32's shortest text, not its float64 expansion
    return value.item() if isinstance(value, np.generic) else value


def write_predictions(bundle: Bundle, outputs: dict[str, np.ndarray], path: Path, suffix: str) -> None:
    """Write predictions to `path` in the format `suffix` names (the caller makes the write atomic)."""
    if suffix in (".npy", ".npz"):
        with open(path, "wb") as f:  # a file object, so numpy does not append a suffix to a temporary name
            if suffix == ".npy":
                np.save(f, main_scores(bundle, outputs))
            else:
                np.savez(f, **outputs)
    else:
        with open(path, "w", newline="") as f:
            write_rows(prediction_table(bundle, outputs), f, suffix)


def write_rows(table: dict[str, np.ndarray], stream: TextIO, suffix: str = ".csv") -> None:
    """One line per series to a text stream: CSV with a header, or JSON lines."""
    n = len(next(iter(table.values())))
    if suffix == ".csv":
        writer = csv.writer(stream)
        writer.writerow(["row", *table])
        for i in range(n):
            writer.writerow([i, *(_format(col[i]) for col in table.values())])
    else:
        for i in range(n):
            stream.write(json.dumps({"row": i, **{k: _cell(col[i]) for k, col in table.items()}}) + "\n")


def _format(value) -> str:
    return str(value)  # numpy prints a float32 as the shortest text that reads back as the same value
