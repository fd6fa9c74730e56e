"""torchrun data parallelism on CPU (gloo): the same run as one process, one set of artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.distributed import Ranks, shard
from pipeline.training.run_folder import TRAINING_FILES
from tests.conftest import run_pipeline

ATOL, RTOL = 1e-5, 1e-4


def test_shards_cover_the_global_batch_in_order():
    for world in (1, 2, 3):
        for start, stop in ((0, 8), (8, 15), (3, 5)):
            pieces = [shard(start, stop, Ranks(rank, world)) for rank in range(world)]
            assert pieces[0][0] == start and pieces[-1][1] == stop
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
            sizes = [b - a for a, b in pieces]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow  # real gloo processes
def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(tmp_path, npz_file):
    data = npz_file("multiclass", n=60, length=16)
    common = ["train", "--data", str(data), "--task", "multiclass", "--val-split", "0.2", "--model", "simple-cnn",
              "--width", "0.5", "--epochs", "3", "--batch-size", "11", "--lr", "0.01", "--scheduler", "none",
              "--patience", "0", "--seed", "3", "--no-progress",
              "--precision", "fp32"]  # equal to 1e-5 is an fp32 property: bf16 rounds each process's shard anew
    one = run_pipeline([*common, "--out", tmp_path / "one"], tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_pipeline([*common, "--out", tmp_path / "two", "--nproc", "2"], tmp_path)
    assert two.returncode == 0, two.stderr
    # one set of artifacts, written once, and one voice in the log
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(TRAINING_FILES)
    assert two.stdout.count("run folder:") == 1 and two.stdout.count("wrote ") == 1
    assert "on 2 processes (cpu)" in two.stdout
    single, parallel = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    for name, tensor in single["model"].items():
        torch.testing.assert_close(parallel["model"][name], tensor, atol=ATOL, rtol=RTOL, msg=name)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["processes"] == 2 and m1["processes"] == 1
    for split in ("train", "val"):
        np.testing.assert_allclose(m2[split]["loss"], m1[split]["loss"], atol=ATOL, rtol=RTOL)
        assert m2[split]["accuracy"] == m1[split]["accuracy"]
    h1 = [r["train_loss"] for r in single["history"]]
    h2 = [r["train_loss"] for r in parallel["history"]]
    np.testing.assert_allclose(h2, h1, atol=ATOL, rtol=RTOL)


def _average_in_process(rank: int, world: int, init_file: str, results) -> None:
    import torch.distributed as dist

    from pipeline.training.distributed import average_buffers

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    bn = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.running_mean.fill_(float(rank + 1))  # rank 0: 1, rank 1: 2
        bn.running_var.fill_(float(10 * (rank + 1)))
    bn.num_batches_tracked.fill_(7)
    average_buffers(bn, Ranks(rank, world))
    results[rank] = (bn.running_mean.tolist(), bn.running_var.tolist(), int(bn.num_batches_tracked))
    dist.destroy_process_group()


@pytest.mark.slow  # real gloo processes
def test_average_buffers_gives_every_process_the_mean_running_statistics(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_average_in_process, args=(2, str(tmp_path / "init"), results), nprocs=2)
        assert dict(results) == {0: ([1.5, 1.5], [15.0, 15.0], 7), 1: ([1.5, 1.5], [15.0, 15.0], 7)}


@pytest.mark.slow  # real gloo processes
def test_two_gloo_processes_train_the_default_batchnorm_model_and_export_it(tmp_path, npz_file):
    """fcn (BatchNorm) under DDP in bf16: the processes end in step, and the run exports and verifies (fp32)."""
    data = npz_file("multiclass", n=40, length=16)
    result = run_pipeline(["train", "--data", data, "--nproc", "2", "--width", "0.125", "--epochs", "2",
                           "--batch-size", "8", "--precision", "bf16", "--no-progress", "--out", tmp_path / "ddp"],
                          tmp_path)
    assert result.returncode == 0, result.stderr
    assert "on 2 processes (cpu)" in result.stdout and "Traceback" not in result.stderr
    assert result.stdout.count("precision: bf16 (--precision bf16)") == 1  # one voice
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["precision"]["used"] == "bf16"
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(TRAINING_FILES)
    state = load_checkpoint(tmp_path / "ddp" / "best.pt")
    assert any(name.endswith("running_mean") for name in state["model"])
    exported = run_pipeline(["export", tmp_path / "ddp"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    verified = run_pipeline(["verify", tmp_path / "ddp" / "bundle"], tmp_path)
    assert verified.returncode == 0 and verified.stdout.endswith("verified\n"), verified.stdout


@pytest.mark.slow  # real gloo processes
@pytest.mark.parametrize("model, members", [("inception", 1), ("lite", 2)])
def test_two_gloo_processes_train_inception_and_a_lite_ensemble_and_export_them(tmp_path, npz_file, model, members):
    """The papers' models (BatchNorm, concatenated branches, fixed filters) under DDP; an ensemble trains each
    member under DDP, rank 0 writes the ensemble, and it exports and verifies."""
    data = npz_file("multiclass", n=40, length=16)
    result = run_pipeline(["train", "--data", data, "--nproc", "2", "--model", model, "--ensemble", str(members),
                           "--width", "0.125", "--epochs", "2", "--batch-size", "8", "--no-progress", "--out",
                           tmp_path / "ddp"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "on 2 processes (cpu)" in result.stdout and "Traceback" not in result.stderr
    assert result.stdout.count("run folder:") == 1  # one voice
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics.get("ensemble", 1) == members
    exported = run_pipeline(["export", tmp_path / "ddp"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    verified = run_pipeline(["verify", tmp_path / "ddp" / "bundle"], tmp_path)
    assert verified.returncode == 0 and verified.stdout.endswith("verified\n"), verified.stdout


@pytest.mark.slow  # real gloo processes
def test_under_ddp_only_rank_0_writes_tensorboard_events_and_the_mlflow_run(tmp_path, npz_file):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = npz_file("regression", n=40, length=16)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_pipeline(["train", "--data", data, "--nproc", "2", "--width", "0.125", "--epochs", "2",
                           "--batch-size", "8", "--no-progress", "--model", "simple-cnn", "--tensorboard",
                           "--mlflow", store, "--out", tmp_path / "ddp"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted([*TRAINING_FILES, "tensorboard"])
    acc = EventAccumulator(str(tmp_path / "ddp" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]  # one writer: no epoch twice
    assert result.stdout.count("tensorboard: ") == 1 and result.stdout.count("mlflow: run ") == 1
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one process logged, once
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/train")] == [1, 2]
    assert runs[0].data.params["train.mlflow"] == store
