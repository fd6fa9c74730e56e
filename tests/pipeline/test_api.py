"""The Python API: `pipeline.fit` on arrays or files gives the run the CLI gives (same weights), its Run predicts
as the exported bundle does, writes nothing unless asked, resumes from the CLI, and refuses bad arrays with the
readers' one-line errors naming the array and row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pipeline
from pipeline.api import SETTING_NAMES, run_settings
import runtime
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.errors import PipelineError
from pipeline.training.run_folder import ARRAY_FILES, TRAINING_FILES
from pipeline.settings.fields import api_name, flagged
from tests.conftest import make_task_data

FAST = dict(width=0.25, epochs=3, lr=1e-2)
CLI_FAST = ["--width", "0.25", "--epochs", "3", "--lr", "0.01"]


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "best.pt", weights_only=True)["model"]


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_fit_on_arrays_or_on_the_file_gives_the_clis_run_weight_for_weight(tmp_path, task):
    X, y = make_task_data(task, n=40, length=16, seed=2)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    _cli("train", "--data", tmp_path / "d.npz", "--out", tmp_path / "cli", "--seed", "5", *CLI_FAST)
    from_arrays = pipeline.fit(X, y, out=tmp_path / "arrays", seed=5, log=None, **FAST)
    from_file = pipeline.fit(data=tmp_path / "d.npz", out=tmp_path / "file", seed=5, log=None, **FAST)
    cli = _weights(tmp_path / "cli")
    for run in (from_arrays, from_file):
        got = _weights(run.run_dir)
        assert got.keys() == cli.keys() and all(torch.equal(got[k], cli[k]) for k in cli)
    cli_config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert from_arrays.config.settings.train.to_dict() == cli_config["train"]
    assert from_arrays.config.record.to_dict() == {k: cli_config[k] for k in from_arrays.config.record.to_dict()}
    assert from_arrays.metrics["train"] == json.loads((tmp_path / "cli" / "metrics.json").read_text())["train"]


def test_a_run_predicts_as_its_exported_bundle_and_the_history_is_the_runs(tmp_path):
    X, y = make_task_data("multiclass", n=48, length=16, seed=1)
    names = np.array(["cat", "dog", "eel"])[y]
    run = pipeline.fit(X, names, log=None, **FAST)
    assert run.task == "multiclass" and run.config.record.encoding.classes == ("cat", "dog", "eel")
    assert [row["epoch"] for row in run.history] == [1, 2, 3] and run.metrics["epochs_run"] == 3
    bundle = run.export(tmp_path / "bundle", formats="onnx,torchscript")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["passed"] and manifest["classes"] == ["cat", "dog", "eel"]
    ours, theirs = run.predict(X[:, 0]), runtime.load(bundle).predict(X)
    assert ours.keys() == theirs.keys() == {"logits", "probabilities", "label"}
    np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(ours["label"], theirs["label"])
    with torch.no_grad():  # the eager model itself, independently of the graph wrapper
        logits = run.model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(ours["logits"], logits, atol=1e-6, rtol=1e-6)


def test_without_out_nothing_is_written_and_the_temporary_run_goes_with_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = make_task_data("binary", n=24, length=8)
    run = pipeline.fit(X, y, log=None, **FAST)
    folder = run.run_dir
    assert folder.is_dir() and not folder.is_relative_to(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no artifacts/ in the working folder
    del run
    import gc

    gc.collect()
    assert not folder.exists() and not folder.parent.exists()


def test_a_run_written_by_fit_is_the_clis_run_folder_and_resumes_from_the_cli(tmp_path):
    X, y = make_task_data("regression", n=30, length=12)
    X_test, y_test = make_task_data("regression", n=10, length=12, seed=9)
    run = pipeline.fit(X, y, X_test=X_test, y_test=y_test, out=tmp_path / "run", log=None, **FAST)
    written = {p.name for p in run.run_dir.iterdir()}
    assert written == set(TRAINING_FILES) | {ARRAY_FILES["train"], ARRAY_FILES["test"]}
    assert "test" in run.metrics
    _cli("train", "--resume", tmp_path / "run", "--epochs", "5", "--no-progress")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 5
    again = pipeline.load_run(tmp_path / "run")
    assert len(again.history) == 5 and again.config.settings.train.epochs == 5
    saved = np.load(tmp_path / "run" / "data.npz")
    np.testing.assert_array_equal(saved["X"], X[:, None, :] if X.ndim == 2 else X)
    np.testing.assert_array_equal(saved["y"], y)


def test_every_setting_of_the_cli_is_a_keyword_of_fit_with_python_values(tmp_path):
    names = {api_name(f, flag) for cls in (DataConfig, LossConfig, ModelConfig, TrainConfig)
             for f, flag in flagged(cls)}
    assert names == set(SETTING_NAMES) and {"model", "loss", "huber_delta", "epochs"} <= names
    settings = run_settings(dict(model="resnet", pos_weight=2, class_weights=[1, 2],
                                 loss_param={"gamma": 2, "name": "x"}, data=tmp_path / "a.npz"))
    assert settings.model.name == "resnet" and settings.loss.pos_weight == (2.0,)
    assert settings.loss.class_weights == (1.0, 2.0)
    assert settings.loss.loss_params == (("gamma", "2"), ("name", "x"))
    assert settings.data.data == str(tmp_path / "a.npz")
    assert settings.train.epochs == 300 and settings.train.patience == 50  # the CLI's defaults and recipe
    assert run_settings(dict(model="inception")).train.batch_size == 64


GOOD_X, GOOD_Y = make_task_data("binary", n=12, length=8)
NAN_X = GOOD_X.copy()
NAN_X[4, 0, 2] = np.nan
BAD = [
    (dict(X=GOOD_X[0, 0], y=GOOD_Y), "X: has shape (8,); it must be (N, C, L) or (N, L)"),
    (dict(X=GOOD_X[None], y=GOOD_Y), "X: has shape (1, 12, 1, 8); it must be (N, C, L) or (N, L)"),
    (dict(X=NAN_X, y=GOOD_Y), "X: series row 4 contain NaN or Inf; fill or drop missing values (or pass --pad for "
                              "unequal-length .ts files)"),
    (dict(X=GOOD_X, y=GOOD_Y[:-1]), "y: holds 11 labels but the series hold 12; pass one label per series (the same "
                                    "number of rows in both)"),
    (dict(X=np.array([["a", "b"]] * 12, dtype=object), y=GOOD_Y),
     "X: holds values that are not numbers (dtype object); series must be numeric"),
    (dict(X=GOOD_X, y=np.zeros(12, dtype=np.int64), task="binary"),
     "y: every training label is the same class ('0'); --task binary needs at least two classes to learn from "
     "(check --target-column, or use --task regression for a constant target)"),
    (dict(X=GOOD_X, y=None), "y: is missing; pass one label per series of X"),
    (dict(X=GOOD_X, y=GOOD_Y, task="segmentation"),
     "--task 'segmentation' is not valid; choose one of regression, binary, multiclass, multilabel, count, forecast"),
    (dict(X=GOOD_X, y=GOOD_Y, epoch=3), "unknown setting 'epoch'; the settings are the command line's flags without "
                                        "dashes: " + ", ".join(SETTING_NAMES)),
    (dict(X=GOOD_X, y=GOOD_Y, data="x.npz"), "X and data= both give series; pass arrays (X, y, X_val, y_val, "
                                             "X_test, y_test) or files, not both"),
    (dict(y=GOOD_Y), "y: given without X; pass the training series as X (and y), or every split as files (data=, "
                     "val_data=, test_data=)"),
    (dict(X=GOOD_X, y=GOOD_Y, X_val=GOOD_X, y_val=GOOD_Y, val_split=0.2),
     "X_val and val_split both choose validation data; pass only one"),
]


@pytest.mark.parametrize("given, message", BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_array_or_setting_gets_the_readers_one_line_error(given, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs = dict(given)
    with pytest.raises(PipelineError) as caught:
        pipeline.fit(kwargs.pop("X", None), kwargs.pop("y", None), log=None, epochs=1, **kwargs)
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_bad_array_of_another_split_names_that_array(tmp_path):
    with pytest.raises(PipelineError) as caught:
        pipeline.fit(GOOD_X, GOOD_Y, X_test=GOOD_X[:, :, :4], y_test=GOOD_Y[:3], log=None, epochs=1)
    assert str(caught.value) == ("y_test: holds 3 labels but the series hold 12; pass one label per series (the "
                                 "same number of rows in both)")


def test_progress_bars_show_when_asked_and_not_otherwise(capsys):
    X, y = make_task_data("binary", n=16, length=8)
    pipeline.fit(X, y, log=None, progress=False, **FAST)
    assert capsys.readouterr().err == ""
    pipeline.fit(X, y, log=None, progress=True, **FAST)
    assert "epochs" in capsys.readouterr().err


TYPED = [("epochs", "ten", "epochs='ten': must be a whole number (the command line's --epochs)"),
         ("width", "wide", "width='wide': must be a number (the command line's --width)"),
         ("lr", True, "lr=True: must be a number (the command line's --lr)"),
         ("batch_size", 2.5, "batch_size=2.5: must be a whole number or None (the command line's --batch-size)"),
         ("model", 3, "model=3: must be text (the command line's --model)")]


@pytest.mark.hostile
@pytest.mark.parametrize("setting, value, message", TYPED, ids=[t[0] for t in TYPED])
def test_a_setting_of_the_wrong_type_is_named_by_fit_and_the_estimators_alike(setting, value, message, tmp_path,
                                                                             monkeypatch):
    """Checked where the setting is declared (its config field's type), never a TypeError naming nothing."""
    from pipeline.sklearn import CNNClassifier

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError) as caught:
        pipeline.fit(GOOD_X, GOOD_Y, log=None, **{setting: value})
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        CNNClassifier(**{setting: value}).fit(GOOD_X, GOOD_Y)
    assert str(caught.value) == message
    with pytest.raises(PipelineError) as caught:
        pipeline.fit(GOOD_X, GOOD_Y, log=None, progress="yes")
    assert str(caught.value) == "progress='yes': must be True, False or None (on a terminal only)"
    assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_are_settings_as_the_python_numbers_they_hold(tmp_path):
    """A grid search hands numpy's numbers: they are taken, and config.json holds plain JSON numbers."""
    run = pipeline.fit(GOOD_X, GOOD_Y, log=None, epochs=np.int64(1), width=np.float32(0.125), out=tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and type(config["train"]["epochs"]) is int
    assert config["model_config"]["width"] == 0.125
    assert run.config.record.model.width == 0.125
