"""The whole matrix a user can reach through the CLI: every task x every built-in loss x a custom loss trains
one epoch, exports both formats, and predict, evaluate and verify run on the bundle; every model at least once.
(DDP with the default fcn: tests/pipeline/training/test_distributed.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.settings.config import KERNEL_MODELS, MODEL_NAMES
from runtime.tasks import TASKS
from tests.conftest import make_task_data

pytestmark = pytest.mark.slow  # 19 train/export/score runs, about a minute

# One user-loss module for every task, the one docs/training.md trains with (FocalLoss: binary and multiclass).
USER_LOSSES = (Path(__file__).resolve().parents[1] / "examples" / "mylosses.py").read_text()
CUSTOM = {"regression": "matrixlosses:LogCosh", "binary": "matrixlosses:FocalLoss",
          "multiclass": "matrixlosses:FocalLoss", "multilabel": "matrixlosses:MultiLabelBCE",
          "count": "matrixlosses:Poisson"}
FLAGS = {"huber": ["--huber-delta", "0.5"], "smooth_l1": ["--beta", "0.3"], "bce_with_logits": ["--pos-weight", "2"],
         "cross_entropy": ["--class-weights", "balanced", "--label-smoothing", "0.1"],
         "nll": ["--class-weights", "1,2,1"], "multi_margin": ["--class-weights", "balanced"],
         "matrixlosses:FocalLoss": ["--loss-param", "gamma=2"]}
# forecasting runs on recordings with a horizon: its matrix is tests/pipeline/test_forecast.py's
COMBOS = [(task, loss) for task, spec in TASKS.items() if task != "forecast"
          for loss in (*spec.loss_names, CUSTOM[task])]
MODELS = {combo: MODEL_NAMES[i % len(MODEL_NAMES)] for i, combo in enumerate(COMBOS)}


def test_every_model_is_in_the_matrix():
    assert set(MODELS.values()) == set(MODEL_NAMES)


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("task, loss", COMBOS, ids=[f"{t}-{l}-{MODELS[(t, l)]}" for t, l in COMBOS])
def test_train_export_predict_evaluate_verify(tmp_path, monkeypatch, task, loss):
    round_trip(tmp_path, monkeypatch, task, loss, MODELS[(task, loss)])


# the kernel models' ridge head fits its output scale to the task's loss: every task, with the user's loss
KERNEL_COMBOS = [(model, task) for model in KERNEL_MODELS for task in TASKS if task != "forecast"]


@pytest.mark.parametrize("model, task", KERNEL_COMBOS, ids=[f"{m}-{t}" for m, t in KERNEL_COMBOS])
def test_kernel_models_round_trip_every_task_with_a_custom_loss(tmp_path, monkeypatch, model, task):
    round_trip(tmp_path, monkeypatch, task, CUSTOM[task], model)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model_config"]["head"] == "ridge"  # 24 series: the closed-form head


def round_trip(tmp_path, monkeypatch, task: str, loss: str, model: str) -> None:
    """Train one epoch, export both formats, then predict, evaluate and verify the bundle."""
    (tmp_path / "matrixlosses.py").write_text(USER_LOSSES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, seed in (("train", 0), ("test", 1)):
        X, y = make_task_data(task, n=24, length=12, seed=seed)
        np.savez(tmp_path / f"{name}.npz", X=X, y=y)
    result = run(["train", "--data", "train.npz", "--test-data", "test.npz", "--task", task, "--loss", loss,
                  *FLAGS.get(loss, []), "--model", model, "--epochs", "1", "--width", "0.125", "--no-progress",
                  "--out", "run"])
    assert result.exit_code == 0, result.output
    assert f"training {model} for {task} with loss {loss}" in result.output
    result = run(["export", "run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "wrote run/bundle"
    assert {"model.onnx", "loss.onnx", "model.pt", "loss.pt"} <= {p.name for p in (tmp_path / "run/bundle").iterdir()}

    result = run(["predict", "run/bundle", "--data", "test.npz", "--out", "p.csv"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 25 and rows[0][0] == "row" and [r[0] for r in rows[1:]] == [str(i) for i in range(24)]

    result = run(["evaluate", "run/bundle", "--data", "test.npz", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    trainer = json.loads((tmp_path / "run/metrics.json").read_text())["test"]  # the trainer's own evaluation
    np.testing.assert_allclose(got["loss"], trainer["loss"], atol=1e-5, rtol=1e-5)
    for metric, value in trainer.items():
        if metric != "loss":
            assert got[metric] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), metric  # the export tolerance

    result = run(["verify", "run/bundle"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(" of the tolerance: ok\nverified\n")
    assert "torchscript" in result.output and "onnxruntime" in result.output
