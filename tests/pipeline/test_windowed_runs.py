"""Windowed runs (train --window) across what a user can reach: every model (each task on two of them), an
ensemble exported as ONNX, TorchScript and torch.export with int8 and TensorBoard, DDP with MLflow, resume and
AOTInductor; each bundle's windows equal eager PyTorch's, and a stream equals predict_windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import runtime
from pipeline.settings.config import MODELS
from tests.conftest import eager_windows, make_recordings, run_pipeline, write_recordings_csv

pytestmark = pytest.mark.slow
TASKS = ("multiclass", "regression", "binary", "multilabel", "count")
LENGTH, STRIDE = 16, 8
# the same graph on the same windows, batched differently (onnxruntime may vectorise other batch sizes apart)
SAME = 1e-6


def recordings_npz(path, task: str, seed: int = 0):
    """Three recordings of 120 samples, 2 channels, labels per time step for `task`, as an .npz."""
    recordings, _ = make_recordings("regression", count=3, samples=120, seed=seed)
    X = np.stack([r[:, :120] for r in recordings])  # (3, 2, 120)
    level = np.stack([np.convolve(x[0], np.ones(8) / 8)[:120] for x in X])  # (3, 120) causal level
    y = {"multiclass": np.digitize(level, [-0.75, 0.75]), "regression": 10 * level + 100,
         "binary": (level > 0).astype(int), "count": np.round(np.exp(level)).astype(int),
         "multilabel": np.stack([level > 0, level > 0.75], axis=-1).astype(int)}[task]
    np.savez(path, X=X, y=y)
    return path, X


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_trains_on_windows_and_its_bundle_matches_eager(model, tmp_path):
    from export.bundle import ExportConfig, export_run
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    task = TASKS[list(MODELS).index(model) % len(TASKS)]  # ten models: each task twice
    data, X = recordings_npz(tmp_path / f"{task}.npz", task)
    run = train(RunSettings(DataConfig(data=str(data), task=task, window=LENGTH, stride=STRIDE),
                            LossConfig(), ModelConfig(name=model, width=0.125),
                            TrainConfig(epochs=1, batch_size=8, seed=0, progress=False)),
                out=tmp_path / f"run-{task}", log=lambda _: None)
    bundle = runtime.load(export_run(run.run_dir, ExportConfig(fmt="onnx"), log=lambda _: None))
    assert (bundle.window.length, bundle.window.stride, bundle.window.label) == (LENGTH, STRIDE, "last")
    unseen = make_recordings("regression", count=1, samples=90, seed=7)[0][0]
    whole = bundle.predict_windows(unseen)
    eager = eager_windows(run.run_dir, unseen, LENGTH, STRIDE)
    stream = bundle.stream()
    parts = [stream.push(unseen[:, a:a + 13]) for a in range(0, 90, 13)]
    assert whole["start"].tolist() == eager["start"] == np.concatenate([p["start"] for p in parts]).tolist()
    for name in bundle.outputs:
        np.testing.assert_allclose(whole[name], eager[name], atol=1e-4, rtol=1e-4, err_msg=f"{model} {task}")
        np.testing.assert_allclose(np.concatenate([p[name] for p in parts]), whole[name], atol=SAME, rtol=SAME)


def test_a_windowed_ensemble_exports_every_format_with_int8_and_tensorboard(tmp_path):
    recordings, labels = make_recordings("multiclass", count=4, samples=160)
    data = write_recordings_csv(tmp_path / "rec.csv", recordings, labels)
    flags = ["--window", "16", "--stride", "4", "--recording-column", "recording", "--time-column", "time"]
    trained = run_pipeline(["train", "--data", data, *flags, "--ensemble", "2", "--width", "0.125", "--epochs", "2",
                            "--tensorboard", "--no-progress", "--out", tmp_path / "run"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "tensorboard").is_dir()
    exported = run_pipeline(["export", tmp_path / "run", "--format", "onnx,torchscript,pt2", "--quantize", "int8",
                             "--max-metric-drop", "100"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    bundle_dir = tmp_path / "run" / "bundle"
    assert {"model.onnx", "model.pt", "model.pt2", "model.int8.onnx"} <= {p.name for p in bundle_dir.iterdir()}
    for precision in ("fp32", "int8"):
        bundle = runtime.load(bundle_dir, precision=precision)
        stream = bundle.stream()
        parts = [stream.push(recordings[1][:, a:a + 50]) for a in range(0, recordings[1].shape[1], 50)]
        whole = bundle.predict_windows(recordings[1])
        np.testing.assert_allclose(np.concatenate([p["probabilities"] for p in parts]), whole["probabilities"],
                                   atol=SAME, rtol=SAME)
    verified = run_pipeline(["verify", bundle_dir], tmp_path)
    assert verified.returncode == 0 and verified.stdout.endswith("verified\n"), verified.stdout + verified.stderr


def test_windowed_training_under_ddp_with_mlflow_then_resumed_and_exported_with_aotinductor(tmp_path):
    recordings, labels = make_recordings("regression", count=5, samples=120)
    data = write_recordings_csv(tmp_path / "rec.csv", recordings, labels)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--window", "16", "--stride", "4", "--recording-column", "recording", "--time-column", "time"]
    trained = run_pipeline(["train", "--data", data, *flags, "--nproc", "2", "--width", "0.125", "--epochs", "1",
                            "--batch-size", "8", "--mlflow", store, "--no-progress", "--out", tmp_path / "ddp"],
                           tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "on 2 processes (cpu)" in trained.stdout and trained.stdout.count("mlflow: run ") == 1
    resumed = run_pipeline(["train", "--resume", tmp_path / "ddp", "--epochs", "2", "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 1 and metrics["window"]["split"] == \
        "by recording: 1 of 5 recordings held out (r2), --val-split 0.2"
    assert len(json.loads((tmp_path / "ddp" / "config.json").read_text())) > 0
    # AOTInductor too: the package is checked against eager at export like every graph
    exported = run_pipeline(["export", tmp_path / "ddp", "--format", "onnx,aoti"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "ddp" / "bundle" / "manifest.json").read_text())
    assert manifest["window"] == metrics["window"] and "model.aoti.pt2" in manifest["files"]
