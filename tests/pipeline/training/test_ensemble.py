"""--ensemble N: members trained into one run folder, one exported graph that averages them, checked against
the members run one by one in eager PyTorch and averaged with numpy; resume, --force, metrics and the curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ENSEMBLE_MEMBERS
from export.layout import conv2d_layout
from pipeline.training.checkpoint import load_checkpoint
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.models.build import EnsembleNet, build_model
from pipeline.training.report import loss_figure
from pipeline.training.run_folder import TRAINING_FILES
from pipeline.training.train import resume, train
from pipeline.training.trainer import Trainer
from runtime.tasks import TASKS

ATOL = RTOL = 1e-5
MEMBER_FILES = sorted(set(TRAINING_FILES) - {"calibration.npy"})  # the training sample is kept once, by the ensemble
ENSEMBLE_FILES = sorted(set(TRAINING_FILES) - {"last.pt", "history.csv"} | {"members", "bundle"})


def _sigmoid(z):
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reference(combine: str, z: np.ndarray) -> np.ndarray:
    """The raw score of the averaged output, in float64 numpy from the members' scores z (M, N, K)."""
    if combine == "softmax":
        return np.log(_softmax(z).mean(axis=0))
    if combine == "sigmoid":
        return np.log(_sigmoid(z).mean(axis=0)) - np.log(_sigmoid(-z).mean(axis=0))
    if combine == "exp":
        return np.log(np.exp(z).mean(axis=0))
    return z.mean(axis=0)


class _Fixed(torch.nn.Module):
    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


@settings(max_examples=60, deadline=None)
@given(combine=st.sampled_from(["softmax", "sigmoid", "exp", "identity"]), members=st.integers(2, 5),
       scale=st.sampled_from([0.1, 3.0, 30.0, 100.0]), seed=st.integers(0, 2**16))
def test_members_are_averaged_in_probability_space_and_stay_finite(combine, members, scale, seed):
    """Confident members (scores of +-100, log-rates of +-30 kept below float32's exp overflow) included."""
    rng = np.random.default_rng(seed)
    limit = min(scale, 30.0) if combine == "exp" else scale
    z = (rng.uniform(-1, 1, size=(members, 6, 3)) * limit).astype(np.float32)
    net = EnsembleNet([_Fixed(torch.from_numpy(z[i])) for i in range(members)], combine, z.shape[-1])
    got = net(torch.zeros(6, 1, 4)).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _reference(combine, z.astype(np.float64)), atol=1e-4, rtol=1e-5)


def _members_eager(run_dir: Path, X: np.ndarray) -> np.ndarray:
    """Each member's raw scores (M, N, K), from its own best.pt run alone in eager PyTorch."""
    outs = []
    for i in range(ENSEMBLE_MEMBERS):
        state = load_checkpoint(run_dir / "members" / f"member-{i}" / "best.pt")
        model = build_model(ModelConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        with torch.inference_mode():
            outs.append(model.eval()(torch.from_numpy(X)).double().numpy())
    return np.stack(outs)


def _onnx(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("task", ["multiclass", "regression", "binary"])
def test_exported_ensemble_is_the_average_of_its_members_in_eager(ensemble_bundles, task):
    tb = ensemble_bundles[task]
    X = np.load(tb.test_file)["X"]
    z = _members_eager(tb.run_dir, X)
    assert not np.allclose(z[0], z[1], atol=1e-3)  # different seeds, different members
    outputs = dict(zip(TASKS[task].outputs, _onnx(tb.bundle / "model.onnx", {"x": X})))
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    assert manifest["model"]["ensemble"] == ENSEMBLE_MEMBERS and len(list(tb.bundle.glob("model*"))) == 2
    if task == "multiclass":
        averaged = _softmax(z).mean(axis=0)
        np.testing.assert_allclose(outputs["probabilities"], averaged, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(outputs["logits"], np.log(averaged), atol=ATOL, rtol=RTOL)
        np.testing.assert_array_equal(outputs["label"], averaged.argmax(axis=1))
    elif task == "binary":
        averaged = _sigmoid(z).mean(axis=0)
        np.testing.assert_allclose(outputs["probability"], averaged, atol=ATOL, rtol=RTOL)
        # the loss graph on the first output is the ensemble's negative log-likelihood (pos_weight 1.5)
        y = np.load(tb.test_file)["y"].astype(np.float64).reshape(-1, 1)
        loss, per_sample = _onnx(tb.bundle / "loss.onnx", {"prediction": outputs["logit"],
                                                           "target": y.astype(np.float32)})
        nll = -(1.5 * y * np.log(averaged) + (1 - y) * np.log(1 - averaged))
        np.testing.assert_allclose(per_sample, nll.mean(axis=1), atol=ATOL, rtol=1e-4)
        np.testing.assert_allclose(loss, nll.mean(), atol=ATOL, rtol=1e-4)
    else:
        np.testing.assert_allclose(outputs["prediction"], z.mean(axis=0), atol=ATOL, rtol=RTOL)


def test_metrics_hold_every_member_and_the_ensemble_measured_on_the_average(ensemble_bundles):
    tb = ensemble_bundles["multiclass"]
    metrics = json.loads((tb.run_dir / "metrics.json").read_text())
    assert metrics["ensemble"] == ENSEMBLE_MEMBERS and metrics["model"] == "fcn"
    assert [(m["member"], m["seed"]) for m in metrics["members"]] == [(0, 2), (1, 3), (2, 4)]
    for i, member in enumerate(metrics["members"]):
        alone = json.loads((tb.run_dir / "members" / f"member-{i}" / "metrics.json").read_text())
        assert member["test"] == alone["test"] and member["best_epoch"] == alone["best_epoch"]
    data = np.load(tb.test_file)
    averaged = _softmax(_members_eager(tb.run_dir, data["X"])).mean(axis=0)
    classes = json.loads((tb.bundle / "manifest.json").read_text())["classes"]
    truth = np.array([classes.index(str(c)) for c in data["y"]])
    assert metrics["test"]["accuracy"] == pytest.approx(float((averaged.argmax(axis=1) == truth).mean()), abs=1e-9)
    # the trainer's loss is the loss graph's: weighted, smoothed cross-entropy on the log of the averaged probabilities
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(np.log(averaged)), torch.from_numpy(truth),
                                                 weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64),
                                                 label_smoothing=0.1)
    assert metrics["test"]["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_ensemble_run_folder_holds_the_ensemble_and_each_member_as_a_run(ensemble_bundles):
    run = ensemble_bundles["regression"].run_dir
    assert sorted(p.name for p in run.iterdir()) == ENSEMBLE_FILES
    assert sorted(p.name for p in (run / "members").iterdir()) == [f"member-{i}" for i in range(ENSEMBLE_MEMBERS)]
    for i in range(ENSEMBLE_MEMBERS):
        assert sorted(p.name for p in (run / "members" / f"member-{i}").iterdir()) == MEMBER_FILES
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["ensemble"] == ENSEMBLE_MEMBERS and config["model_config"]["combine"] == "identity"


def test_predict_evaluate_and_verify_run_the_ensemble_bundle(ensemble_bundles, tmp_path):
    tb = ensemble_bundles["multiclass"]
    runner = CliRunner()
    evaluated = runner.invoke(main, ["evaluate", str(tb.bundle), "--data", str(tb.test_file), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tb.run_dir / "metrics.json").read_text())["test"]
    got = json.loads(evaluated.output)
    assert got["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert got["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
    out = tmp_path / "p.npz"
    predicted = runner.invoke(main, ["predict", str(tb.bundle), "--data", str(tb.test_file), "--out", str(out)])
    assert predicted.exit_code == 0, predicted.output
    averaged = _softmax(_members_eager(tb.run_dir, np.load(tb.test_file)["X"])).mean(axis=0)
    np.testing.assert_allclose(np.load(out)["probabilities"], averaged, atol=ATOL, rtol=RTOL)
    verified = runner.invoke(main, ["verify", str(tb.bundle)])
    assert verified.exit_code == 0 and verified.output.endswith("verified\n"), verified.output


def test_conv2d_layout_of_an_ensemble_computes_the_same_function():
    model = build_model(ModelConfig(name="lite", width=0.25, in_channels=2, length=30, n_outputs=3, ensemble=2,
                                    combine="softmax")).eval()
    fast = conv2d_layout(model)
    x = torch.randn(4, 2, 30) * 3
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), atol=ATOL, rtol=RTOL)


def _ensemble(tmp_path: Path, data: Path, out: str, members: int = 2, epochs: int = 3):
    return train(RunSettings(DataConfig(data=str(data), task="multiclass", val_split=0.25), LossConfig(),
                 ModelConfig(name="lite", width=0.25, ensemble=members),
                 TrainConfig(epochs=epochs, batch_size=16, seed=5, progress=False)), out=tmp_path / out,
                 log=lambda _: None)


def _histories(run: Path, members: int) -> list[list[dict]]:
    return [[{k: v for k, v in row.items() if k != "seconds"}
             for row in load_checkpoint(run / "members" / f"member-{i}" / "last.pt")["history"]]
            for i in range(members)]


def test_a_resumed_ensemble_resumes_the_member_it_was_in(tmp_path, npz_file, monkeypatch):
    data = npz_file("multiclass", n=64, length=20)
    straight = _ensemble(tmp_path, data, "straight")
    original = Trainer.train_epoch

    def interrupted(self, epoch, *args, **kwargs):
        if self.cfg.member == 1 and epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _ensemble(tmp_path, data, "stopped")
    run = tmp_path / "stopped"
    assert not (run / "metrics.json").exists() and (run / "members" / "member-0" / "metrics.json").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    lines = []
    resumed = resume(run, log=lines.append)
    assert f"resuming {run / 'members' / 'member-1'} at epoch 2 of 3" in lines
    assert not any("member 1 of 2" in line for line in lines)  # member 0 had finished: not trained again
    assert _histories(run, 2) == _histories(straight.run_dir, 2)
    assert resumed.metrics["val"] == straight.metrics["val"] and resumed.metrics["train"] == straight.metrics["train"]
    with pytest.raises(Exception) as err:
        resume(run, log=lambda _: None)
    assert str(err.value) == (f"--resume {run}: the ensemble already finished (its members ran up to 3 epochs); "
                              "pass --epochs larger than 3 to train further")


def test_force_replaces_an_earlier_ensemble_and_keeps_everything_else(tmp_path, npz_file):
    data = npz_file("multiclass", n=40, length=12)
    _ensemble(tmp_path, data, "run", members=3, epochs=1)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "members" / "notes.txt").write_text("mine too")
    (tmp_path / "run" / "members" / "member-2" / "plot.svg").write_text("kept")
    train(RunSettings(DataConfig(data=str(data), task="multiclass"), LossConfig(), ModelConfig(name="lite", width=0.25, ensemble=2),
          TrainConfig(epochs=1, progress=False)), out=tmp_path / "run", force=True, log=lambda _: None)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(set(ENSEMBLE_FILES) - {"bundle"} | {"notes.txt"})
    assert sorted(p.name for p in (run / "members").iterdir()) == ["member-0", "member-1", "member-2", "notes.txt"]
    assert sorted(p.name for p in (run / "members" / "member-2").iterdir()) == ["plot.svg"]
    assert json.loads((run / "metrics.json").read_text())["ensemble"] == 2


def test_the_loss_curve_draws_every_member():
    histories = [[{"epoch": e, "train_loss": 1.0 / (e + i), "val_loss": 1.2 / (e + i)} for e in (1, 2, 3)]
                 for i in range(3)]
    labels = [line.get_label() for line in loss_figure(histories, "t").axes[0].get_lines()]
    assert labels == [f"member {i} {what}" for i in range(3) for what in ("train", "validation")]
    single = [line.get_label() for line in loss_figure(histories[:1], "t").axes[0].get_lines()]
    assert single == ["train", "validation", "best (epoch 3)"]


def test_ensemble_flag_refusals():
    runner = CliRunner()
    zero = runner.invoke(main, ["train", "--ensemble", "0"])
    assert zero.exit_code == 2 and "Invalid value for '--ensemble': 0 is not in the range x>=1." in zero.output
    with_resume = runner.invoke(main, ["train", "--resume", "x", "--ensemble", "2"])
    assert with_resume.exit_code == 2
    assert "--ensemble cannot be changed" in with_resume.output
