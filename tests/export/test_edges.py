"""Loss graphs at the scores trained models emit: every built-in loss's ONNX and TorchScript graph against
eager PyTorch over wide score ranges (hypothesis), against independent numpy formulas at confident scores,
and an export whose loss graph is unstable fails on the verification grid's edge cases."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import export.exporters as exporters
from export.bundle import ExportConfig, export_run
from export.grid import CONFIDENT_SCORE, edge_cases
from export.exporters import export_onnx, export_torchscript
from export.graphs import ScanCustomLoss
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS
from export.options import DEFAULT_ATOL, DEFAULT_RTOL
from export.verify import VerificationError
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.losses import CustomLoss, build_loss
from runtime.tasks import TASKS
from pipeline.training.train import train

K = 3  # outputs of the multi-output tasks
# every built-in loss of every task, with non-default parameters where it takes them
LOSSES = {
    ("regression", "mse"): {}, ("regression", "l1"): {}, ("regression", "huber"): {"huber_delta": 0.5},
    ("regression", "smooth_l1"): {"beta": 0.3},
    ("binary", "bce_with_logits"): {"pos_weight": [2.5]}, ("binary", "bce"): {}, ("binary", "hinge"): {},
    ("multiclass", "cross_entropy"): {"class_weights": [0.5, 2.0, 1.0], "label_smoothing": 0.1},
    ("multiclass", "multi_margin"): {"class_weights": [1.0, 2.0, 1.0]},
    ("multiclass", "nll"): {"class_weights": [1.0, 3.0, 0.5]},
    ("multilabel", "bce_with_logits"): {}, ("multilabel", "multilabel_soft_margin"): {},
    ("count", "poisson_nll"): {},
    ("forecast", "mse"): {}, ("forecast", "mae"): {}, ("forecast", "huber"): {"huber_delta": 2.0},
    ("forecast", "smooth_l1"): {"beta": 0.5}, ("forecast", "quantile"): {"quantiles": [0.05, 0.25, 0.5, 0.75, 0.95]},
}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


def test_every_builtin_loss_is_covered():
    assert set(LOSSES) == {(task, spec.name) for task, t in TASKS.items() for spec in t.losses}


def _width(task: str) -> int:
    return 1 if task in ("binary", "regression", "count") else K


def _score_width(task: str, name: str) -> int:
    """A quantile forecast has one score per quantile of each target value."""
    return _width(task) * len(LOSSES[(task, name)].get("quantiles", [0]))


def _example(task: str, name: str, n: int = 8):
    g = torch.Generator().manual_seed(0)
    k = _width(task)
    scores = torch.randn(n, _score_width(task, name), generator=g)
    if task == "multiclass":
        return scores, torch.randint(0, k, (n,), generator=g)
    if task in ("binary", "multilabel"):
        return scores, torch.randint(0, 2, (n, k), generator=g).float()
    if task == "count":
        return scores, torch.poisson(torch.full((n, k), 2.0), generator=g)
    return scores, torch.randn(n, k, generator=g)


@pytest.fixture(scope="module")
def loss_graphs(tmp_path_factory):
    """(task, loss) -> (eager module, onnxruntime session, TorchScript module), exported once."""
    folder = tmp_path_factory.mktemp("loss_graphs")
    graphs = {}
    for (task, name), params in LOSSES.items():
        loss = build_loss(name, params).eval()
        example = _example(task, name)
        path = export_onnx(loss, example, folder / f"{task}-{name}.onnx", LOSS_INPUTS, LOSS_OUTPUTS,
                           {"prediction": {0: "batch"}, "target": {0: "batch"}})
        script_path, _ = export_torchscript(loss, example, folder / f"{task}-{name}.pt")
        graphs[(task, name)] = (loss, ort.InferenceSession(str(path)), torch.jit.load(str(script_path)))
    return graphs


def _targets(task: str, data, n: int, k: int) -> torch.Tensor:
    if task == "multiclass":
        return torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    if task in ("binary", "multilabel"):
        cells = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n * k, max_size=n * k))
    elif task == "count":
        cells = data.draw(st.lists(st.sampled_from([0.0, 1.0, 3.0, 50.0, 1e4]), min_size=n * k, max_size=n * k))
    else:
        cells = data.draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=n * k, max_size=n * k))
    return torch.tensor(cells, dtype=torch.float32).reshape(n, k)


@pytest.mark.parametrize("task, name", list(LOSSES), ids=[f"{t}-{n}" for t, n in LOSSES])
@SETTINGS
@given(data=st.data())
def test_loss_graphs_agree_with_eager_over_wide_score_ranges(loss_graphs, task, name, data):
    eager, session, script = loss_graphs[(task, name)]
    n, k, width = data.draw(st.integers(1, 12)), _width(task), _score_width(task, name)
    # count scores are log-rates: exp(20) counts is already far beyond any data
    limit = 20.0 if task == "count" else CONFIDENT_SCORE
    scores = torch.tensor(data.draw(st.lists(st.floats(-limit, limit, width=32), min_size=n * width,
                                             max_size=n * width)), dtype=torch.float32).reshape(n, width)
    target = _targets(task, data, n, k)
    with torch.no_grad():
        expected = [t.numpy() for t in eager(scores, target)]
        scripted = [t.numpy() for t in script(scores, target)]
    onnx_out = session.run(None, {"prediction": scores.numpy(), "target": target.numpy()})
    for got in (onnx_out, scripted):
        for e, a in zip(expected, got):
            assert np.isfinite(a).all() == np.isfinite(e).all()
            np.testing.assert_allclose(a, e, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)  # float64, exact far beyond float32's range


def _numpy_reference(task: str, name: str, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-sample losses in float64 from the textbook formulas (torch.nn's definitions, clamps included)."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    if name == "bce_with_logits":
        pos_weight = np.asarray(LOSSES[(task, name)].get("pos_weight", [1.0]))
        return -(pos_weight * t * _log_sigmoid(x) + (1 - t) * _log_sigmoid(-x)).mean(axis=1)
    if name == "bce":  # BCELoss clamps each log at -100
        return -(t * np.maximum(_log_sigmoid(x), -100) + (1 - t) * np.maximum(_log_sigmoid(-x), -100)).mean(axis=1)
    if name == "multilabel_soft_margin":
        return -(t * _log_sigmoid(x) + (1 - t) * _log_sigmoid(-x)).mean(axis=1)
    raise ValueError(name)


@pytest.mark.parametrize("task, name", [("binary", "bce_with_logits"), ("binary", "bce"),
                                        ("multilabel", "bce_with_logits"), ("multilabel", "multilabel_soft_margin")])
def test_sigmoid_losses_are_exact_at_confident_scores(loss_graphs, task, name):
    """The scores where the stock ONNX forms returned inf/nan (log of a sigmoid that rounded to 0)."""
    eager, session, script = loss_graphs[(task, name)]
    k = _width(task)
    scores = np.array([-100.0, -88.8, -50.0, -20.0, -17.0, 17.0, 20.0, 50.0, 88.8, 100.0], np.float32)
    x = np.repeat(scores[:, None], k, axis=1)
    for t in (np.zeros_like(x), np.ones_like(x)):  # all-correct on one side, all-wrong on the other
        reference = _numpy_reference(task, name, x, t)
        got = session.run(None, {"prediction": x, "target": t})[1]
        with torch.no_grad():
            eager_per_sample = eager(torch.from_numpy(x), torch.from_numpy(t))[1].numpy()
        np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(eager_per_sample, reference, atol=1e-5, rtol=1e-5)


def test_bce_equals_torch_bceloss_of_sigmoid_computed_without_rounding(loss_graphs):
    """torch.nn.BCELoss of sigmoid in float64 (1 - sigmoid(x) keeps 7 digits up to |x| ~ 20) is the value bce
    stands for; in float32 its 1 - sigmoid(x) loses digits from |x| ~ 7 and saturates at ~ 17."""
    eager, session, _ = loss_graphs[("binary", "bce")]
    x = torch.linspace(-20, 20, 401).reshape(-1, 1)
    t = (torch.arange(401) % 2).float().reshape(-1, 1)
    reference = nn.BCELoss(reduction="none")(torch.sigmoid(x.double()), t.double()).reshape(-1).numpy()
    got = session.run(None, {"prediction": x.numpy(), "target": t.numpy()})[1]
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)
    moderate = x.abs().reshape(-1) <= 5  # where float32 BCELoss(sigmoid) is still accurate, it agrees too
    float32 = nn.BCELoss(reduction="none")(torch.sigmoid(x), t).reshape(-1)[moderate].numpy()
    np.testing.assert_allclose(got[moderate.numpy()], float32, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", list(TASKS))
def test_edge_cases_hold_confident_scores_and_targets_at_their_limits(task):
    k = _width(task) if task != "multiclass" else 4
    cases = edge_cases(task, k, torch.Generator().manual_seed(0))
    assert [c.label.split(" ", 1)[1] for c in cases] == ["edge correct", "edge wrong", "edge random"]
    scores = torch.cat([c.inputs[0] for c in cases])
    targets = torch.cat([c.inputs[1].float().reshape(len(c.inputs[1]), -1) for c in cases])
    limit = 20.0 if task == "count" else CONFIDENT_SCORE
    if task == "regression":
        assert float(scores.abs().max()) >= 1e4 - 1 and float(targets.abs().max()) == 1e4
    else:
        assert float(scores.max()) >= limit - 1e-3 and float(scores.min()) <= -limit + 1e-3
    if task in ("binary", "multilabel"):
        assert set(targets.unique().tolist()) == {0.0, 1.0}
    if task == "multiclass":
        assert {0.0, float(k - 1)} <= set(targets.unique().tolist())
    if task == "count":
        assert float(targets.min()) == 0.0 and float(targets.max()) == 1e4


def test_an_unstable_loss_graph_fails_export_on_the_confident_cases(tmp_path, npz_file, monkeypatch):
    """With the stock Log(Sigmoid) translation, bce_with_logits is inf at confident scores: export must fail."""
    run = train(RunSettings(DataConfig(data=str(npz_file("binary", n=24, length=8)), task="binary", val_split=0.0),
                LossConfig(), ModelConfig(width=0.125), TrainConfig(epochs=1, progress=False)),
                out=tmp_path / "run", log=lambda _: None).run_dir
    monkeypatch.setattr(exporters, "_translations", lambda: {})
    with pytest.raises(VerificationError) as caught:
        export_run(run, ExportConfig(fmt="onnx"), log=lambda _: None)
    failing = {(r.graph, r.case) for r in caught.value.failures}
    assert ("loss", "batch=16 edge wrong") in failing
    assert all(graph == "loss" and "edge" in case for graph, case in failing)
    assert not (tmp_path / "run" / "bundle").exists()


class _UserCrossEntropy(nn.Module):
    def forward(self, prediction, target):
        return nn.functional.cross_entropy(prediction, target)


@pytest.mark.parametrize("module", ["vmap", "scan"])
def test_a_custom_cross_entropy_exports_with_a_dynamic_batch(tmp_path, module):
    """torch's vmap rule for nll_loss fixes the batch while exporting; the scan form keeps it dynamic."""
    inner = _UserCrossEntropy()
    loss = CustomLoss(inner, "user:CE") if module == "vmap" else ScanCustomLoss(inner)
    example = _example("multiclass", "cross_entropy", 64)
    axes = {"prediction": {0: "batch"}, "target": {0: "batch"}}
    if module == "vmap":
        with pytest.raises(exporters.ExportError, match="axis 0 \\('batch'\\) was fixed to 64"):
            export_onnx(loss, example, tmp_path / "loss.onnx", LOSS_INPUTS, LOSS_OUTPUTS, axes)
        return
    path = export_onnx(loss, example, tmp_path / "loss.onnx", LOSS_INPUTS, LOSS_OUTPUTS, axes)
    session = ort.InferenceSession(str(path))
    for n in (1, 5, 64):
        scores, target = _example("multiclass", "cross_entropy", n)
        scores = scores * 40
        got_loss, got_per_sample = session.run(None, {"prediction": scores.numpy(), "target": target.numpy()})
        reference = nn.CrossEntropyLoss(reduction="none")(scores, target).numpy()
        np.testing.assert_allclose(got_per_sample, reference, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got_loss, reference.mean(), atol=1e-5, rtol=1e-5)
