"""Every scenario of the four tutorials in shared/seeds, as CLI flags (no code edits)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from export.bundle import rebuild
from pipeline.cli import main


def _cli(args):
    return CliRunner().invoke(main, args + ["--epochs", "2", "--no-progress"], catch_exceptions=False)


def _hinge(p, t):  # numpy: mean max(0, 1 - y f) with 0/1 labels as -1/+1
    p, t = p.numpy().astype(np.float64), t.numpy().astype(np.float64)
    return float(np.maximum(0.0, 1.0 - (2 * t - 1) * p).mean())


# The loss each tutorial computes, from torch.nn (numpy for hinge), on the model's raw outputs.
REFERENCES = {
    "linear-y-2x-plus-1": lambda p, t: nn.MSELoss()(p, t),
    "cnn-regression-mse": lambda p, t: nn.MSELoss()(p, t),
    "cnn-binary-bce-sgd": lambda p, t: nn.BCELoss()(torch.sigmoid(p.double()), t.double()),
    "cnn-multiclass-ce": lambda p, t: nn.CrossEntropyLoss()(p, t.long().reshape(-1)),
    "imbalanced-weighted": lambda p, t: nn.BCEWithLogitsLoss(pos_weight=torch.tensor([5.0]))(p, t),
    "l1": lambda p, t: nn.L1Loss()(p, t),
    "multilabel": lambda p, t: nn.BCEWithLogitsLoss()(p, t),
    "hinge": _hinge,
    "huber": lambda p, t: nn.HuberLoss(delta=2.0)(p, t),
    "poisson": lambda p, t: nn.PoissonNLLLoss(log_input=True, full=False)(p, t),
    "mlp-10-classes": lambda p, t: nn.CrossEntropyLoss()(p, t.long().reshape(-1)),
}


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


def test_every_tutorial_scenario_has_a_reference():
    assert set(REFERENCES) == set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_tutorial_scenario_runs_through_the_cli(tmp_path, rng, name):
    make, flags = SCENARIOS[name]
    X, y = make(rng)
    out = tmp_path / "run"
    result = _cli(["train", "--data", _write(tmp_path, name, X, y), "--out", str(out), "--val-split", "0"] + flags)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # the loss the trainer reports for its best checkpoint is the tutorial's torch.nn loss of that model
    model = rebuild(out).model
    X = X.reshape(len(X), -1, X.shape[-1]) if X.ndim == 3 else X[:, None, :]
    with torch.no_grad():
        outputs = model(torch.from_numpy(X.astype(np.float32)))
    target = torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(len(y), -1))
    np.testing.assert_allclose(metrics["train"]["loss"], float(REFERENCES[name](outputs, target)), atol=1e-5,
                               rtol=1e-4)


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
