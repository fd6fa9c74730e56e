"""Crashes lose nothing: real processes killed with SIGKILL mid-epoch and mid-write, hostile checkpoints."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch

import runtime
from pipeline.training.checkpoint import load_checkpoint
from tests.conftest import run_pipeline, subprocess_env

pytestmark = pytest.mark.slow  # kills real training and export processes

TRAIN = ["train", "--task", "multiclass", "--model", "fcn", "--width", "0.25", "--batch-size", "16",
         "--val-split", "0.2", "--patience", "0", "--seed", "5", "--no-progress"]


def _epochs_done(run_dir) -> list[dict]:
    try:
        with open(run_dir / "history.csv") as f:
            return list(csv.DictReader(f))
    except (FileNotFoundError, csv.Error):
        return []


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


DIE_MID_EPOCH = """
import os, signal, sys
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
real_save = torch.save
seen = {"last": 0, "steps": 0}

def count_saves(obj, f, *args, **kwargs):
    if ".last.pt." in str(f):
        seen["last"] += 1
    return real_save(obj, f, *args, **kwargs)

def die_mid_epoch_3(optimizer, args, kwargs):
    if seen["last"] == 2:  # epoch 2's checkpoint is whole: the run is inside epoch 3
        seen["steps"] += 1
        if seen["steps"] == 5:  # five optimizer steps into epoch 3, of ten
            os.kill(os.getpid(), signal.SIGKILL)

torch.save = count_saves
register_optimizer_step_pre_hook(die_mid_epoch_3)
from pipeline.cli import main
main(sys.argv[1:])
"""


def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path, npz_file):
    data = npz_file("multiclass", n=200, length=32)  # 160 training series: ten steps of 16 an epoch
    args = [*TRAIN, "--data", data, "--epochs", "5"]
    straight = run_pipeline([*args, "--out", tmp_path / "straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr

    crashed = tmp_path / "crashed"
    (tmp_path / "die_mid_epoch.py").write_text(DIE_MID_EPOCH)
    killed = subprocess.run([sys.executable, "die_mid_epoch.py", *map(str, args), "--out", str(crashed)],
                            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_epochs_done(crashed)) == 2  # killed inside epoch 3, before its checkpoint
    assert load_checkpoint(crashed / "last.pt")["epoch"] == 2

    resumed = run_pipeline(["train", "--resume", crashed], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "at epoch 3 of 5" in resumed.stdout
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(crashed / "last.pt")
    assert a["epoch"] == b["epoch"] == 5
    assert _same_weights(a["model"], b["model"])
    assert _same_weights(load_checkpoint(tmp_path / "straight" / "best.pt")["model"],
                         load_checkpoint(crashed / "best.pt")["model"])
    assert [row["epoch"] for row in _epochs_done(crashed)] == ["1", "2", "3", "4", "5"]


DIE_AT_SAVE = """
import os, signal, sys
import torch
real_save = torch.save
seen = {"n": 0}

def save_then_die(obj, f, *args, **kwargs):
    if ".last.pt." in str(f):
        seen["n"] += 1
        if seen["n"] == 2:  # the second epoch's last.pt: half a file written, then killed
            with open(f, "wb") as out:
                out.write(b"PK\\x03\\x04 half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save_then_die
from pipeline.cli import main
main(sys.argv[1:])
"""


def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path, npz_file):
    (tmp_path / "die_at_save.py").write_text(DIE_AT_SAVE)
    run_dir = tmp_path / "run"
    args = [*TRAIN, "--data", npz_file("multiclass", n=80, length=16), "--epochs", "3", "--out", run_dir]
    proc = subprocess.run([sys.executable, "die_at_save.py", *map(str, args)], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(run_dir / "last.pt")  # epoch 1's, whole
    assert state["epoch"] == 1
    leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.")  # the killed writer's half file
    resumed = run_pipeline(["train", "--resume", run_dir], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []  # the dead writer's file is gone


DIE_IN_EXPORT = """
import os, signal, sys
import export.bundle as bundle

real = bundle.export_torchscript

def export_then_die(module, example, path, what="graph"):
    result = real(module, example, path, what)
    if path.name == "loss.pt":  # model.onnx, loss.onnx, model.pt and loss.pt written into the temp folder
        os.kill(os.getpid(), signal.SIGKILL)
    return result

bundle.export_torchscript = export_then_die
from pipeline.cli import main
main(sys.argv[1:])
"""


def test_a_kill_while_exporting_leaves_the_previous_bundle_loadable(tmp_path, npz_file):
    run_dir = tmp_path / "run"
    trained = run_pipeline([*TRAIN, "--data", npz_file("multiclass", n=60, length=16), "--epochs", "1", "--out",
                         run_dir], tmp_path)
    assert trained.returncode == 0, trained.stderr
    first = run_pipeline(["export", run_dir, "--format", "onnx"], tmp_path)
    assert first.returncode == 0, first.stderr
    manifest = (run_dir / "bundle" / "manifest.json").read_text()
    (tmp_path / "die_in_export.py").write_text(DIE_IN_EXPORT)
    killed = subprocess.run([sys.executable, "die_in_export.py", "export", str(run_dir), "--format", "all", "--force"],
                            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / "bundle" / "manifest.json").read_text() == manifest
    bundle = runtime.load(run_dir / "bundle")  # every sha256 checked
    assert bundle.predict(torch.randn(3, 1, 16).numpy())["logits"].shape == (3, 3)
    assert len([p for p in run_dir.iterdir() if p.name.startswith(".bundle.") and p.name.endswith(".tmp")]) == 1
    again = run_pipeline(["export", run_dir, "--format", "all", "--force"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_a_bundle_left_aside_by_a_kill_between_renames_is_restored(tmp_path, npz_file):
    run_dir = tmp_path / "run"
    assert run_pipeline([*TRAIN, "--data", npz_file("multiclass", n=60, length=16), "--epochs", "1", "--out",
                      run_dir], tmp_path).returncode == 0
    assert run_pipeline(["export", run_dir, "--format", "onnx"], tmp_path).returncode == 0
    (run_dir / "bundle").rename(run_dir / ".bundle.old")  # the state between the two renames
    again = run_pipeline(["export", run_dir, "--format", "onnx"], tmp_path)
    assert again.returncode == 2
    assert again.stdout == f"restored {run_dir / 'bundle'} (an earlier export was stopped while replacing it)\n"
    assert again.stderr == (f"Error: {run_dir / 'bundle'} already exists; pass --force to replace it or choose "
                            "another --out\n")
    runtime.load(run_dir / "bundle")


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["export", "resume"])
def test_a_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path, npz_file, command):
    run_dir = tmp_path / "run"
    assert run_pipeline([*TRAIN, "--data", npz_file("multiclass", n=60, length=16), "--epochs", "1", "--out",
                      run_dir], tmp_path).returncode == 0
    marker = tmp_path / "pwned"
    name = "best.pt" if command == "export" else "last.pt"
    state = load_checkpoint(run_dir / name)
    state["payload"] = RunsCode(marker)
    torch.save(state, run_dir / name)
    args = ["export", run_dir] if command == "export" else ["train", "--resume", run_dir, "--epochs", "2"]
    result = run_pipeline(args, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: {run_dir / name}: not a loadable pipeline checkpoint (Weights only load failed")
    assert not marker.exists()
