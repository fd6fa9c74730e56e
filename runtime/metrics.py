"""Metric functions in numpy; runtime/tasks.py says which task uses which, for the trainer and the runtime."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks)."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None  # undefined with one class present
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank for each run of tied scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start:start + count]] = start + (count + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def regression_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    err = prediction - target
    ss_res = (err ** 2).sum(axis=0)
    ss_tot = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": float(r2.mean())}


def binary_metrics(logit: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    logit, target = logit.reshape(-1), target.reshape(-1).astype(bool)
    pred = logit > 0
    tp = float((pred & target).sum())
    fp = float((pred & ~target).sum())
    fn = float((~pred & target).sum())
    return {"accuracy": float((pred == target).mean()), "f1": _f1(tp, fp, fn),
            "roc_auc": roc_auc(logit, target)}


def multiclass_metrics(logits: np.ndarray, target: np.ndarray) -> dict[str, float]:
    pred = logits.argmax(axis=1)
    f1s = []
    for c in np.union1d(np.unique(target), np.unique(pred)):
        tp = float(((pred == c) & (target == c)).sum())
        fp = float(((pred == c) & (target != c)).sum())
        fn = float(((pred != c) & (target == c)).sum())
        f1s.append(_f1(tp, fp, fn))
    return {"accuracy": float((pred == target).mean()), "macro_f1": float(np.mean(f1s))}


def multilabel_metrics(logits: np.ndarray, target: np.ndarray) -> dict[str, float]:
    pred, target = logits > 0, target.astype(bool)
    tp = (pred & target).sum(axis=0).astype(float)
    fp = (pred & ~target).sum(axis=0).astype(float)
    fn = (~pred & target).sum(axis=0).astype(float)
    per_label = [_f1(a, b, c) for a, b, c in zip(tp, fp, fn)]
    return {"micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()), "macro_f1": float(np.mean(per_label))}


def count_metrics(log_rate: np.ndarray, target: np.ndarray) -> dict[str, float]:
    rate = np.exp(log_rate.astype(np.float64))
    y = target.astype(np.float64)
    y_log_ratio = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / rate), 0.0)
    deviance = 2.0 * (y_log_ratio - (y - rate))
    return {"mae": float(np.abs(rate - y).mean()), "poisson_deviance": float(deviance.mean())}
