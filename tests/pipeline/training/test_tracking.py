"""TensorBoard tracking: the event files hold exactly history.csv's series, a resume continues them."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.cli import main
from pipeline.errors import PipelineError
from runtime.tasks import TASKS

TINY = ["--width", "0.125", "--no-progress", "--model", "simple-cnn"]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_event_files_hold_history_csv_and_a_resume_continues_them(npz_file, tmp_path):
    data = npz_file("multiclass")
    run_dir = tmp_path / "run"
    first = run(["train", "--data", data, "--out", run_dir, "--epochs", "2", "--val-split", "0.25",
                 "--tensorboard", *TINY])
    assert first.exit_code == 0, first.output
    board = run_dir / "tensorboard"
    assert f"tensorboard: {board.resolve()} (tensorboard --logdir {board.resolve()})" in first.output
    assert json.loads((run_dir / "config.json").read_text())["train"]["tensorboard"] == str(board.resolve())
    resumed = run(["train", "--resume", run_dir, "--epochs", "4"])
    assert resumed.exit_code == 0, resumed.output
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    acc = _events(board)
    steps = [1, 2, 3, 4]
    for tag, column in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("val/accuracy", "val_accuracy"),
                        ("lr", "lr"), ("seconds", "seconds")):
        got = _series(acc, tag)
        assert [s for s, _ in got] == steps, tag  # every epoch once, also across the resume
        np.testing.assert_allclose([v for _, v in got], [float(r[column]) for r in history], rtol=1e-6, atol=0,
                                   err_msg=tag)
    # every metric of the task, per epoch; the model graph once; the hparams with the final metrics
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in TASKS["multiclass"].metrics:
        assert [s for s, _ in _series(acc, f"val/{name}")] == steps
    assert acc.Tags()["graph"] is True
    final = dict(_series(acc, "final/val_accuracy"))
    assert list(final.values()) == pytest.approx([metrics["val"]["accuracy"]], rel=1e-6)


def test_force_removes_only_the_earlier_runs_event_files(npz_file, tmp_path):
    data = npz_file("binary")
    run_dir = tmp_path / "run"
    assert run(["train", "--data", data, "--out", run_dir, "--epochs", "1", "--tensorboard", *TINY]).exit_code == 0
    note = run_dir / "tensorboard" / "notes.txt"
    note.write_text("mine")
    old = sorted(p.name for p in (run_dir / "tensorboard").iterdir() if p.name.startswith("events."))
    assert old
    again = run(["train", "--data", data, "--out", run_dir, "--epochs", "1", "--force", "--tensorboard", *TINY])
    assert again.exit_code == 0, again.output
    now = sorted(p.name for p in (run_dir / "tensorboard").iterdir() if p.name.startswith("events."))
    assert not set(old) & set(now) and note.read_text() == "mine"
    assert [s for s, _ in _series(_events(run_dir / "tensorboard"), "loss/train")] == [1]


def test_a_missing_tensorboard_package_is_one_clear_line(monkeypatch, tmp_path):
    from pipeline.training.tracking import TensorBoard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(PipelineError) as err:
        TensorBoard(tmp_path, first_epoch=1)
    assert str(err.value) == ("--tensorboard needs the tensorboard package: pip install tensorboard (or pip install "
                              "-e '.[tracking]')")
