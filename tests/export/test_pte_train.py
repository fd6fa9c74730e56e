"""The on-device fine-tuning program (export --format pte-train): 20 SGD steps in executorch.runtime equal the same
steps of torch.optim.SGD on the eager model (loss and every trained parameter), for the head and for every
parameter, built-in and custom losses, and they lower the loss on a shifted copy of the training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from export.bundle import ExportConfig, export_run, rebuild
from export.pte import PteBundle
from export.pte_train import PteTrainer, export_train_program, sgd_reference
from pipeline.cli import main
from pipeline.losses import CustomLoss
from pipeline.models.build import build_model
from pipeline.settings.config import ModelConfig
from runtime.errors import BundleError
from runtime.manifest import Manifest

QUIET = dict(log=lambda _: None)
ATOL = RTOL = 1e-5


def _assert_same_steps(losses, params, expected_losses, expected):
    np.testing.assert_allclose(losses, expected_losses, atol=ATOL, rtol=RTOL)
    assert sorted(params) == sorted(f"model.{n}" for n in expected)
    for name, value in expected.items():
        np.testing.assert_allclose(params[f"model.{name}"].reshape(value.shape), value.numpy(), atol=ATOL, rtol=RTOL,
                                   err_msg=name)


def _data(tb, n: int = 16, shift: float = 0.0, scale: float = 1.0):
    """n training series (shifted by `shift` standard deviations and scaled) with their loss targets (encoded by
    the runtime, as a host encodes labels)."""
    import runtime

    data = np.load(tb.train_file)
    run = rebuild(tb.run_dir)
    std = float(run.model.normalize.std.mean())
    x = (data["X"][:n].reshape(n, run.cfg.in_channels, -1) * scale + shift * std).astype(np.float32)
    return x, runtime.load(tb.bundle).encode(data["y"][:n])


@pytest.mark.parametrize("task, finetune", [("multiclass", "head"), ("binary", "all"), ("regression", "head")])
def test_twenty_steps_on_the_device_equal_eager_sgd(task_bundles, tmp_path, task, finetune):
    tb = task_bundles[task]
    bundle = export_run(tb.run_dir, ExportConfig(fmt="pte-train", finetune=finetune), out=tmp_path / "b", **QUIET)
    manifest = Manifest.read(bundle)
    spec = manifest.pte_train
    run = rebuild(tb.run_dir)
    every = [f"model.{n}" for n, _ in run.model.named_parameters()]
    assert spec.finetune == finetune and spec.parameters == (every if finetune == "all" else every[-2:])
    assert spec.parameters[-2:] == ["model.net.head.weight", "model.net.head.bias"]
    # the head trains on the frozen network's pooled features, from their own XNNPACK program; all: one joint graph
    files = {p.name for p in bundle.iterdir()}
    if finetune == "head":
        assert (spec.features.file, spec.features.delegate) == ("train_features.pte", "xnnpack")
        assert spec.features.inputs == spec.inputs[:1] and "train_features.pte" in files
    else:
        assert spec.features is None and "train_features.pte" not in files
    rows = json.loads((bundle / "verification.json").read_text())["rows"]
    train = [r for r in rows if r["graph"] == "train"]
    assert [r["output"] for r in train] == ["loss"] + [p.removeprefix("model.") for p in spec.parameters]
    assert all(r["problem"] is None and r["engine"] == "executorch" for r in train)

    x, y = _data(tb, shift=0.5)  # not the export's check data
    programs = PteBundle(bundle)
    losses = programs.finetune(x, y, 20, 0.05)
    expected_losses, expected = sgd_reference(run.model, run.loss, torch.from_numpy(x), torch.from_numpy(y), 20, 0.05,
                                              finetune)
    _assert_same_steps(losses, programs.trainer.parameters(), expected_losses, expected)
    with pytest.raises(BundleError, match=r"^x: shape \(3, "):
        programs.finetune(x[:3], y[:3], 1, 0.05)


class PowerLoss(nn.Module):
    def forward(self, prediction, target):
        return 2.0 * torch.mean(torch.abs(prediction - target) ** 1.5)


def test_a_custom_loss_trains_on_the_device_as_in_eager(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet", width=0.25, in_channels=2, length=24, n_outputs=2)).eval()
    loss = CustomLoss(PowerLoss(), "t:PowerLoss").eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 2, 24, generator=g), torch.randn(8, 2, generator=g) * 100
    names, features = export_train_program(model, loss, (x, y), "all", tmp_path / "train.pte")
    assert features is None  # every parameter trains: one joint graph
    assert names == [f"model.{n}" for n, _ in model.named_parameters()]
    trainer = PteTrainer(tmp_path / "train.pte", 8)
    losses = trainer.finetune(x.numpy(), y.numpy(), 20, 1e-4)
    expected_losses, expected = sgd_reference(model, loss, x, y, 20, 1e-4, "all")
    _assert_same_steps(losses, trainer.parameters(), expected_losses, expected)


def test_fine_tuning_lowers_the_loss_on_a_shifted_copy_of_the_training_data(task_bundles, tmp_path):
    tb = task_bundles["multiclass"]
    bundle = export_run(tb.run_dir, ExportConfig(fmt="pte-train"), out=tmp_path / "b", **QUIET)
    x, y = _data(tb, shift=2.0, scale=1.5)  # a new sensor: offset by 2 standard deviations, 1.5x gain
    losses = PteBundle(bundle).finetune(x, y, 20, 0.01)
    assert losses[-1] < 0.2 * losses[0], losses  # measured: 4.58 -> 0.52
    expected_losses, _ = sgd_reference(rebuild(tb.run_dir).model, rebuild(tb.run_dir).loss, torch.from_numpy(x),
                                       torch.from_numpy(y), 20, 0.01, "head")
    np.testing.assert_allclose(losses, expected_losses, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("args, message", [
    (["--finetune", "all"], "Error: --finetune and --finetune-batch apply to the fine-tuning program; add pte-train "
                            "to --format\n"),
    (["--format", "pte-train", "--finetune-batch", "0"], "Error: --finetune-batch must be 1 or more; got 0\n"),
])
def test_bad_finetune_flags_exit_2_with_one_line(task_bundles, tmp_path, args, message):
    result = CliRunner().invoke(main, ["export", str(task_bundles["binary"].run_dir), "--out", str(tmp_path / "b"),
                                       *args])
    assert (result.exit_code, result.output) == (2, message)
    assert not (tmp_path / "b").exists()


def test_a_per_step_model_is_refused_in_one_line(step_bundles, tmp_path):
    run_dir = next(iter(step_bundles.values())).run_dir
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "pte-train", "--out", str(tmp_path / "b")])
    assert (result.exit_code, result.output.splitlines()[-1]) == (
        1, "Error: --format pte-train: a per-step model (--window-label each) has no fine-tuning program yet; export "
           "it with --format pte")
    assert not (tmp_path / "b").exists()
