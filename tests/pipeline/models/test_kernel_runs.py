"""The kernel models through the paths a run takes: ensembles, DDP, resume, the head choice."""

from __future__ import annotations

import json

import pytest
import torch

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.training.checkpoint import load_checkpoint
from tests.conftest import run_pipeline

pytestmark = pytest.mark.slow  # real training runs and gloo processes


def _train(tmp_path, data, out, *flags):
    result = run_pipeline(["train", "--data", data, "--width", "0.1", "--no-progress", "--out", tmp_path / out, *flags],
                          tmp_path)
    assert result.returncode == 0, result.stderr
    return result


def test_a_minirocket_ensemble_fits_each_member_with_its_seed_and_exports_one_verified_graph(tmp_path, npz_file):
    data = npz_file("multiclass", n=40, length=24)
    _train(tmp_path, data, "ens", "--model", "minirocket", "--ensemble", "2")
    members = [load_checkpoint(tmp_path / "ens" / "members" / f"member-{i}" / "best.pt")["model"] for i in (0, 1)]
    bias = "net.transform.blocks.0.bias"
    assert not torch.equal(members[0][bias], members[1][bias])  # seed 0 and seed 1 draw other series
    exported = run_pipeline(["export", tmp_path / "ens"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = json.loads((tmp_path / "ens" / "bundle" / "verification.json").read_text())["rows"]
    assert all("near_threshold" in r for r in rows if r["graph"] == "model")
    verified = run_pipeline(["verify", tmp_path / "ens" / "bundle"], tmp_path)
    assert verified.returncode == 0 and verified.stdout.endswith("verified\n"), verified.stdout


@pytest.mark.parametrize("model, head", [("minirocket", "ridge"), ("hydra", "linear")])
def test_two_gloo_processes_fit_the_same_kernels_as_one_process(tmp_path, npz_file, model, head):
    """Every process fits the transform alike (the run ends with check_in_step over every buffer) and the run
    equals a single process's: the same biases, statistics and head."""
    data = npz_file("binary", n=40, length=24)
    flags = ["--model", model, "--head", head, "--epochs", "2", "--batch-size", "8", "--seed", "3"]
    _train(tmp_path, data, "one", *flags)
    two = _train(tmp_path, data, "two", *flags, "--nproc", "2")
    assert "on 2 processes (cpu)" in two.stdout and "Traceback" not in two.stderr
    single, parallel = (load_checkpoint(tmp_path / name / "best.pt")["model"] for name in ("one", "two"))
    for name, tensor in single.items():
        torch.testing.assert_close(parallel[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["model_config"]["head"] == head


def test_a_linear_head_resumes_to_the_weights_of_an_unbroken_run_and_a_ridge_run_is_done_after_its_fit(
        tmp_path, npz_file):
    data = npz_file("multiclass", n=40, length=24)
    flags = ["--model", "minirocket", "--head", "linear", "--batch-size", "8", "--patience", "0"]
    _train(tmp_path, data, "whole", *flags, "--epochs", "4")
    _train(tmp_path, data, "parts", *flags, "--epochs", "2")
    resumed = run_pipeline(["train", "--resume", tmp_path / "parts", "--epochs", "4", "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole, parts = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("whole", "parts"))
    for name, tensor in whole.items():
        torch.testing.assert_close(parts[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    _train(tmp_path, data, "ridge", "--model", "minirocket", "--tensorboard")
    events = EventAccumulator(str(tmp_path / "ridge" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    metrics = json.loads((tmp_path / "ridge" / "metrics.json").read_text())
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("loss/train")] == \
        [(1, round(metrics["train"]["loss"], 5))]  # the tracker sees the fit as its one epoch
    before = load_checkpoint(tmp_path / "ridge" / "best.pt")["model"]
    again = run_pipeline(["train", "--resume", tmp_path / "ridge", "--no-progress"], tmp_path)
    assert again.returncode == 0, again.stderr
    after = load_checkpoint(tmp_path / "ridge" / "best.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    history = load_checkpoint(tmp_path / "ridge" / "last.pt")["history"]
    assert [row["epoch"] for row in history] == [1]  # the fit, measured once


def test_head_is_refused_for_a_network_that_trains_its_own(tmp_path, npz_file):
    data = npz_file("multiclass", n=20, length=24)
    result = run_pipeline(["train", "--data", data, "--head", "ridge", "--no-progress", "--out", tmp_path / "r"],
                          tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("--head ridge applies to --model minirocket, hydra, multirocket-hydra; "
                                          "--model fcn trains its own head")
    assert not (tmp_path / "r").exists()
