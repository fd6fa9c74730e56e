"""What every reader returns (`SeriesData`) and the label parsing the readers share (numpy only, no torch):
pipeline/data/readers.py (npz, npy, csv), pipeline/data/ucr.py (UCR .tsv, .ts) and pipeline/data/recordings.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SeriesData:
    """Series (N, C, L) and their labels as read from one file."""

    X: np.ndarray  # (N, C, L) float32, possibly a read-only memmap (.npy: memmap of any numeric dtype)
    y: np.ndarray | None  # (N,) or (N, K); float64 numbers or str class names
    source: str  # file name used in messages
    label_field: str  # how the user names the labels, e.g. "column 'y'" or "array 'y'"
    labels_are_classes: bool = False  # .ts/.tsv class labels: names, never numbers
    lines: np.ndarray | None = None  # (N,) 1-based file line of each series (text files); None: arrays
    label_columns: tuple[str, ...] = ()  # .csv: the label columns by header name, or 0-based index if no header
    columns: int = 0  # .csv: the number of columns per row

    in_memory: bool = False  # arrays given to the Python API: the label array names itself
    windows: object | None = None  # windows of recordings (pipeline.data.recordings.WindowedSeries, also X)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def labels_text(self) -> str:
        """The labels as messages name them: "train.csv: column 'y'", or the array "y"."""
        return self.label_field if self.in_memory else f"{self.source}: {self.label_field}"


def parse_labels(raw: list[str]) -> np.ndarray:
    """Numbers when every label parses as one, class-name strings otherwise."""
    try:
        return np.array([float(v) for v in raw], dtype=np.float64)
    except ValueError:
        return np.array([v.strip() for v in raw], dtype=str)


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
