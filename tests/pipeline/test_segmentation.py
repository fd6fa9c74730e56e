"""A label for every time step (--window-label each): the segment metrics against hand-counted cases, the per-step
losses against torch.nn on the whole (N, C, W) tensor, stitching against a plain loop, every per-step model x task x
format exported and verified, predict/stream/evaluate equal to eager PyTorch stitched by a plain loop, the one-line
refusals, and (learns tier) default training that finds the segments of unseen recordings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
import runtime.outputs
from export.bundle import ExportConfig, export_run, rebuild
from export.engines import ENGINES
from export.graphs import as_tuple, model_graph
from pipeline.cli import main
from pipeline.losses import build_loss
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.training.train import train
from runtime import segments
from tests.conftest import STEPS, eager_steps, make_recordings, step_labels, write_step_csv

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(log=lambda _: None)


# --- numbers against hand-counted cases and torch.nn ---------------------------------------------------------
def test_event_metrics_count_matches_at_iou_one_half_and_the_median_boundary_error():
    # true: 0000 1111 1111 2222 (classes 0, 1, 2 in runs of 4, 8, 4); predicted: 000 11111 111 2 2222 with one
    # sample of class 2 inside the run of 1 (splitting it)
    true = np.array([0] * 4 + [1] * 8 + [2] * 4)
    pred = np.array([0] * 3 + [1] * 5 + [2] + [1] * 3 + [2] * 4)
    report = segments.segment_report([true], [pred], "softmax")
    # events true: (0,4,0) (4,12,1) (12,16,2); predicted: (0,3,0) (3,8,1) (8,9,2) (9,12,1) (12,16,2)
    # matches: (0,4)~(0,3) IoU 3/4; (4,12)~(3,8) IoU 4/9 < 0.5, ~(9,12) 3/8 < 0.5: no match; (12,16)~(12,16) IoU 1
    assert report["events"] == 3 and report["predicted_events"] == 5
    assert report["event_precision"] == pytest.approx(2 / 5) and report["event_recall"] == pytest.approx(2 / 3)
    assert report["event_f1"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert report["boundary_error"] == pytest.approx(np.median([0, 1, 0, 0]))  # |0-0|, |4-3|, |12-12|, |16-16|
    assert report["accuracy"] == pytest.approx(14 / 16)
    f1 = lambda c: 2 * ((pred == c) & (true == c)).sum() / ((pred == c).sum() + (true == c).sum())  # noqa: E731
    assert report["macro_f1"] == pytest.approx(np.mean([f1(0), f1(1), f1(2)]))


def test_binary_events_are_the_runs_of_ones_across_recordings():
    # two recordings; events only where the label is 1 (the anomalies), each event matched once at most
    true = [np.array([0, 1, 1, 1, 1, 0, 0, 0]), np.array([1, 1, 0, 0, 0, 0, 1, 1])]
    pred = [np.array([0, 0, 1, 1, 1, 0, 0, 0]), np.array([0, 0, 0, 0, 0, 0, 1, 1])]
    report = segments.segment_report([t[:, None] for t in true], [p[:, None] for p in pred], "sigmoid")
    assert (report["events"], report["predicted_events"]) == (3, 2)
    assert report["event_precision"] == 1.0 and report["event_recall"] == pytest.approx(2 / 3)
    assert report["boundary_error"] == pytest.approx(np.median([1, 0, 0, 0]))
    t, p = np.concatenate(true), np.concatenate(pred)
    f1 = lambda v: 2 * ((p == v) & (t == v)).sum() / ((p == v).sum() + (t == v).sum())  # noqa: E731
    assert report["macro_f1"] == pytest.approx((f1(0) + f1(1)) / 2) and report["accuracy"] == pytest.approx(13 / 16)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.integers(1, 3), st.integers(0, 2 ** 31 - 1))
def test_stitching_is_the_mean_of_every_covering_window(length, stride, classes, seed):
    rng = np.random.default_rng(seed)
    samples = length + int(rng.integers(0, 40))
    starts = np.arange(0, samples - length + 1, stride)
    p = rng.random((len(starts), classes, length)).astype(np.float32)
    tail = rng.random((classes, length)).astype(np.float32)
    found = segments.stitched(p, starts, samples, "softmax" if classes > 1 else "sigmoid", tail, stride)
    expected = {}
    for i, s in enumerate(starts):  # a plain loop over windows and steps
        for j in range(length):
            expected.setdefault(s + j, []).append(p[i, :, j])
    for t in range(max(starts[-1] + length, samples - length), samples):  # the tail: samples no window covers
        expected[t] = [tail[:, t - (samples - length)]]
    assert found["sample"].tolist() == sorted(expected)
    if stride <= length:  # windows that overlap or touch: every sample answered
        assert found["sample"].tolist() == list(range(samples))
    np.testing.assert_allclose(found["probabilities"], [np.mean(expected[t], axis=0) for t in sorted(expected)],
                               rtol=1e-6, atol=1e-7)


def test_per_step_losses_are_torch_nn_on_the_whole_tensor():
    g = torch.Generator().manual_seed(0)
    scores, classes = torch.randn(5, 3, 11, generator=g) * 4, torch.randint(0, 3, (5, 11), generator=g)
    weights, smoothing = [0.5, 2.0, 1.0], 0.1
    loss, per_window = build_loss("cross_entropy", {"class_weights": weights, "label_smoothing": smoothing}, True)(
        scores, classes)
    reference = F.cross_entropy(scores, classes, weight=torch.tensor(weights), label_smoothing=smoothing)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    plain, per_window = build_loss("cross_entropy", {}, True)(scores, classes)
    torch.testing.assert_close(per_window, F.cross_entropy(scores, classes, reduction="none").mean(dim=1),
                               rtol=1e-5, atol=1e-6)
    logits, targets = torch.randn(5, 2, 11, generator=g) * 30, torch.randint(0, 2, (5, 2, 11), generator=g).float()
    loss, per_window = build_loss("bce_with_logits", {"pos_weight": [3.0, 0.5]}, True)(logits, targets)
    reference = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor([3.0, 0.5])[:, None],
                                                   reduction="none")
    torch.testing.assert_close(loss, reference.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_window, reference.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)


# --- per-step bundles: stitched, streamed, in every kit's terms ---------------------------------------------
@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_predict_and_a_stream_in_any_chunking_equal_eager_stitched_by_a_plain_loop(step_bundles, task):
    sb = step_bundles[task]
    bundle = runtime.load(sb.bundle)
    recording = sb.recordings[1]
    expected = eager_steps(sb.run_dir, recording)
    assert expected["sample"].tolist() == list(range(recording.shape[1]))  # the tail window covers the end
    whole = bundle.label_samples(recording)
    np.testing.assert_array_equal(whole["sample"], expected["sample"])
    np.testing.assert_allclose(whole["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(whole["label"], expected["label"])
    for chunk in (1, 5, STEPS["window"], 97, recording.shape[1]):
        stream = bundle.stream()
        parts = [stream.push(recording[:, a:a + chunk]) for a in range(0, recording.shape[1], chunk)]
        parts.append(stream.finish())
        for key in ("sample", "probabilities", "label"):
            got = np.concatenate([p[key] for p in parts])
            np.testing.assert_array_equal(got, whole[key]) if key != "probabilities" else \
                np.testing.assert_allclose(got, whole[key], rtol=0, atol=0)
    windows = np.stack([recording[:, :STEPS["window"]], recording[:, 3:3 + STEPS["window"]]])
    out = bundle.predict(windows)
    k = 3 if task == "multiclass" else (1 if task == "binary" else 2)
    assert out[bundle.outputs[0]].shape == (2, k, STEPS["window"])
    # the table of windows (MLflow's pyfunc answers it): one row per step of each window, its own probabilities
    table = runtime.outputs.prediction_table(bundle, out)
    assert table["window"].tolist() == [0] * STEPS["window"] + [1] * STEPS["window"]
    assert table["step"].tolist() == 2 * list(range(STEPS["window"]))
    p = out[bundle.spec.main_output]
    names = bundle.classes or ["0", "1"]
    if task == "multiclass":
        assert table["label"].tolist() == [names[i] for i in p.argmax(axis=1).reshape(-1)]
    elif task == "multilabel":
        np.testing.assert_array_equal(table["label_0"], (p[:, 0] > 0.5).reshape(-1))
    else:
        assert table["label"].tolist() == [names[int(v)] for v in (p[:, 0] > 0.5).reshape(-1)]
    np.testing.assert_array_equal(table[f"probability_{names[-1] if task != 'multilabel' else '1'}"],
                                  p[:, -1].reshape(-1))


def test_a_sample_is_answered_once_every_window_covering_it_has_arrived(step_bundles):
    bundle = runtime.load(step_bundles["multiclass"].bundle)
    recording = step_bundles["multiclass"].recordings[0]
    W, S = STEPS["window"], STEPS["stride"]
    stream = bundle.stream()
    assert stream.push(recording[:, :W - 1])["sample"].tolist() == []  # no window yet
    assert stream.push(recording[:, W - 1:W])["sample"].tolist() == list(range(S))  # window 0 done: 0..S-1 final
    assert stream.push(recording[:, W:W + S])["sample"].tolist() == list(range(S, 2 * S))


def test_the_per_step_loss_graph_equals_torch_at_confident_scores(step_bundles):
    sb = step_bundles["multiclass"]
    bundle = runtime.load(sb.bundle)
    g = torch.Generator().manual_seed(4)
    scores = (torch.randn(6, 3, 9, generator=g) * 60).float()
    target = torch.randint(0, 3, (6, 9), generator=g)
    loss, per_window = bundle.loss(scores.numpy(), target.numpy())
    reference = F.cross_entropy(scores, target, reduction="none")
    assert loss == pytest.approx(float(reference.mean()), rel=1e-5)
    np.testing.assert_allclose(per_window, reference.mean(dim=1).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(runtime.InputError) as exc:
        bundle.loss(scores.numpy(), target.numpy()[:, :5])
    assert str(exc.value) == "target: has 5 steps per window but prediction has 9; pass a target for every step"


def test_predict_writes_a_row_per_sample_or_per_segment_and_evaluate_scores_the_events(step_bundles, tmp_path):
    sb = step_bundles["multiclass"]
    out = tmp_path / "samples.csv"
    result = CliRunner().invoke(main, ["predict", str(sb.bundle), "--data", str(sb.train_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["row", "recording", "sample", "label", "probability_cat", "probability_dog",
                             "probability_eel"]
    assert len(rows) == sum(x.shape[1] for x in sb.recordings)  # every sample of every recording
    bundle = runtime.load(sb.bundle)
    first = [r for r in rows if r["recording"] == "r0"]
    expected = bundle.label_samples(sb.recordings[0])
    assert [r["label"] for r in first] == [bundle.classes[i] for i in expected["label"]]
    written = np.array([[np.float32(r[f"probability_{c}"]) for c in bundle.classes] for r in first])
    np.testing.assert_array_equal(written, expected["probabilities"])  # each float32 as its shortest text
    segs = tmp_path / "segments.csv"
    result = CliRunner().invoke(main, ["predict", str(sb.bundle), "--data", str(sb.train_file), "--segments",
                                       "--out", str(segs)])
    assert result.exit_code == 0, result.output
    seg_rows = list(csv.DictReader(segs.open()))
    assert list(seg_rows[0]) == ["row", "recording", "start", "end", "label", "probability"]
    r0 = [r for r in seg_rows if r["recording"] == "r0"]
    labels = [r["label"] for r in first]
    runs = [(a, b) for a, b, _ in segments.runs(np.array([bundle.classes.index(x) for x in labels]))]
    assert [(int(r["start"]), int(r["end"])) for r in r0] == runs
    for r in r0:  # the mean probability of the segment's label
        a, b = int(r["start"]), int(r["end"])
        assert float(r["probability"]) == pytest.approx(
            float(expected["probabilities"][a:b, bundle.classes.index(r["label"])].mean()), rel=1e-6)
    result = CliRunner().invoke(main, ["evaluate", str(sb.bundle), "--data", str(sb.train_file), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert set(report["segments"]) == {"samples", "accuracy", "macro_f1", "events", "predicted_events",
                                       "event_precision", "event_recall", "event_f1", "boundary_error"}
    assert report["segments"]["samples"] == len(rows)
    true = np.concatenate(sb.labels)
    assert report["segments"]["accuracy"] == pytest.approx(np.mean([r["label"] for r in rows] == true))


@pytest.mark.parametrize("args, message", [
    (["--model", "minirocket"], "--window-label each: --model minirocket reduces a window to features and cannot "
                                "label each time step; choose one of fcn, resnet, inception, lite, tcn, unet"),
    (["--model", "mlp"], "--window-label each: --model mlp mixes every step of a window and cannot label each time "
                         "step; choose one of fcn, resnet, inception, lite, tcn, unet"),
    (["--task", "regression"], "--window-label each labels every time step with a class; --task regression has no "
                               "classes (use --task binary, multiclass or multilabel, or another --window-label)"),
])
def test_what_cannot_label_every_step_is_refused_in_one_line(tmp_path, args, message):
    recordings, _ = make_recordings("multiclass", count=2, samples=60)
    data = write_step_csv(tmp_path / "r.csv", recordings, step_labels("binary", recordings))
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--recording-column", "recording", "--window",
                                       "16", "--window-label", "each", "--epochs", "1", *args,
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.endswith(f"Error: {message}\n"), result.output
    assert not (tmp_path / "run").exists()


def test_segments_and_saliency_are_refused_where_they_do_not_apply(step_bundles, windowed_bundles, tmp_path):
    wb = windowed_bundles["multiclass"]
    result = CliRunner().invoke(main, ["predict", str(wb.bundle), "--data", str(wb.train_file), "--segments"])
    assert result.exit_code == 2 and result.output.endswith(
        f"Error: --segments: {wb.bundle} answers one label per window; segments need a bundle trained with "
        "--window-label each\n")
    sb = step_bundles["binary"]
    result = CliRunner().invoke(main, ["predict", str(sb.bundle), "--data", str(sb.train_file), "--segments", "--out",
                                       str(tmp_path / "segments.npz")])
    assert result.exit_code == 2 and result.output.endswith(
        f"Error: --out {tmp_path / 'segments.npz'}: --segments writes a table of segments; name a .csv or .jsonl "
        "file\n")
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(main, ["export", str(step_bundles["binary"].run_dir), "--saliency", "--out",
                                       str(tmp_path / "s")])
    assert result.exit_code == 2 and result.output.endswith(
        "Error: --saliency: a per-step model (--window-label each) already answers at every time step; its "
        "probabilities are the map. Export without --saliency\n")
    assert not (tmp_path / "s").exists()


# --- every per-step model x task x format -------------------------------------------------------------------
ALL_FORMATS = "onnx,torchscript,pt2"
MODELS_TASKS = [("fcn", "binary", ALL_FORMATS), ("resnet", "multilabel", ALL_FORMATS),
                ("inception", "multiclass", ALL_FORMATS), ("lite", "binary", ALL_FORMATS),
                ("tcn", "multiclass", ALL_FORMATS), ("unet", "multiclass", ALL_FORMATS),
                ("unet", "multilabel", ALL_FORMATS), ("fcn", "multilabel", "onnx")]
# with conftest's step_bundles (fcn multiclass, unet binary, tcn multilabel: ONNX and TorchScript), every model x task
MODELS_TASKS += [(m, t, "onnx,torchscript") for m, t in (("resnet", "binary"), ("resnet", "multiclass"),
                                                         ("inception", "binary"), ("inception", "multilabel"),
                                                         ("lite", "multiclass"), ("lite", "multilabel"),
                                                         ("tcn", "binary"))]
USER_LOSS = """
import torch


class StepFocal(torch.nn.Module):
    def forward(self, prediction, target):  # (N, K, W) and (N, W): a focal loss at every step
        log_p = torch.log_softmax(prediction, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return (-(1 - log_p.exp()) ** 2 * log_p).mean()
"""


def _train(tmp_path: Path, task: str, model: str, loss: str | None = None, ensemble: int = 1) -> Path:
    recordings, _ = make_recordings("multiclass", count=2, samples=80, seed=5)
    data = write_step_csv(tmp_path / "r.csv", recordings, step_labels(task, recordings))
    target = {"target_column": "up,down"} if task == "multilabel" else {}
    return train(RunSettings(DataConfig(data=str(data), task=task, window_label="each", recording_column="recording",
                                        **STEPS, **target), LossConfig(name=loss),
                             ModelConfig(name=model, width=0.125, ensemble=ensemble),
                             TrainConfig(epochs=1, batch_size=8, seed=0, progress=False)),
                 out=tmp_path / "run", **QUIET).run_dir


@pytest.mark.slow
@pytest.mark.parametrize("model, task, formats", MODELS_TASKS, ids=[f"{m}-{t}-{f}" for m, t, f in MODELS_TASKS])
def test_every_per_step_model_and_task_exports_in_every_format_and_predicts_as_eager(tmp_path, model, task, formats):
    run_dir = _train(tmp_path, task, model)
    bundle_dir = export_run(run_dir, ExportConfig(fmt=formats), **QUIET)
    verification = json.loads((bundle_dir / "verification.json").read_text())
    assert verification["passed"]
    assert {r["engine"] for r in verification["rows"]} == {ENGINES[f] for f in formats.split(",")}
    if "torchscript" in formats:  # scripted, not traced: the per-step head compiles for every model
        assert json.loads((bundle_dir / "manifest.json").read_text())["torchscript"] == {"model": "script",
                                                                                        "loss": "script"}
    bundle = runtime.load(bundle_dir)
    x = np.random.default_rng(1).normal(size=(5, 2, STEPS["window"])).astype(np.float32) * 3
    got = bundle.predict(x)
    with torch.no_grad():
        eager = [t.numpy() for t in as_tuple(model_graph(rebuild(run_dir).model, task)(torch.from_numpy(x)))]
    for name, expected in zip(bundle.outputs, eager):
        assert got[name].shape == expected.shape and expected.shape[-1] == STEPS["window"]
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_user_loss_receives_the_per_step_tensors_and_an_ensemble_averages_per_step(tmp_path, monkeypatch):
    (tmp_path / "steplosses.py").write_text(USER_LOSS)
    monkeypatch.chdir(tmp_path)
    run_dir = _train(tmp_path, "multiclass", "fcn", "steplosses:StepFocal")
    bundle = runtime.load(export_run(run_dir, ExportConfig(fmt="onnx,torchscript"), **QUIET))
    scores = np.random.default_rng(2).normal(size=(4, 3, 7)).astype(np.float32) * 5
    target = np.random.default_rng(3).integers(0, 3, size=(4, 7))
    loss, per_window = bundle.loss(scores, target)
    log_p = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))  # numpy's focal loss at every step
    picked = np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
    focal = -(1 - np.exp(picked)) ** 2 * picked
    assert loss == pytest.approx(focal.mean(), rel=1e-4)
    np.testing.assert_allclose(per_window, focal.mean(axis=1), rtol=1e-4)
    (tmp_path / "e").mkdir()
    ensemble_dir = _train(tmp_path / "e", "multiclass", "fcn", ensemble=2)
    ensemble = runtime.load(export_run(ensemble_dir, ExportConfig(fmt="onnx"), **QUIET))
    members = [rebuild(m).model for m in sorted((ensemble_dir / "members").iterdir())]
    x = np.random.default_rng(4).normal(size=(3, 2, STEPS["window"])).astype(np.float32)
    with torch.no_grad():
        expected = np.mean([torch.softmax(m(torch.from_numpy(x)), dim=1).numpy() for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x)["probabilities"], expected, rtol=1e-5, atol=1e-6)


# --- training quality --------------------------------------------------------------------------------------
def _metrics(tmp_path: Path, args: list[str]) -> dict:
    result = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.learns
@pytest.mark.parametrize("model", ["fcn", "unet"])
def test_default_training_finds_the_activities_of_unseen_recordings(tmp_path, model):
    """examples/gait.csv: eight subjects whose activity changes every 150 to 400 samples; three unseen subjects to
    test. Default flags but 15 epochs (the learns tier): per-sample accuracy >= 0.95, event F1 >= 0.9, median
    boundary error <= a tenth of the window."""
    m = _metrics(tmp_path, ["--data", str(ROOT / "examples" / "gait.csv"), "--test-data",
                            str(ROOT / "examples" / "gait_test.csv"), "--recording-column", "subject", "--time-column",
                            "time", "--window", "128", "--window-label", "each", "--model", model, "--epochs", "15"])
    report = m["segments"]["test"]
    assert report["accuracy"] >= 0.95 and report["event_f1"] >= 0.9 and report["boundary_error"] <= 12.8, report


@pytest.mark.slow
@pytest.mark.learns
def test_short_anomalies_are_found_at_high_event_precision_and_recall(tmp_path):
    """examples/machine.csv: 2 % of the samples anomalous in bursts of 10 to 30; three unseen machines to test."""
    m = _metrics(tmp_path, ["--data", str(ROOT / "examples" / "machine.csv"), "--test-data",
                            str(ROOT / "examples" / "machine_test.csv"), "--recording-column", "machine", "--task",
                            "binary", "--window", "128", "--window-label", "each", "--epochs", "30"])
    report = m["segments"]["test"]
    assert report["event_recall"] >= 0.9 and report["event_precision"] >= 0.8, report
