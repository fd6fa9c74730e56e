"""Metrics against values worked out by hand and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtime.metrics import roc_auc, sigmoid
from runtime.tasks import compute_metrics


def test_regression_metrics():
    pred = np.array([[1.0], [2.0], [4.0]])
    target = np.array([[1.0], [3.0], [5.0]])
    m = compute_metrics("regression", pred, target)
    assert m["mae"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(2 / 3), abs=1e-12)
    # SS_res = 2, SS_tot = (1-3)^2 + 0 + (5-3)^2 = 8
    assert m["r2"] == pytest.approx(1 - 2 / 8, abs=1e-12)


def test_binary_metrics():
    logit = np.array([2.0, -1.0, 0.5, -3.0, 1.0])
    target = np.array([1, 0, 0, 1, 1])
    m = compute_metrics("binary", logit[:, None], target[:, None])
    # predictions 1,0,1,0,1: tp=2 fp=1 fn=1 -> f1 = 4/6
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(4 / 6)
    pairs = [(p, n) for p in logit[target == 1] for n in logit[target == 0]]
    assert m["roc_auc"] == pytest.approx(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs]))


def test_roc_auc_with_ties_matches_pair_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=40).astype(float)
    labels = rng.integers(0, 2, size=40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(scores, np.ones(40)) is None


def test_multiclass_metrics():
    logits = np.eye(3)[[0, 1, 2, 2, 1]] * 5.0
    target = np.array([0, 1, 1, 2, 0])
    m = compute_metrics("multiclass", logits, target)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # class 0: tp1 fp0 fn1 -> 2/3; class 1: tp1 fp1 fn1 -> 1/2; class 2: tp1 fp1 fn0 -> 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_multilabel_metrics():
    logits = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    target = np.array([[1, 0], [0, 1], [0, 1]])
    m = compute_metrics("multilabel", logits, target)
    # label 0: tp1 fp1 fn0 -> 2/3; label 1: tp1 fp0 fn1 -> 2/3; micro: tp2 fp1 fn1 -> 4/6
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_count_metrics():
    log_rate = np.log(np.array([[1.0], [2.0], [4.0]]))
    y = np.array([[0.0], [2.0], [6.0]])
    m = compute_metrics("count", log_rate, y)
    dev = 2 * np.array([0 - (0 - 1), 2 * np.log(2 / 2) - 0, 6 * np.log(6 / 4) - 2])
    assert m["mae"] == pytest.approx((1 + 0 + 2) / 3)
    assert m["poisson_deviance"] == pytest.approx(dev.mean(), abs=1e-12)


def test_sigmoid_is_stable_at_extremes():
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-12)
