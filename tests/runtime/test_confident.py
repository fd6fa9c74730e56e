"""A confidently trained model (logits of +-20..100) evaluated through the bundle agrees with the trainer's
own loss and metrics; `pipeline verify` checks TorchScript-only bundles too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.bundle import rebuild
from pipeline.training.checkpoint import BEST, load_checkpoint, save_checkpoint
from pipeline.cli import main
from pipeline.data.load import Split
from pipeline.training.batching import BatchSource, evaluate
from tests.conftest import make_task_data

CASES = [("binary", "bce_with_logits", ["--pos-weight", "2"]), ("binary", "bce", []),
         ("multilabel", "bce_with_logits", []), ("multilabel", "multilabel_soft_margin", []),
         ("multiclass", "cross_entropy", ["--label-smoothing", "0.1"])]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _make_confident(run_dir, scale: float) -> None:
    """Scale the output layer so the model's logits reach the size trained classifiers emit."""
    state = load_checkpoint(run_dir / BEST)
    for key in ("net.head.weight", "net.head.bias"):
        state["model"][key] = state["model"][key] * scale
    state.pop("format")
    save_checkpoint(run_dir / BEST, state)


@pytest.mark.slow  # five trainings and exports
@pytest.mark.parametrize("task, loss, flags", CASES, ids=[f"{t}-{l}" for t, l, _ in CASES])
def test_evaluate_of_a_confident_model_equals_the_trainers_loss_and_metrics(tmp_path, task, loss, flags):
    for name, seed in (("train", 0), ("test", 1)):
        X, y = make_task_data(task, n=48, length=16, seed=seed)
        np.savez(tmp_path / f"{name}.npz", X=X, y=y)
    result = run(["train", "--data", tmp_path / "train.npz", "--task", task, "--loss", loss, *flags, "--epochs", "3",
                  "--lr", "0.01", "--width", "0.25", "--no-progress", "--out", tmp_path / "run"])
    assert result.exit_code == 0, result.output
    _make_confident(tmp_path / "run", 60.0)
    assert run(["export", tmp_path / "run", "--format", "onnx"]).exit_code == 0
    result = run(["evaluate", tmp_path / "run" / "bundle", "--data", tmp_path / "test.npz", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    # the trainer's own evaluation of the same checkpoint, in eager PyTorch
    rebuilt = rebuild(tmp_path / "run")
    model, loss_fn = rebuilt.model, rebuilt.loss
    X, y = make_task_data(task, n=48, length=16, seed=1)
    targets = y.astype(np.int64) if task == "multiclass" else y.reshape(len(y), -1).astype(np.float32)
    source = BatchSource(Split(X, np.arange(len(X)), targets, "test"), torch.device("cpu"))
    expected = evaluate(model, loss_fn, source, task)
    with torch.no_grad():
        logits = model(torch.from_numpy(X))
    assert float(logits.abs().max()) > 20  # confident, as a trained classifier is
    assert np.isfinite(got["loss"])
    np.testing.assert_allclose(got["loss"], expected["loss"], atol=1e-5, rtol=1e-5)
    for metric, value in expected.items():
        if metric != "loss":
            assert got[metric] == pytest.approx(value, abs=1e-9), metric


def test_verify_checks_a_torchscript_only_bundle(tmp_path):
    X, y = make_task_data("regression", n=32, length=16)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert run(["train", "--data", tmp_path / "d.npz", "--epochs", "1", "--width", "0.125", "--no-progress",
                "--out", tmp_path / "run"]).exit_code == 0
    assert run(["export", tmp_path / "run", "--format", "torchscript"]).exit_code == 0
    result = run(["verify", tmp_path / "run" / "bundle"])
    assert result.exit_code == 0, result.output
    signature, *lines = result.output.splitlines()
    assert signature.startswith("signature: none")
    golden = [line.split()[:3] for line in lines[4:7]]
    assert golden == [["model", "torchscript", "prediction"], ["loss", "torchscript", "loss"],
                      ["loss", "torchscript", "per_sample_loss"]]
    assert all(line.endswith("  ok") for line in lines[4:7])
    assert lines[-2].startswith("27 checks, worst |diff| ") and lines[-1] == "verified"  # 13 x 1 + 7 x 2
    # a loss.pt that computes something else (re-scripted with another delta, manifest updated) fails
    state = load_checkpoint(tmp_path / "run" / BEST)
    from export.bundle import sha256
    from pipeline.losses import build_loss

    other = torch.jit.script(build_loss("huber", {"huber_delta": 0.01}))
    other.save(str(tmp_path / "run" / "bundle" / "loss.pt"))
    manifest_path = tmp_path / "run" / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["files"]["loss.pt"]
    entry["sha256"], entry["bytes"] = sha256(tmp_path / "run" / "bundle" / "loss.pt"), \
        (tmp_path / "run" / "bundle" / "loss.pt").stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    assert state["loss"]["name"] == "mse"
    result = run(["verify", tmp_path / "run" / "bundle"])
    assert result.exit_code == 1
    assert any(line.startswith("loss   torchscript  loss") and line.endswith("values differ beyond tolerance")
               for line in result.output.splitlines())
