"""--task forecast: the metrics and baselines against numpy formulas, the non-crossing quantiles and the reversible
normalisation as properties, no leakage between training and validation windows, every model x loss exported and
verified, predict/evaluate/forecast/stream equal to eager PyTorch, the one-line refusals, and (learns tier) default
training that beats the seasonal-naive forecast with calibrated intervals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
from export.bundle import ExportConfig, export_run, rebuild
from export.engines import ENGINES
from export.graphs import as_tuple, model_graph
from pipeline.cli import main
from pipeline.data.load import load_datasets
from pipeline.errors import PipelineError
from pipeline.models.build import build_model, non_crossing
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.training.train import train
from runtime import forecast as fc
from tests.conftest import FORECAST, eager_rollout, seasonal_npz

ROOT = Path(__file__).resolve().parents[2]
WINDOW, HORIZON, SEASON = FORECAST["window"], FORECAST["horizon"], FORECAST["season"]
QUIET = dict(log=lambda _: None)


def _train(tmp_path: Path, name: str, model: str = "fcn", loss: str | None = None, epochs: int = 1,
           ensemble: int = 1, head: str = "auto", **data) -> Path:
    data = {"window": WINDOW, "horizon": HORIZON, "season": SEASON, **data}
    npz = tmp_path / "recordings.npz"
    if not npz.exists():
        seasonal_npz(npz)
    return train(RunSettings(DataConfig(data=str(npz), task="forecast", **data), LossConfig(name=loss),
                             ModelConfig(name=model, width=0.125, ensemble=ensemble, head=head),
                             TrainConfig(epochs=epochs, batch_size=8, seed=0, progress=False)),
                 out=tmp_path / name, **QUIET).run_dir


# --- numbers against numpy formulas ------------------------------------------------------------------------
def test_the_report_equals_the_textbook_formulas_on_a_small_case():
    history = np.array([[[1.0, 3.0, 2.0, 4.0, 3.0, 5.0]]])  # (1 window, 1 target, W = 6)
    target = np.array([[4.0, 6.0, 5.0]])  # H = 3
    raw = np.array([[4.5, 5.0, 5.5]])
    rows = fc.report(history, raw, target, horizon=3, season=2)
    # naive: the last value 5 for every step; seasonal (m = 2): steps repeat the last season (3, 5)
    scale = np.mean(np.abs(np.array([2.0, 4.0, 3.0, 5.0]) - np.array([1.0, 3.0, 2.0, 4.0])))  # in-sample m = 2
    for name, forecast in (("model", raw[0]), ("naive", np.array([5.0, 5.0, 5.0])),
                           ("seasonal_naive", np.array([3.0, 5.0, 3.0]))):
        err = forecast - target[0]
        smape = np.mean(200 * np.abs(err) / (np.abs(forecast) + np.abs(target[0])))
        expected = {"mae": np.abs(err).mean(), "rmse": np.sqrt((err ** 2).mean()), "smape": smape,
                    "mase": np.abs(err).mean() / scale}
        assert rows[name].keys() == expected.keys()
        for key, value in expected.items():
            assert rows[name][key] == pytest.approx(value, rel=1e-12), (name, key)


def test_quantile_metrics_are_pinball_and_interval_coverage():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 4))
    quantiles = (0.1, 0.5, 0.9)
    q = np.sort(rng.normal(size=(50, 4, 3)), axis=2)
    rows = fc.report(rng.normal(size=(50, 1, 8)), q.reshape(50, -1), target, horizon=4, season=1, quantiles=quantiles)
    e = target[:, :, None] - q
    expected_pinball = np.mean(np.maximum(np.array(quantiles) * e, (np.array(quantiles) - 1) * e))
    assert rows["model"]["pinball"] == pytest.approx(expected_pinball, rel=1e-12)
    inside = np.mean((q[:, :, 0] <= target) & (target <= q[:, :, 2]))
    assert rows["model"]["coverage_0.1_0.9"] == pytest.approx(inside, rel=1e-12)
    assert rows["model"]["mae"] == pytest.approx(np.abs(q[:, :, 1] - target).mean(), rel=1e-12)  # the median's


@settings(max_examples=30, deadline=None)
@given(scores=st.lists(st.floats(-30, 30, width=32), min_size=10, max_size=10))
def test_quantiles_never_cross_and_the_median_is_its_own_score(scores):
    z = torch.tensor(scores).reshape(2, 5)  # one value's 5 quantiles, twice
    q = non_crossing(z, 5)
    assert bool((q[:, 1:] >= q[:, :-1]).all())
    np.testing.assert_array_equal(q[:, 2].numpy(), z[:, 2].numpy())
    softplus = np.log1p(np.exp(z.double().numpy()))  # the increments, in numpy
    np.testing.assert_allclose(q[:, 3].numpy(), z[:, 2].numpy() + softplus[:, 3], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(q[:, 0].numpy(), z[:, 2].numpy() - softplus[:, 1] - softplus[:, 0], rtol=1e-5,
                               atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), level=st.floats(-1e4, 1e4))
def test_a_window_scaled_and_shifted_gives_the_forecast_scaled_and_shifted(scale, level):
    """Reversible normalisation: recordings at any level and spread share one model."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tcn", width=0.125, length=WINDOW, in_channels=2, n_outputs=2 * HORIZON * 3,
                                    horizon=HORIZON, targets=(1, 0), quantiles=3)).eval()
    x = torch.randn(3, 2, WINDOW, dtype=torch.float64)
    with torch.no_grad():
        base = model.double()(x)
        moved = model(x * scale + level)
    # exact but for the 1e-10 the model adds to each window's variance (models.build.REVIN_EPS): at the smallest
    # scale that moves the spread by about 1e-5 of itself
    np.testing.assert_allclose(moved.numpy(), base.numpy() * scale + level, rtol=1e-4,
                               atol=1e-4 * scale * float(np.abs(base.numpy()).max()) + 1e-12 * abs(level))


# --- data: windows, targets, leakage -----------------------------------------------------------------------
def test_targets_are_the_next_samples_and_no_validation_target_is_ever_in_a_training_window(tmp_path):
    X = np.load(seasonal_npz(tmp_path / "one.npz", recordings=1, samples=400))["X"]
    cfg = DataConfig(data=str(tmp_path / "one.npz"), task="forecast", window=WINDOW, horizon=HORIZON, stride=1,
                     forecast_columns="1")
    data = load_datasets(cfg, "fcn", seed=0)
    windows = data.train.X.windows if hasattr(data.train.X, "windows") else data.train.X
    starts = windows.starts
    for split in (data.train, data.val):
        for row, target in zip(split.rows[:50], split.targets[:50]):
            s = starts[row]
            np.testing.assert_array_equal(target, X[0, 1, s + WINDOW:s + WINDOW + HORIZON])
    train_span = [(starts[r], starts[r] + WINDOW + HORIZON) for r in data.train.rows]
    val_targets = {int(starts[r]) + WINDOW + h for r in data.val.rows for h in range(HORIZON)}
    touched = {t for a, b in train_span for t in range(a, b)}
    assert val_targets and not val_targets & touched
    assert data.window["targets"] == [1] and data.window["horizon"] == HORIZON


def test_recordings_are_held_out_whole(tmp_path):
    seasonal_npz(tmp_path / "four.npz", recordings=4)
    data = load_datasets(DataConfig(data=str(tmp_path / "four.npz"), task="forecast", window=WINDOW,
                                    horizon=HORIZON), "fcn", seed=0)
    recording = data.train.X.recording
    assert not set(recording[data.train.rows]) & set(recording[data.val.rows])


# --- exported, verified, scored: every model and loss ------------------------------------------------------
# every model with a point loss (the four in turn) in every format but AOTInductor, and with the quantile loss
# (ONNX; in every format for fcn, tcn and mlp, AOTInductor's compiled package too for tcn)
ALL_FORMATS = "onnx,torchscript,pt2"
MODELS_LOSSES = [("fcn", "quantile", ALL_FORMATS), ("resnet", "mse", ALL_FORMATS), ("inception", "mae", ALL_FORMATS),
                 ("lite", "huber", ALL_FORMATS), ("tcn", "smooth_l1", ALL_FORMATS), ("tcn", "quantile", "onnx,aoti"),
                 ("simple-cnn", "mse", ALL_FORMATS), ("mlp", "quantile", ALL_FORMATS), ("linear", "mae", ALL_FORMATS),
                 ("minirocket", "mse", ALL_FORMATS), ("hydra", "huber", ALL_FORMATS),
                 ("multirocket-hydra", "mae", ALL_FORMATS), ("fcn", "smooth_l1", ALL_FORMATS), ("mlp", "mse", "onnx")]
MODELS_LOSSES += [(m, "quantile", "onnx") for m in ("resnet", "inception", "lite", "simple-cnn", "linear",
                                                    "minirocket", "hydra", "multirocket-hydra")]


@pytest.mark.slow
@pytest.mark.parametrize("model, loss, formats", MODELS_LOSSES, ids=[f"{m}-{l}-{f}" for m, l, f in MODELS_LOSSES])
def test_every_model_and_loss_exports_in_every_format_and_predicts_as_eager(tmp_path, model, loss, formats):
    head = {"head": "linear"} if loss == "quantile" and model in ("minirocket", "hydra", "multirocket-hydra") else {}
    run_dir = _train(tmp_path, "run", model, loss, forecast_columns="0", **head)
    bundle_dir = export_run(run_dir, ExportConfig(fmt=formats), **QUIET)
    verification = json.loads((bundle_dir / "verification.json").read_text())
    assert verification["passed"]
    assert {r["engine"] for r in verification["rows"]} == {ENGINES[f] for f in formats.split(",")}
    bundle = runtime.load(bundle_dir)
    q = 3 if loss == "quantile" else 1
    assert bundle.outputs == ["prediction", "forecast"] and bundle.quantiles == ((0.1, 0.5, 0.9) if q > 1 else ())
    x = np.load(tmp_path / "recordings.npz")["X"][:, :, :WINDOW]
    got = bundle.predict(x)
    trained = rebuild(run_dir)
    with torch.no_grad():
        eager = [t.numpy() for t in as_tuple(model_graph(trained.model, "forecast")(torch.from_numpy(x)))]
    assert got["forecast"].shape == (4, 1, HORIZON) + ((3,) if q > 1 else ())
    spread = x[:, :1].std(axis=2, keepdims=True)  # the tolerance is the verification's: 1e-5 of each window's spread
    np.testing.assert_allclose(got["forecast"].reshape(4, 1, -1), eager[1].reshape(4, 1, -1), rtol=1e-5,
                               atol=float(spread.max()) * 1e-5)
    np.testing.assert_array_equal(got["prediction"].reshape(got["forecast"].shape), got["forecast"])
    if q > 1:
        assert (np.diff(got["forecast"], axis=-1) >= 0).all()


USER_LOSS = """
import torch


class LogCosh(torch.nn.Module):
    def forward(self, prediction, target):  # log(cosh(e)), written so that it does not overflow at errors of 1000
        e = (prediction - target).abs()
        return (e + torch.nn.functional.softplus(-2 * e) - 0.6931471805599453).mean()
"""


@pytest.mark.slow
def test_a_user_loss_and_an_ensemble_forecast_and_export_their_graphs(tmp_path, monkeypatch):
    """A custom loss receives (prediction, target) of (N, T * H) and its loss graph is your loss in your units; an
    ensemble averages its members' non-crossing quantiles in one graph."""
    (tmp_path / "forecastlosses.py").write_text(USER_LOSS)
    monkeypatch.chdir(tmp_path)
    run_dir = _train(tmp_path, "custom", "fcn", "forecastlosses:LogCosh", forecast_columns="0")
    bundle = runtime.load(export_run(run_dir, ExportConfig(fmt="onnx,torchscript"), **QUIET))
    x = np.load(tmp_path / "recordings.npz")["X"][:, :, :WINDOW]
    y = np.load(tmp_path / "recordings.npz")["X"][:, 0, WINDOW:WINDOW + HORIZON]
    raw = bundle.predict(x)["prediction"]
    loss, per_sample = bundle.loss(raw, y)
    e = raw.astype(np.float64) - y
    log_cosh = np.logaddexp(e, -e) - np.log(2.0)  # log((e^e + e^-e) / 2), in float64
    assert loss == pytest.approx(log_cosh.mean(), rel=1e-4)
    np.testing.assert_allclose(per_sample, log_cosh.mean(axis=1), rtol=1e-4)
    ensemble = runtime.load(export_run(_train(tmp_path, "ensemble", "tcn", "quantile", ensemble=2),
                                       ExportConfig(fmt="onnx"), **QUIET))
    members = [rebuild(m).model for m in sorted((tmp_path / "ensemble" / "members").iterdir())]
    with torch.no_grad():
        expected = np.mean([m(torch.from_numpy(x)).numpy() for m in members], axis=0)
    got = ensemble.predict(x)
    np.testing.assert_allclose(got["prediction"], expected, rtol=1e-5, atol=1e-5 * float(np.abs(x).max()))
    assert (np.diff(got["forecast"], axis=-1) >= 0).all()


@pytest.fixture(scope="module")
def rollout_bundle(forecast_bundle):
    """conftest's quantile tcn forecasting both channels (rollout feeds its forecasts back)."""
    return forecast_bundle.run_dir, runtime.load(forecast_bundle.bundle), forecast_bundle.data.parent


def test_forecast_rolls_out_as_the_same_loop_in_eager_pytorch(rollout_bundle):
    run_dir, bundle, tmp_path = rollout_bundle
    history = np.load(tmp_path / "recordings.npz")["X"][2, :, :50]
    got = bundle.forecast(history, steps=4 * HORIZON + 2)  # (T, steps, Q)
    expected = eager_rollout(run_dir, history, 4 * HORIZON + 2)
    assert got.shape == (2, 4 * HORIZON + 2, 3)
    # the verification's tolerance: 1e-5 relative, plus 1e-5 of the window's spread (the network's units)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(history[:, -WINDOW:].std(axis=1).max()))
    np.testing.assert_allclose(bundle.forecast(history), got[:, :HORIZON], rtol=0, atol=0)


def test_a_stream_in_any_chunking_gives_the_windows_forecasts(rollout_bundle):
    _, bundle, tmp_path = rollout_bundle
    recording = np.load(tmp_path / "recordings.npz")["X"][1]
    whole = bundle.predict_windows(recording, stride=1)
    stream = bundle.stream(stride=1)
    parts = [stream.push(recording[:, a:a + 7]) for a in range(0, recording.shape[1], 7)]
    assert np.concatenate([p["start"] for p in parts]).tolist() == whole["start"].tolist()
    np.testing.assert_allclose(np.concatenate([p["forecast"] for p in parts]), whole["forecast"], rtol=1e-6,
                               atol=1e-6 * float(np.abs(recording).max()))


def test_predict_writes_a_row_per_origin_and_evaluate_the_baselines(rollout_bundle, tmp_path):
    run_dir, bundle, data_dir = rollout_bundle
    out = tmp_path / "forecasts.csv"
    result = CliRunner().invoke(main, ["predict", str(bundle.path), "--data", str(data_dir / "recordings.npz"),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    header = list(rows[0])
    assert header[:4] == ["row", "recording", "start", "end"]
    assert header[4:10] == ["0_h1_q0.1", "0_h1_q0.5", "0_h1_q0.9", "0_h2_q0.1", "0_h2_q0.5", "0_h2_q0.9"]
    assert len(header) == 4 + 2 * HORIZON * 3 and header[-1] == f"1_h{HORIZON}_q0.9"
    assert len(rows) == 4 * ((150 - WINDOW) // 3 + 1)
    result = CliRunner().invoke(main, ["evaluate", str(bundle.path), "--data", str(data_dir / "recordings.npz"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])["forecast"]
    assert list(report) == ["model", "naive", "seasonal_naive"] and "coverage_0.1_0.9" in report["model"]


# --- one-line refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--task", "forecast", "--window", "24"],
     "--task forecast predicts the next --horizon samples after windows of --window past samples of recordings; "
     "pass both (e.g. --window 96 --horizon 24)"),
    (["--horizon", "6"], "--horizon apply to --task forecast only; pass --task forecast"),
    (["--task", "forecast", "--window", "24", "--horizon", "6", "--loss", "quantile", "--quantiles", "0.1,0.9"],
     "--quantiles 0.1,0.9: 0.5 must be the middle one, with as many below it as above (e.g. 0.1,0.5,0.9)"),
    (["--task", "forecast", "--window", "24", "--horizon", "6", "--target-column", "load"],
     "--target-column choose a label column; --task forecast forecasts channels of the recordings: name them with "
     "--forecast-columns"),
    (["--task", "forecast", "--window", "24", "--horizon", "6", "--season", "24"],
     "--season 24 must be shorter than --window 24: the seasonal-naive baseline and MASE read the season from the "
     "window"),
])
def test_flags_that_cannot_forecast_are_refused_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "--data", str(seasonal_npz(tmp_path / "r.npz")), *args,
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output == f"Error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_a_ridge_head_refuses_quantiles_and_unknown_columns_are_refused_before_training(tmp_path):
    with pytest.raises(PipelineError, match=r"^--loss quantile: --model minirocket's ridge head is fitted in closed "
                                            r"form to the mean, not to quantiles; pass --head linear \(trained by "
                                            r"gradient descent on the pinball loss\), or a point loss$"):
        _train(tmp_path, "k", "minirocket", "quantile")
    assert not (tmp_path / "k").exists()
    with pytest.raises(PipelineError, match=r"--forecast-columns 'load' is not a signal column; the channels are "
                                            r"'0', '1' \(by header name or 0-based index\)"):
        _train(tmp_path, "c", forecast_columns="load")


def test_a_rollout_past_the_horizon_needs_every_channel_forecast(tmp_path):
    bundle = runtime.load(export_run(_train(tmp_path, "run", forecast_columns="0"), ExportConfig(fmt="onnx"),
                                     **QUIET))
    history = np.zeros((2, 30), dtype=np.float32)
    assert bundle.forecast(history).shape == (1, HORIZON)
    with pytest.raises(runtime.InputError) as exc:
        bundle.forecast(history, steps=HORIZON + 1)
    assert str(exc.value) == (f"steps {HORIZON + 1} is past the horizon of {HORIZON}: rolling out feeds the forecast "
                              "back as the next input, which needs every channel to be a target (this bundle "
                              f"forecasts 1 of 2); ask for at most {HORIZON}")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--saliency", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and result.output.endswith(
        "Error: --saliency: a forecast has no exact per-time-step map (each of its H x targets outputs is restored by "
        "the window's own level and spread, which every step moves); export without --saliency\n")
    assert not (tmp_path / "s").exists()


# --- training quality --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.learns
@pytest.mark.parametrize("loss", ["mse", "quantile"])
def test_default_training_beats_the_seasonal_naive_forecast_on_unseen_sites(tmp_path, loss):
    """examples/demand.csv: sites at levels 20..2000 with two seasons, a trend and noise; three unseen sites to test.
    Default flags (30 epochs, as the learns tier): test MASE at least 25 % below the seasonal-naive forecast's, and
    the 10-90 % interval's coverage within 0.70..0.90."""
    result = CliRunner().invoke(main, [
        "train", "--data", str(ROOT / "examples" / "demand.csv"), "--recording-column", "site", "--time-column", "t",
        "--task", "forecast", "--window", "72", "--horizon", "12", "--season", "12", "--forecast-columns", "load",
        "--test-data", str(ROOT / "examples" / "demand_test.csv"), "--loss", loss, "--epochs", "30",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["forecast"]["test"]
    assert report["model"]["mase"] <= 0.75 * report["seasonal_naive"]["mase"], report
    if loss == "quantile":
        assert 0.70 <= report["model"]["coverage_0.1_0.9"] <= 0.90, report
