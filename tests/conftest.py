"""Shared helpers: small learnable data sets per task, written to files in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest


def make_task_data(task: str, n: int = 96, length: int = 24, channels: int = 1, seed: int = 0):
    """(X, y) where y depends on X, so a model can learn it in a few epochs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, channels, length)).astype(np.float32)
    level = X[:, 0, : length // 2].mean(axis=1) - X[:, 0, length // 2:].mean(axis=1)  # (N,)
    if task == "regression":
        y = np.stack([3.0 * level + 1.0, -2.0 * level], axis=1)
    elif task == "binary":
        y = (level > 0).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(level, np.quantile(level, [1 / 3, 2 / 3])).astype(np.int64)
    elif task == "multilabel":
        y = np.stack([level > 0, X[:, 0].mean(axis=1) > 0, level < -0.2], axis=1).astype(np.int64)
    elif task == "count":
        y = rng.poisson(np.exp(1.0 + 2.0 * level)).astype(np.int64)
    else:
        raise ValueError(task)
    return X, y


@pytest.fixture
def npz_file(tmp_path):
    """Write (X, y) of a task to tmp_path/<name>.npz and return its path."""

    def write(task: str, name: str = "train", **kwargs):
        X, y = make_task_data(task, **kwargs)
        path = tmp_path / f"{name}.npz"
        np.savez(path, X=X, y=y)
        return path

    return write
