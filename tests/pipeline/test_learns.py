"""The "learns" tier: default flags on data at a realistic scale beat the obvious baseline by a stated margin
within a fixed, small number of epochs. Each baseline is computed in numpy from the data alone (the mean, the
median, the majority class), or is the same network trained on targets standardised by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.bundle import rebuild
from conftest import prices, prices_signal
from pipeline.cli import main

pytestmark = pytest.mark.learns

def counts(n: int, seed: int, mean: float = 300.0, length: int = 32):
    X, _ = prices(n, seed, offset=0.0, spread=1.0, length=length)
    rng = np.random.default_rng(seed + 100)
    return X, rng.poisson(mean * np.exp(0.5 * prices_signal(X))).astype(np.int64)


def rare_positives(n: int, seed: int, rate: float = 0.03, length: int = 48):
    """Positives (3 %) carry a bump of height 4 somewhere in the series; negatives are noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 1, length)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    y[rng.permutation(n)[:round(rate * n)]] = 1
    for i in np.flatnonzero(y):
        t = rng.integers(4, length - 8)
        X[i, 0, t:t + 4] += np.array([2.0, 4.0, 4.0, 2.0], dtype=np.float32)
    return X, y


def many_classes(n: int, seed: int, k: int = 12, length: int = 48):
    """Class c is a noisy sine of frequency c + 1 at a random phase."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    t = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    X = np.sin(2 * np.pi * (1 + y[:, None]) * t / (1.1 * length) + phase) + 0.3 * rng.normal(size=(n, length))
    return X[:, None].astype(np.float32), y


def _write(folder: Path, name: str, X: np.ndarray, y: np.ndarray) -> str:
    path = folder / f"{name}.npz"
    np.savez(path, X=X, y=y)
    return str(path)


def _train(folder: Path, train, test, *flags: str) -> tuple[dict, np.ndarray]:
    """`pipeline train` with default flags (plus `flags`); returns metrics.json and the eager test outputs."""
    out = folder / "run"
    args = ["train", "--data", _write(folder, "train", *train), "--test-data", _write(folder, "test", *test),
            "--out", str(out), "--no-progress", *flags]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = rebuild(out).model
    X = test[0] if test[0].ndim == 3 else test[0][:, None, :]  # (N, L) is N series of one channel
    with torch.no_grad():
        outputs = model(torch.from_numpy(X)).numpy()
    return json.loads((out / "metrics.json").read_text()), outputs


def _rmse(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((p.reshape(-1) - y.reshape(-1)) ** 2)))


def test_regression_far_from_zero_learns_as_on_standardised_targets(tmp_path):
    """Prices around 1000 (spread 50), 20 epochs: before the output layer started at the targets' mean the
    network spent them walking its output from 0 towards 1000 (R^2 far below 0)."""
    train, test = prices(300, seed=0), prices(300, seed=1)
    (tmp_path / "user").mkdir()
    metrics, predicted = _train(tmp_path / "user", train, test, "--task", "regression", "--epochs", "20")
    mean_rmse = _rmse(np.full(len(test[1]), train[1].mean()), test[1])
    ours = _rmse(predicted, test[1])
    assert ours <= 0.3 * mean_rmse, (ours, mean_rmse)
    assert metrics["test"]["rmse"] == pytest.approx(ours, rel=1e-4)  # reported in the user's units
    # the same network on targets standardised by hand, its predictions taken back to the user's units
    m, s = float(train[1].mean()), float(train[1].std())
    (tmp_path / "hand").mkdir()
    _, by_hand = _train(tmp_path / "hand", (train[0], (train[1] - m) / s), (test[0], (test[1] - m) / s),
                        "--task", "regression", "--epochs", "20")
    assert ours <= 1.1 * _rmse(by_hand * s + m, test[1]) + 0.05 * s


def two_scales(n: int, seed: int, length: int = 32):
    """Two channels, two targets a billion apart in scale: a million times channel 0's signal (around 3e6) and a
    thousandth of channel 1's."""
    X = np.random.default_rng(seed).normal(size=(n, 2, length)).astype(np.float32)
    y = np.stack([3e6 + 1e6 * prices_signal(X[:, :1]), 1e-3 * prices_signal(X[:, 1:])], axis=1)
    return X, y.astype(np.float32)


def test_targets_near_a_million_and_a_thousandth_are_each_learned(tmp_path):
    """Trained on the targets' z-scores, each target weighs alike: in the user's units the million-sized one drowned
    the other (its test R^2 -0.2, the first's 0.97, after 60 epochs). The reported loss stays the user's MSE."""
    train, test = two_scales(600, seed=0), two_scales(300, seed=1)
    metrics, predicted = _train(tmp_path, train, test, "--task", "regression", "--epochs", "60")
    r2 = 1 - ((predicted - test[1]) ** 2).mean(axis=0) / test[1].var(axis=0)
    assert r2.min() >= 0.9, r2
    assert metrics["test"]["loss"] == pytest.approx(float(((predicted - test[1]) ** 2).mean()), rel=1e-4)


@pytest.mark.parametrize("offset,spread", [(0.0, 1.0), (1000.0, 50.0), (-2e5, 3e3)])
def test_sgd_learns_at_any_target_scale_with_the_same_lr(tmp_path, offset, spread):
    """The loss divided by the mean predictor's loss: SGD's default --lr fits targets in units of 1000 as
    it fits unit targets (without it, a loss of order 1e6 diverges at the first step)."""
    train, test = prices(300, 0, offset, spread), prices(300, 1, offset, spread)
    _, predicted = _train(tmp_path, train, test, "--task", "regression", "--epochs", "15", "--optimizer", "sgd")
    r2 = 1 - _rmse(predicted, test[1]) ** 2 / np.var(test[1])
    assert r2 >= 0.8, r2


def test_counts_in_the_hundreds_beat_the_median_by_half(tmp_path):
    train, test = counts(300, seed=0), counts(300, seed=1)
    metrics, _ = _train(tmp_path, train, test, "--task", "count", "--epochs", "20")
    median_mae = float(np.mean(np.abs(test[1] - np.median(train[1]))))
    assert metrics["test"]["mae"] <= 0.5 * median_mae, (metrics["test"]["mae"], median_mae)


def test_three_percent_positives_reach_f1_085(tmp_path):
    train, test = rare_positives(800, seed=0), rare_positives(800, seed=1)
    assert train[1].mean() == 0.03
    _, logits = _train(tmp_path, train, test, "--epochs", "15")
    predicted, actual = logits[:, 0] > 0, test[1] == 1
    tp = np.sum(predicted & actual)
    f1 = 2 * tp / (predicted.sum() + actual.sum())
    assert f1 >= 0.85, f1


def test_twelve_classes_far_above_the_majority_class(tmp_path):
    train, test = many_classes(480, seed=0), many_classes(480, seed=1)
    metrics, logits = _train(tmp_path, train, test, "--epochs", "15")
    majority = np.mean(test[1] == np.bincount(train[1]).argmax())
    accuracy = float(np.mean(logits.argmax(axis=1) == test[1]))
    assert accuracy >= 0.9 and accuracy >= majority + 0.8, (accuracy, majority)
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_tutorial_002_line_fits_in_60_epochs(tmp_path):
    """Seed tutorial 002: y = 2x + 1 + N(0, 1) noise with x in [0, 10], --model linear --epochs 60: the test
    RMSE reaches the noise (1.0) within 15 % (before: 8.4, the output starting at 0 and y around 11)."""
    rng = np.random.default_rng(2)

    def line(n):
        x = rng.uniform(0, 10, size=(n, 1)).astype(np.float32)
        return x, (2 * x[:, 0] + 1 + rng.normal(size=n)).astype(np.float32)

    metrics, _ = _train(tmp_path, line(10000), line(2000), "--model", "linear", "--epochs", "60", "--task",
                        "regression")
    assert metrics["test"]["rmse"] <= 1.15, metrics["test"]


# --- the kernel models: the ridge head by default, the linear head when asked ------------------------------------
@pytest.mark.slow  # kernel transforms of about a thousand series, each run
@pytest.mark.parametrize("model, flags", [("minirocket", ()), ("hydra", ()), ("multirocket-hydra", ("--width", "0.25")),
                                          ("minirocket", ("--head", "linear", "--batch-size", "32", "--epochs", "20"))])
def test_kernel_models_separate_twelve_classes(tmp_path, model, flags):
    train, test = many_classes(480, seed=0), many_classes(480, seed=1)
    metrics, logits = _train(tmp_path, train, test, "--model", model, *flags)
    accuracy = float(np.mean(logits.argmax(axis=1) == test[1]))
    assert accuracy >= 0.9, accuracy
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)


# hydra measured 0.77 F1 at seed 0 and a count MAE of 0.97 x the median's (it counts which kernel wins, not how
# high a series rises), so it is held to the rare positives only; fcn reaches 0.85
# (test_three_percent_positives_reach_f1_085); always predicting the majority scores 0
# multirocket-hydra at a quarter of its features, as in the twelve-classes test above: at its default (MultiRocket's
# 50,000 and Hydra's) the same two runs cost about five minutes of one core (the MultiRocket transform pools every bias)
@pytest.mark.slow  # kernel transforms of 1,600 series, twice per model
@pytest.mark.parametrize("model, flags, least_f1, counts_too", [
    ("minirocket", (), 0.85, True), ("hydra", (), 0.7, False), ("multirocket-hydra", ("--width", "0.25"), 0.85, True)])
def test_kernel_models_find_three_percent_positives_and_count_in_the_hundreds(tmp_path, model, flags, least_f1,
                                                                              counts_too):
    (tmp_path / "rare").mkdir()
    (tmp_path / "counts").mkdir()
    train, test = rare_positives(800, seed=0), rare_positives(800, seed=1)
    _, logits = _train(tmp_path / "rare", train, test, "--model", model, *flags)
    predicted, actual = logits[:, 0] > 0, test[1] == 1
    f1 = 2 * np.sum(predicted & actual) / (predicted.sum() + actual.sum())
    assert f1 >= least_f1, f1
    if not counts_too:
        return
    train, test = counts(300, seed=0), counts(300, seed=1)
    metrics, _ = _train(tmp_path / "counts", train, test, "--model", model, "--task", "count", *flags)
    median_mae = float(np.mean(np.abs(test[1] - np.median(train[1]))))
    assert metrics["test"]["mae"] <= 0.5 * median_mae, (metrics["test"]["mae"], median_mae)
