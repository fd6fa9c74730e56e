"""The training loop end to end on tiny data: every task x loss learns, determinism, resume, files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.training.checkpoint import load_checkpoint
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.models.build import build_model
from runtime.tasks import TASKS
from pipeline.training.run_folder import TRAINING_FILES
from pipeline.training.batching import batch_bounds
from pipeline.training.train import resume, train

QUIET = dict(log=lambda _: None)


def _train(tmp_path, npz, task, loss=None, model="simple-cnn", epochs=6, out="run", **train_kwargs):
    cfg = dict(epochs=epochs, batch_size=16, lr=1e-2, seed=3, progress=False, patience=0, scheduler="none")
    cfg.update(train_kwargs)
    return train(RunSettings(DataConfig(data=str(npz), task=task, val_split=0.25),
                 LossConfig(name=loss, **({"pos_weight": (2.0,)} if loss == "bce_with_logits" else {})),
                 ModelConfig(name=model, width=0.5), TrainConfig(**cfg)), out=tmp_path / out, **QUIET)


# forecasting trains on recordings with a horizon: tests/pipeline/test_forecast.py trains each of its losses
TASK_LOSSES = [(task, spec.name) for task, t in TASKS.items() if task != "forecast" for spec in t.losses]


@pytest.mark.parametrize("task, loss", TASK_LOSSES, ids=[f"{t}-{l}" for t, l in TASK_LOSSES])
def test_every_task_and_loss_trains_and_the_loss_decreases(tmp_path, npz_file, task, loss):
    result = _train(tmp_path, npz_file(task), task, loss)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses
    assert result.metrics["task"] == task and result.metrics["loss"] == loss
    assert set(TASKS[task].metrics) <= set(result.metrics["val"])


def test_run_writes_exactly_these_files(tmp_path, npz_file):
    result = _train(tmp_path, npz_file("binary"), "binary", epochs=2)
    assert sorted(p.name for p in result.run_dir.iterdir()) == sorted(TRAINING_FILES)
    with open(result.run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    png = (result.run_dir / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["val"]) == {"loss", "accuracy", "f1", "roc_auc"}


def test_same_seed_gives_identical_history(tmp_path, npz_file):
    data = npz_file("multiclass")
    a = _train(tmp_path, data, "multiclass", model="fcn", epochs=3, out="a")
    b = _train(tmp_path, data, "multiclass", model="fcn", epochs=3, out="b")
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    sa, sb = load_checkpoint(a.run_dir / "last.pt")["model"], load_checkpoint(b.run_dir / "last.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_equals_an_uninterrupted_run(tmp_path, npz_file):
    data = npz_file("multiclass")
    kw = dict(model="fcn", scheduler="plateau", patience=5)
    straight = _train(tmp_path, data, "multiclass", epochs=4, out="straight", **kw)
    _train(tmp_path, data, "multiclass", epochs=2, out="split", **kw)
    resumed = resume(tmp_path / "split", epochs=4, **QUIET)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    a = load_checkpoint(straight.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["epoch"] == b["epoch"] == 4


def test_checkpoint_rebuilds_the_model_from_its_config(tmp_path, npz_file):
    result = _train(tmp_path, npz_file("regression"), "regression", model="fcn", epochs=1)
    state = load_checkpoint(result.run_dir / "best.pt")
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    assert not any(k.startswith("_orig_mod.") for k in state["model"])
    # channel statistics are inside the weights, so raw series go in
    assert float(state["model"]["normalize.std"].min()) > 0
    assert state["loss"] == {"name": "mse", "params": {}}


def test_class_weights_balanced_are_recorded(tmp_path, npz_file):
    npz = npz_file("multiclass")
    result = train(RunSettings(DataConfig(data=str(npz), val_split=0.0),
                   LossConfig(class_weights="balanced", label_smoothing=0.1),
                   ModelConfig(name="linear"), TrainConfig(epochs=1, progress=False)), out=tmp_path / "r", **QUIET)
    saved = json.loads((result.run_dir / "config.json").read_text())
    y = np.load(npz)["y"]
    counts = np.bincount(y)
    assert saved["loss"]["params"]["class_weights"] == pytest.approx(list(len(y) / (3 * counts)))
    assert saved["loss"]["params"]["label_smoothing"] == 0.1
    assert result.metrics["selected_by"] == "train_loss"


def test_memory_mapped_training_matches_in_memory(tmp_path, npz_file, monkeypatch):
    from pipeline.data import readers

    data = npz_file("binary")
    in_memory = _train(tmp_path, data, "binary", epochs=2, out="mem")
    monkeypatch.setattr(readers, "MMAP_THRESHOLD_BYTES", 1)
    mapped = _train(tmp_path, data, "binary", epochs=2, out="map")
    for a, b in zip(in_memory.history, mapped.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-7)


def test_batch_bounds_never_leave_a_single_sample_batch():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(3, 8) == [(0, 3)]


@pytest.mark.slow  # torch.compile of the training step
def test_compiled_training_has_no_recompiles_after_the_first_epoch(tmp_path, npz_file):
    npz = npz_file("multiclass", n=50)  # 50 % 16 leaves a partial last batch every epoch
    result = _train(tmp_path, npz, "multiclass", model="linear", epochs=3, compile="on")
    info = result.metrics["compile"]
    assert info["recompiles_after_epoch_1"] == 0 and info["graphs"] >= 1
    state = load_checkpoint(result.run_dir / "last.pt")
    assert not any(k.startswith("_orig_mod.") for k in state["model"])


def test_cli_train_end_to_end_and_resume(tmp_path, npz_file):
    npz = npz_file("binary")
    runner = CliRunner()
    out = tmp_path / "cli-run"
    result = runner.invoke(main, ["train", "--data", str(npz), "--model", "linear", "--epochs", "2",
                                  "--out", str(out), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"run folder: {out}\n" in result.output and f"wrote {out}\n" in result.output
    assert "task: binary (inferred: array 'y' holds only 0 and 1; pass --task to choose)" in result.output
    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "3", "--no-progress"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"resuming {out} at epoch 3 of 3" in result.output
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_training_of_fcn(tmp_path, npz_file):
    npz = npz_file("multiclass", n=300, length=64)
    result = _train(tmp_path, npz, "multiclass", model="fcn", epochs=3, compile="on", device="cuda",
                    precision="bf16")
    assert result.metrics["compile"]["recompiles_after_epoch_1"] == 0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_a_non_finite_loss_stops_training_naming_epoch_and_batch_and_keeps_the_last_checkpoint(
        tmp_path, npz_file, monkeypatch):
    import pipeline.training.batching as batching
    from pipeline.errors import PipelineError

    real_batch = batching.BatchSource.batch
    steps = {"n": 0}

    def batch_with_nan_at_step_8(self, idx):
        x, y = real_batch(self, idx)
        if len(idx) == 8:  # training batches (the statistics pass reads all 40 rows at once)
            steps["n"] += 1
            if steps["n"] == 8:  # epoch 2 (5 batches per epoch), batch 3
                x = torch.full_like(x, float("nan"))
        return x, y

    monkeypatch.setattr(batching.BatchSource, "batch", batch_with_nan_at_step_8)
    run_dir = tmp_path / "run"
    with pytest.raises(PipelineError) as err:
        data = DataConfig(data=str(npz_file("multiclass", n=40, length=16)), task="multiclass", val_split=0.0)
        train(RunSettings(data, LossConfig(), ModelConfig(name="simple-cnn", width=0.5),
                          TrainConfig(epochs=4, batch_size=8, progress=False, patience=0)), out=run_dir, **QUIET)
    assert str(err.value) == (f"training diverged: loss is nan at epoch 2, batch 3; lower --lr or check the data. "
                              f"The last good checkpoint is {run_dir / 'last.pt'}")
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_threads_are_set_once_for_the_whole_run_and_recorded(tmp_path, npz_file):
    """--threads 1: the run (the kernel model's fit included) runs on one torch thread, and says so in its
    config; without it the process keeps torch's own count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run = train(RunSettings(DataConfig(data=str(npz_file("multiclass", n=30, length=24)), val_split=0.0),
                                LossConfig(), ModelConfig(name="minirocket", width=0.1),
                                TrainConfig(threads=1, progress=False)), out=tmp_path / "one", log=lambda _: None)
        assert torch.get_num_threads() == 1
        assert json.loads((run.run_dir / "config.json").read_text())["train"]["threads"] == 1
        torch.set_num_threads(2)
        train(RunSettings(DataConfig(data=str(npz_file("multiclass", n=30, length=24)), val_split=0.0),
                          LossConfig(), ModelConfig(name="minirocket", width=0.1), TrainConfig(progress=False)),
              out=tmp_path / "default", log=lambda _: None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
