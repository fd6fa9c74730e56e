"""The output layer at the data's base rate (pipeline.training.base_rate, models.OutputScale): each rule against the
constant that minimises the task's torch.nn loss, a fresh model starting there for every model, what a run
records, and run folders written before the layer existed (tests/data/old_runs) behaving exactly as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import runtime
from conftest import prices
from export.bundle import rebuild
from pipeline.training.base_rate import fit_output_base
from pipeline.cli import main
from pipeline.settings.config import MODEL_NAMES, ModelConfig
from pipeline.models.build import OutputScale, build_model

OLD_RUNS = Path(__file__).parents[3] / "tests" / "data" / "old_runs"


def _best_constant(loss, k: int) -> np.ndarray:
    """The constant raw score (k,) that minimises `loss(scores)`, found by L-BFGS from 0."""
    c = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([c], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = loss(c)
        value.backward()
        return value

    optimizer.step(closure)
    return c.detach().numpy()


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.01, 0.6), pos_weight=st.sampled_from([1.0, 0.3, 4.0]), seed=st.integers(0, 999))
def test_binary_starts_at_the_constant_of_lowest_weighted_bce(rate, pos_weight, seed):
    y = (np.random.default_rng(seed).random(4000) < rate).astype(np.float64)[:, None]
    y[0], y[1] = 0.0, 1.0
    base = fit_output_base("binary", y, 1, {"pos_weight": [pos_weight]})
    target = torch.from_numpy(y)
    best = _best_constant(lambda c: F.binary_cross_entropy_with_logits(
        c.expand(len(y), 1), target, pos_weight=torch.tensor([pos_weight], dtype=torch.float64)), 1)
    # the shift counts half a series either way (so no prevalence is 0 or 1): off by at most that
    np.testing.assert_allclose(base.shift, best, atol=2.0 / (len(y) * min(rate, 1 - rate)))
    assert base.scale == [1.0]


@pytest.mark.parametrize("params", [{}, {"class_weights": [0.5, 2.0, 1.0, 3.0]}, {"label_smoothing": 0.2}])
def test_multiclass_starts_at_the_class_probabilities_of_lowest_cross_entropy(params):
    y = np.random.default_rng(0).choice(4, size=5000, p=[0.7, 0.2, 0.07, 0.03])
    base = fit_output_base("multiclass", y, 4, params)
    weight = torch.tensor(params["class_weights"], dtype=torch.float64) if "class_weights" in params else None
    target = torch.from_numpy(y)
    best = _best_constant(lambda c: F.cross_entropy(c.expand(len(y), 4), target, weight=weight,
                                                    label_smoothing=params.get("label_smoothing", 0.0)), 4)
    np.testing.assert_allclose(np.exp(base.shift) / np.exp(base.shift).sum(), np.exp(best) / np.exp(best).sum(),
                               atol=1e-3)
    assert abs(sum(base.shift)) < 1e-9  # centred


def test_counts_start_at_the_log_rate_of_lowest_poisson_loss_and_an_all_zero_column_stays_finite():
    y = np.random.default_rng(1).poisson([300.0, 0.2], size=(2000, 2)).astype(np.float64)
    y[:, 1] = 0.0
    base = fit_output_base("count", y, 2, {})
    best = _best_constant(lambda c: F.poisson_nll_loss(c[:1].expand(len(y)), torch.from_numpy(y[:, 0]),
                                                       log_input=True, full=False), 2)
    np.testing.assert_allclose(base.shift[0], best[0], atol=1e-6)
    assert base.shift[1] == pytest.approx(np.log(0.5 / 2000))


@settings(max_examples=30, deadline=None)
@given(offset=st.floats(-1e6, 1e6), spread=st.floats(1e-3, 1e4), seed=st.integers(0, 999))
def test_regression_is_standardised_per_column(offset, spread, seed):
    assume(spread > 1e-5 * max(1.0, abs(offset)))  # float32 targets resolve 6e-8 of their level; below, constant
    y = np.random.default_rng(seed).normal(size=(300, 2)) * [spread, 1.0] + [offset, -3.0]
    base = fit_output_base("regression", y, 2, {})
    np.testing.assert_allclose(base.shift, y.mean(axis=0), rtol=1e-12, atol=1e-9 * abs(offset))
    np.testing.assert_allclose(base.scale, y.std(axis=0), rtol=1e-9)
    constant = fit_output_base("regression", np.full((10, 1), offset), 1, {})
    assert constant.scale == [1.0] and constant.shift == [pytest.approx(offset)]  # nothing to scale by


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("ensemble", [1, 2])
def test_every_model_starts_where_the_targets_are(name, ensemble):
    """One mechanism for every model: a fresh network's raw scores sit on the fitted shift (regression in
    the targets' units), whatever the architecture."""
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, width=0.25, length=32, n_outputs=2, ensemble=ensemble)
    model = build_model(cfg).eval()
    shift, scale = torch.tensor([1000.0, -5.0]), torch.tensor([50.0, 0.01])
    for output in ([model.output] if ensemble == 1 else []):
        output.fit(scale, shift)
    if ensemble > 1:
        model.net.scale.copy_(scale.expand_as(model.net.scale))
        model.net.shift.copy_(shift.expand_as(model.net.shift))
    with torch.no_grad():
        out = model(torch.randn(64, 1, 32))
    z = (out - shift) / scale  # the network's own output
    assert float(z.abs().mean()) < 3.0  # near 0 at init, in units of the targets' std
    np.testing.assert_allclose(out.mean(dim=0).numpy(), shift.numpy(), rtol=0.2 * 50 / 1000 + 1e-3, atol=0.2)


def test_a_state_saved_before_the_output_layer_loads_as_the_identity():
    layer = OutputScale(3)
    layer.fit(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]))
    layer.load_state_dict({})
    z = torch.randn(5, 3)
    assert torch.equal(layer(z), z)


def _old_run(tmp_path: Path, name: str) -> Path:
    """A copy of a run folder written before the output layer existed, its data path pointed at our copy."""
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    config = json.loads((run / "config.json").read_text())
    if config["data"]["data"] is not None:
        shutil.copy(OLD_RUNS / "regression_data.npz", tmp_path / "data.npz")
        config["data"]["data"] = str(tmp_path / "data.npz")
        (run / "config.json").write_text(json.dumps(config, indent=2))
    return run


def _invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_an_old_regression_run_predicts_exports_verifies_and_resumes_as_before(tmp_path):
    run = _old_run(tmp_path, "old_regression")
    X = np.load(OLD_RUNS / "regression_data.npz")["X"]
    before = np.load(OLD_RUNS / "regression_predictions.npy")
    model = rebuild(run).model
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(X)).numpy(), before, atol=1e-6, rtol=1e-6)
    _invoke("export", run, "--format", "onnx", "--out", tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert "output_base" not in manifest  # its graph has no fitted output layer
    np.testing.assert_allclose(runtime.load(tmp_path / "bundle").predict(X)["prediction"], before, atol=1e-5,
                               rtol=1e-5)
    assert "verified" in _invoke("verify", tmp_path / "bundle")
    _invoke("train", "--resume", run, "--epochs", "5", "--no-progress")
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 5
    state = torch.load(run / "last.pt", weights_only=True)
    assert "output_base" not in state and torch.equal(state["model"]["output.scale"], torch.ones(1))
    assert float(state["model"]["output.shift"]) == 0.0  # resumed as it was trained: no shift appears


def test_an_old_ensemble_predicts_exports_and_verifies_as_before(tmp_path):
    run = _old_run(tmp_path, "old_ensemble")
    old = np.load(OLD_RUNS / "ensemble_predictions.npz")
    model = rebuild(run).model
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(old["X"])).numpy(), old["raw"], atol=1e-5, rtol=1e-5)
    _invoke("export", run, "--format", "onnx", "--out", tmp_path / "bundle")
    np.testing.assert_allclose(runtime.load(tmp_path / "bundle").predict(old["X"])["logits"], old["raw"],
                               atol=1e-5, rtol=1e-5)
    assert "verified" in _invoke("verify", tmp_path / "bundle")


def test_a_run_records_its_output_layer_everywhere_and_resume_keeps_it(tmp_path):
    X, y = prices(120, seed=3)
    np.savez(tmp_path / "train.npz", X=X, y=y)
    run = tmp_path / "run"
    _invoke("train", "--data", tmp_path / "train.npz", "--task", "regression", "--epochs", "2", "--width", "0.25",
            "--out", run, "--no-progress")
    config = json.loads((run / "config.json").read_text())
    recorded = config["output_base"]
    assert recorded["rule"] == "standardise"
    state = torch.load(run / "best.pt", weights_only=True)
    np.testing.assert_allclose(state["model"]["output.shift"].numpy(), recorded["shift"], rtol=1e-6)
    np.testing.assert_allclose(state["model"]["output.scale"].numpy(), recorded["scale"], rtol=1e-6)
    # fitted on the 70 % of series kept for training (30 % held out): near the mean of all of them
    assert abs(recorded["shift"][0] - float(y.mean())) < 0.3 * float(y.std())
    # the mean predictor's MSE on the training rows is their variance
    assert recorded["loss_scale"] == pytest.approx(recorded["scale"][0] ** 2, rel=1e-4)
    # and with one target, each target's own is the same number (training divides that target's loss by it)
    assert recorded["target_loss_scales"] == [pytest.approx(recorded["loss_scale"], rel=1e-5)]
    assert json.loads((run / "metrics.json").read_text())["output_base"] == recorded
    _invoke("export", run, "--format", "onnx", "--out", tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    hosts_need = {k: v for k, v in recorded.items() if k != "target_loss_scales"}  # a training detail
    assert manifest["output_base"] == {**hosts_need, "inside_graph": True}
    _invoke("train", "--resume", run, "--epochs", "3", "--no-progress")
    assert json.loads((run / "config.json").read_text())["output_base"] == recorded
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert torch.equal(resumed["model"]["output.shift"], state["model"]["output.shift"])


def test_the_bundle_and_predict_answer_in_the_users_units(learned_regression, tmp_path):
    """The prices run (targets around 1000): eager, the runtime and `pipeline predict` give the same
    predictions, and their R^2 against the test targets (numpy) is the one metrics.json reports."""
    data = np.load(learned_regression.test_file)
    X, y = data["X"], data["y"]
    model = rebuild(learned_regression.run_dir).model
    with torch.no_grad():
        eager = model(torch.from_numpy(X)).numpy()[:, 0]
    predicted = runtime.load(learned_regression.bundle).predict(X)["prediction"][:, 0]
    np.testing.assert_allclose(predicted, eager, atol=1e-5, rtol=1e-5)
    _invoke("predict", learned_regression.bundle, "--data", learned_regression.test_file, "--out",
            tmp_path / "p.csv")
    written = np.genfromtxt(tmp_path / "p.csv", delimiter=",", names=True)["prediction"]
    np.testing.assert_allclose(written, eager, atol=1e-3, rtol=1e-6)
    r2 = 1 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)
    metrics = json.loads((learned_regression.run_dir / "metrics.json").read_text())
    assert r2 > 0.85 and metrics["test"]["r2"] == pytest.approx(r2, abs=1e-5)
    assert 900 < predicted.mean() < 1100
