"""Every scenario of the four tutorials in shared/seeds, as CLI flags (no code edits)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main


def _cli(args):
    return CliRunner().invoke(main, args + ["--epochs", "2", "--no-progress"], catch_exceptions=False)


def _write(tmp_path, name, X, y):
    path = tmp_path / f"{name}.npz"
    np.savez(path, X=X.astype(np.float32), y=y)
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _line(r):
    x = r.uniform(-1, 1, size=(10000, 1))  # one feature per sample
    return x, 2 * x[:, 0] + 1


SCENARIOS = {
    # 002: the linear-regression warm-up, y = 2x + 1 with X of shape (10000, 1): series of length 1
    "linear-y-2x-plus-1": (_line, ["--model", "linear", "--task", "regression", "--loss", "mse"]),
    # 000 example 1: Conv1d-ReLU-MaxPool-Flatten-Linear regression, MSE, Adam, y of shape (100, 1)
    "cnn-regression-mse": (lambda r: (r.normal(size=(100, 1, 30)), r.normal(size=(100, 1))),
                           ["--model", "simple-cnn", "--task", "regression", "--loss", "mse"]),
    # 000 example 2: binary with Sigmoid + BCELoss and SGD; the sigmoid belongs to the loss here
    "cnn-binary-bce-sgd": (lambda r: (r.normal(size=(100, 1, 50)), r.integers(0, 2, 100)),
                           ["--model", "simple-cnn", "--loss", "bce", "--optimizer", "sgd", "--lr", "0.01"]),
    # 000 example 3: three classes with CrossEntropyLoss (never after a Softmax)
    "cnn-multiclass-ce": (lambda r: (r.normal(size=(100, 1, 40)), r.integers(0, 3, 100)),
                          ["--model", "simple-cnn", "--loss", "cross_entropy", "--lr", "0.0005"]),
    # 000 imbalance: weighted loss
    "imbalanced-weighted": (lambda r: (r.normal(size=(100, 1, 40)), (r.random(100) < 0.15).astype(int)),
                            ["--pos-weight", "5.0"]),
    # 001: L1 regression, BCEWithLogits, multilabel multi-hot targets
    "l1": (lambda r: (r.normal(size=(60, 1, 16)), r.normal(size=60)), ["--task", "regression", "--loss", "l1"]),
    "multilabel": (lambda r: (r.normal(size=(60, 2, 16)), r.integers(0, 2, (60, 4))), []),
    # 002: hinge, Huber, Poisson
    "hinge": (lambda r: (r.normal(size=(60, 1, 16)), r.integers(0, 2, 60)), ["--loss", "hinge"]),
    "huber": (lambda r: (r.normal(size=(60, 1, 16)), r.normal(size=60) * 5),
              ["--task", "regression", "--loss", "huber", "--huber-delta", "2.0"]),
    "poisson": (lambda r: (r.normal(size=(60, 1, 16)), r.poisson(3.0, 60)), ["--task", "count"]),
    # 003: Simple_NN-style MLP with CrossEntropyLoss and Adam, 64 features, 10 classes
    "mlp-10-classes": (lambda r: (r.normal(size=(200, 64)), np.arange(200) % 10),
                       ["--model", "mlp", "--optimizer", "adam"]),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_tutorial_scenario_runs_through_the_cli(tmp_path, rng, name):
    make, flags = SCENARIOS[name]
    X, y = make(rng)
    out = tmp_path / "run"
    result = _cli(["train", "--data", _write(tmp_path, name, X, y), "--out", str(out)] + flags)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["loss"])


def test_tutorial_custom_loss_with_constructor_parameter(tmp_path, rng, monkeypatch):
    # 002: class CustomLoss(nn.Module) with custom_parameters, forward(predictions, targets)
    (tmp_path / "my_losses.py").write_text(textwrap.dedent("""
        import torch
        import torch.nn as nn
        class CustomLoss(nn.Module):
            def __init__(self, custom_parameters):
                super(CustomLoss, self).__init__()
                self.custom_parameters = custom_parameters
            def forward(self, predictions, targets):
                loss = torch.mean((predictions - targets)**2)
                return loss
    """))
    monkeypatch.chdir(tmp_path)
    data = _write(tmp_path, "reg", rng.normal(size=(40, 1, 12)), rng.normal(size=40))
    result = _cli(["train", "--data", data, "--task", "regression", "--loss", "my_losses:CustomLoss",
                   "--loss-param", "custom_parameters=0.5", "--out", "run"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["loss"] == {"name": "my_losses:CustomLoss",
                             "params": {"custom": "my_losses:CustomLoss", "kwargs": {"custom_parameters": "0.5"}}}
    result = _cli(["train", "--data", data, "--task", "regression", "--loss", "my_losses:CustomLoss", "--out", "r2"])
    assert result.exit_code == 2
    assert result.output.endswith("Error: --loss 'my_losses:CustomLoss': cannot construct CustomLoss (CustomLoss."
                                  "__init__() missing 1 required positional argument: 'custom_parameters'); pass its "
                                  "arguments with --loss-param NAME=VALUE\n")
