"""Every built-in loss against its torch.nn reference (hinge against numpy), and custom losses."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.losses import (LOSSES, CustomLoss, balanced_class_weights, build_loss, check_custom_loss,
                             load_custom_loss)
from runtime.tasks import TASKS

ATOL, RTOL = 1e-6, 1e-6
N, K, C = 7, 3, 4
W = [0.5, 2.0, 1.0, 3.0]


QUANTILES = [0.1, 0.5, 0.9]


def _pinball(prediction, target):
    """The mean pinball loss, written in numpy: max(q e, (q - 1) e) with e = target - the quantile forecast."""
    q = np.array(QUANTILES)
    error = target.numpy()[:, :, None].astype(np.float64) - prediction.numpy().reshape(N, K, len(q))
    return torch.tensor(np.maximum(q * error, (q - 1) * error).mean(), dtype=torch.float32)


def _case(name):
    g = torch.Generator().manual_seed(0)
    pred_k = torch.randn(N, K, generator=g) * 2
    pred_c = torch.randn(N, C, generator=g) * 2
    real = torch.randn(N, K, generator=g)
    binary = torch.randint(0, 2, (N, 1), generator=g).float()
    multi = torch.randint(0, 2, (N, K), generator=g).float()
    classes = torch.randint(0, C, (N,), generator=g)
    counts = torch.poisson(torch.full((N, K), 2.0), generator=g)
    weights = torch.tensor(W)
    cases = {
        "mse": ({}, pred_k, real, nn.MSELoss()),
        "l1": ({}, pred_k, real, nn.L1Loss()),
        "huber": ({"huber_delta": 0.3}, pred_k, real, nn.HuberLoss(delta=0.3)),
        "smooth_l1": ({"beta": 0.4}, pred_k, real, nn.SmoothL1Loss(beta=0.4)),
        "bce_with_logits": ({"pos_weight": [2.5]}, pred_k[:, :1], binary,
                            nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.5]))),
        "bce": ({}, pred_k[:, :1], binary, lambda p, t: nn.BCELoss()(torch.sigmoid(p), t)),
        "cross_entropy": ({"class_weights": W, "label_smoothing": 0.1}, pred_c, classes,
                          nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)),
        "nll": ({"class_weights": W}, pred_c, classes,
                lambda p, t: nn.NLLLoss(weight=weights)(torch.log_softmax(p, 1), t)),
        "multi_margin": ({"class_weights": W}, pred_c, classes, nn.MultiMarginLoss(weight=weights)),
        "multilabel_soft_margin": ({}, pred_k, multi, nn.MultiLabelSoftMarginLoss()),
        "multilabel_bce_with_logits": ({"pos_weight": [1.0, 2.0, 0.5]}, pred_k, multi,
                                       nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5]))),
        "poisson_nll": ({}, pred_k, counts, nn.PoissonNLLLoss(log_input=True, full=False)),
        "mae": ({}, pred_k, real, nn.L1Loss()),
        # three quantiles of each of K values, quantiles innermost (runtime.forecast's layout)
        "quantile": ({"quantiles": QUANTILES}, torch.randn(N, K * 3, generator=g) * 2, real, _pinball),
    }
    return cases[name]


CASES = ["mse", "l1", "huber", "smooth_l1", "bce_with_logits", "bce", "cross_entropy", "nll", "multi_margin",
         "multilabel_soft_margin", "multilabel_bce_with_logits", "poisson_nll", "mae", "quantile"]


@pytest.mark.parametrize("case", CASES)
def test_builtin_loss_matches_torch_reference(case):
    params, prediction, target, reference = _case(case)
    name = "bce_with_logits" if case.startswith("multilabel_bce") else case
    loss, per_sample = build_loss(name, params)(prediction, target)
    expected = reference(prediction, target)
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=RTOL)
    assert per_sample.shape == (N,)


@pytest.mark.parametrize("case", CASES)
def test_per_sample_loss_is_the_loss_of_each_sample_alone(case):
    params, prediction, target, _ = _case(case)
    name = "bce_with_logits" if case.startswith("multilabel_bce") else case
    fn = build_loss(name, params)
    _, per_sample = fn(prediction, target)
    alone = torch.stack([fn(prediction[i:i + 1], target[i:i + 1])[0] for i in range(N)])
    if name in ("cross_entropy", "nll"):  # weighted mean of one sample divides by its own weight
        alone = alone * torch.tensor(W)[target]
    torch.testing.assert_close(per_sample, alone, atol=ATOL, rtol=RTOL)


def test_hinge_matches_numpy_formula():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(9, 1)).astype(np.float32) * 2
    labels = rng.integers(0, 2, size=(9, 1)).astype(np.float32)
    signed = 2 * labels - 1
    expected_per_sample = np.maximum(0.0, 1.0 - signed * scores)[:, 0]
    loss, per_sample = build_loss("hinge", {})(torch.from_numpy(scores), torch.from_numpy(labels))
    np.testing.assert_allclose(per_sample.numpy(), expected_per_sample, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(float(loss), expected_per_sample.mean(), atol=1e-6, rtol=1e-6)


def test_every_registry_loss_is_checked_against_a_reference():
    """A loss added to the registry without a torch.nn (or numpy) reference above fails here."""
    covered = {"bce_with_logits" if case.startswith("multilabel_bce") else case for case in CASES} | {"hinge"}
    assert {spec.name for task in TASKS.values() for spec in task.losses} == covered
    # the implementations are keyed by the same names, each its own module
    assert set(LOSSES) == covered and all(LOSSES[name].name == name for name in LOSSES)
    assert {name: type(build_loss(name, {})) for name in covered} == {name: LOSSES[name] for name in covered}


def test_an_unknown_loss_name_fails_at_lookup_not_at_the_first_forward():
    with pytest.raises(PipelineError) as err:
        build_loss("mse2", {})
    assert str(err.value) == ("loss 'mse2' is not a built-in loss; choose one of " + ", ".join(LOSSES)
                              + ", or a custom loss as package.module:ClassName")


def test_balanced_class_weights_follow_inverse_frequency():
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert weights == pytest.approx([6 / 12, 6 / 4, 6 / 8, 0.0])


@pytest.fixture
def loss_module(tmp_path, monkeypatch):
    (tmp_path / "userlosses.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class CustomLoss(nn.Module):
            def __init__(self, scale=1.0):
                super().__init__()
                self.scale = scale
            def forward(self, predictions, targets):
                return self.scale * torch.mean((predictions - targets) ** 2)

        class OneArg(nn.Module):
            def forward(self, x):
                return x.sum()

        class Needs(nn.Module):
            def __init__(self, custom_parameters):
                super().__init__()

            def forward(self, p, t):
                return (p - t).abs().mean()

        class Vector(nn.Module):
            def forward(self, p, t):
                return (p - t) ** 2

        class NotAModule:
            pass
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userlosses"


def test_custom_loss_loads_and_gives_per_sample(loss_module):
    fn = CustomLoss(load_custom_loss(f"{loss_module}:CustomLoss", {"scale": "2.0"}), "x")
    p, t = torch.randn(5, 2), torch.randn(5, 2)
    loss, per_sample = fn(p, t)
    torch.testing.assert_close(loss, 2.0 * ((p - t) ** 2).mean(), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(per_sample, 2.0 * ((p - t) ** 2).mean(dim=1), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule:X", "--loss 'nosuchmodule:X': cannot import module 'nosuchmodule' (No module named "
                       "'nosuchmodule'); it must be importable from the current folder or installed"),
    ("userlosses:Missing", "--loss 'userlosses:Missing': module 'userlosses' has no class 'Missing'"),
    ("userlosses:NotAModule", "--loss 'userlosses:NotAModule': 'NotAModule' is not a torch.nn.Module subclass"),
    ("userlosses:OneArg", "--loss 'userlosses:OneArg': OneArg.forward(x) must take exactly (prediction, target)"),
    ("userlosses:Needs", "--loss 'userlosses:Needs': cannot construct Needs (Needs.__init__() missing 1 required "
                         "positional argument: 'custom_parameters'); pass its arguments with --loss-param NAME=VALUE"),
])
def test_bad_custom_loss_gives_clear_error(loss_module, spec, message):
    with pytest.raises(PipelineError) as err:
        load_custom_loss(spec, {})
    assert str(err.value) == message


def test_custom_loss_returning_a_vector_is_refused_before_training(loss_module):
    fn = CustomLoss(load_custom_loss("userlosses:Vector", {}), "userlosses:Vector")
    with pytest.raises(PipelineError) as err:
        check_custom_loss(fn, torch.randn(4, 3), torch.randn(4, 3), "userlosses:Vector")
    assert str(err.value) == ("--loss 'userlosses:Vector' must return a scalar tensor for prediction (4, 3) and "
                              "target (4, 3) torch.float32; it returned Tensor (4, 3)")


BROKEN_LOSSES = textwrap.dedent("""
    import torch
    from torch import nn

    class Raises(nn.Module):
        def forward(self, prediction, target):
            raise RuntimeError("my loss is broken")

    class PerRow(nn.Module):
        def forward(self, prediction, target):
            return ((prediction - target) ** 2).mean(dim=1)
""")


@pytest.mark.hostile
@pytest.mark.parametrize("task", ["regression", "count", "binary"])
@pytest.mark.parametrize("loss, message", [
    ("broken:Raises", "Error: --loss 'broken:Raises' failed on prediction (4, {k}) and target (4, {k}) {dtype}: "
                      "RuntimeError: my loss is broken\n"),
    ("broken:PerRow", "Error: --loss 'broken:PerRow' must return a scalar tensor for prediction (4, {k}) and target "
                      "(4, {k}) {dtype}; it returned Tensor (4,)\n")], ids=["raises", "per-row"])
def test_a_broken_custom_loss_is_one_line_before_the_output_base_runs_it(tmp_path, monkeypatch, task, loss, message):
    """The output base is fitted with the user's loss (tasks whose loss is in the targets' units); the loss is
    checked first, so a broken one is the check's line, never a traceback, and no run folder is written."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.conftest import make_task_data

    (tmp_path / "broken.py").write_text(BROKEN_LOSSES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    X, y = make_task_data(task, n=24, length=12)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    result = CliRunner().invoke(main, ["train", "--data", "d.npz", "--task", task, "--loss", loss, "--epochs", "1",
                                       "--width", "0.125", "--no-progress", "--out", "run"])
    k = 2 if task == "regression" else 1
    dtype = "torch.float32"
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] + "\n" == message.format(k=k, dtype=dtype)
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


# --- regression trains on each target's loss over its own baseline (pipeline/losses.py TargetBalancedLoss) -----

def _two_scale_targets(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.stack([3e6 + 1e6 * rng.normal(size=64), 1e-3 * rng.normal(size=64)], axis=1)
    prediction = y + np.stack([2e5 * rng.normal(size=64), 3e-4 * rng.normal(size=64)], axis=1)
    return prediction.astype(np.float32), y.astype(np.float32)


def test_balanced_mse_is_the_mse_of_the_z_scores_and_reports_the_users_mse():
    from pipeline.losses import TargetBalancedLoss, target_loss_scales

    prediction, y = _two_scale_targets()
    loss = build_loss("mse", {})
    mean = np.broadcast_to(y.mean(axis=0), y.shape).copy()
    scales = target_loss_scales(loss, torch.from_numpy(mean), torch.from_numpy(y))
    np.testing.assert_allclose(scales, y.astype(np.float64).var(axis=0), rtol=1e-5)  # the mean predictor's MSE
    balanced, reported = TargetBalancedLoss(loss, torch.tensor(scales))(torch.from_numpy(prediction),
                                                                       torch.from_numpy(y))
    z = lambda v: (v.astype(np.float64) - y.mean(axis=0)) / y.std(axis=0)  # noqa: E731
    assert float(balanced) == pytest.approx(float(((z(prediction) - z(y)) ** 2).mean()), rel=1e-4)
    assert float(reported) == pytest.approx(float(((prediction.astype(np.float64) - y) ** 2).mean()), rel=1e-4)


def test_balanced_huber_divides_each_targets_torch_huber_by_its_baseline_delta_in_user_units():
    from pipeline.losses import TargetBalancedLoss, target_loss_scales

    prediction, y = (torch.from_numpy(v) for v in _two_scale_targets(1))
    loss = build_loss("huber", {"huber_delta": 5e4})
    mean = y.mean(dim=0).expand_as(y).contiguous()
    scales = target_loss_scales(loss, mean, y)
    reference = [F.huber_loss(mean[:, k].double(), y[:, k].double(), delta=5e4).item() for k in range(2)]
    np.testing.assert_allclose(scales, reference, rtol=1e-5)
    balanced, reported = TargetBalancedLoss(loss, torch.tensor(scales))(prediction, y)
    by_target = [F.huber_loss(prediction[:, k].double(), y[:, k].double(), delta=5e4).item() / reference[k]
                 for k in range(2)]
    assert float(balanced) == pytest.approx(np.mean(by_target), rel=1e-4)
    assert float(reported) == pytest.approx(F.huber_loss(prediction.double(), y.double(), delta=5e4).item(), rel=1e-4)


def test_a_custom_loss_has_no_target_scales_and_an_old_output_base_has_none_either():
    from pipeline.losses import target_loss_scales
    from pipeline.training.base_rate import OutputBase

    class Mine(torch.nn.Module):
        def forward(self, p, t):
            return ((p - t) ** 2).mean()

    assert target_loss_scales(Mine(), torch.zeros(3, 2), torch.ones(3, 2)) is None
    old = {"rule": "standardise", "scale": [2.0], "shift": [1.0], "loss_scale": 4.0}  # a run recorded before
    base = OutputBase.from_dict(old)
    assert base.target_loss_scales is None and base.to_dict() == old
    new = OutputBase.from_dict({**old, "target_loss_scales": [4.0]})
    assert new.target_loss_scales == [4.0] and new.to_dict() == {**old, "target_loss_scales": [4.0]}
