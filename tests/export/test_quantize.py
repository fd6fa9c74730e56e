"""export --quantize int8: the int8 graph, its measured cost, the refusals, and running it in the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import runtime
from pipeline.settings.config import MODEL_NAMES
from export.bundle import ExportConfig, export_run
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.training.run_folder import CALIBRATION
from runtime.errors import BundleError
from runtime.golden import int8_rows, read_golden
from runtime.manifest import MODEL_INT8
from runtime.tasks import TASKS
from tests.conftest import TASKS as SERIES_TASKS  # the tasks of series (forecasts: tests/pipeline/test_forecast.py)

ONNX_BUNDLE_FILES = {"model.onnx", "loss.onnx", "manifest.json", "manifest.schema.json", "golden.json",
                     "verification.json", "README.txt"}


def _raw(path: Path, X: np.ndarray) -> np.ndarray:
    """The first output of an ONNX graph, run directly by onnxruntime (not through our runtime)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


def _reference_metric(task: str, raw: np.ndarray, y: np.ndarray, classes) -> float:
    """The task's main metric written out in numpy, independently of runtime/metrics.py."""
    raw = raw.astype(np.float64)
    if task == "multiclass":
        index = np.array([list(classes).index(c) for c in y])
        return float((raw.argmax(1) == index).mean())
    if task == "binary":
        return float(((raw[:, 0] > 0).astype(int) == y.astype(int)).mean())
    if task == "multilabel":
        pred, truth = raw > 0, y.astype(bool)
        tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
        return float(2 * tp / (2 * tp + fp + fn))
    y = y.reshape(raw.shape).astype(np.float64)
    if task == "regression":
        return float(np.sqrt(((raw - y) ** 2).mean()))
    return float(np.abs(np.exp(raw) - y).mean())  # count: MAE of the rate


@pytest.mark.parametrize("task", SERIES_TASKS)
def test_int8_bundle_holds_a_qdq_graph_measured_against_fp32_on_the_test_data(int8_bundles, task):
    tb = int8_bundles[task]
    assert {p.name for p in tb.bundle.iterdir()} == ONNX_BUNDLE_FILES | {MODEL_INT8}
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    entry = manifest["int8"]
    data = np.load(tb.test_file)
    X, y = data["X"], data["y"]
    fp32 = _raw(tb.bundle / "model.onnx", X)
    int8 = _raw(tb.bundle / MODEL_INT8, X)
    expected = {"fp32": _reference_metric(task, fp32, y, manifest["classes"]),
                "int8": _reference_metric(task, int8, y, manifest["classes"])}
    assert entry["metric"] == {"regression": "rmse", "count": "mae", "multilabel": "micro_f1"}.get(task, "accuracy")
    assert entry["fp32"] == pytest.approx(expected["fp32"], rel=1e-6, abs=1e-9)
    assert entry["int8"] == pytest.approx(expected["int8"], rel=1e-6, abs=1e-9)
    if task in ("regression", "count"):
        assert entry["drop_unit"] == "percent"
        assert entry["drop"] == pytest.approx(100 * (expected["int8"] - expected["fp32"]) / expected["fp32"], abs=1e-5)
        assert entry["label_agreement"] is None
    else:
        assert entry["drop_unit"] == "points"
        assert entry["drop"] == pytest.approx(100 * (expected["fp32"] - expected["int8"]), abs=1e-5)
        labels = [(r.argmax(1)[:, None] if task == "multiclass" else r > 0) for r in (fp32, int8)]
        assert entry["label_agreement"] == pytest.approx(float((labels[0] == labels[1]).all(1).mean()))
    assert entry["evaluated_on"] == f"{tb.test_file} (test data)" and entry["evaluated_series"] == len(X) == 37
    assert entry["calibration_series"] == 48  # the whole training file: fewer series than the sample size
    assert entry["max_drop"] == 100.0
    # the int8 graph is close to fp32 (the same function, rounded), not a different model: on average within
    # 5% of the score range (single series outside the calibration ranges clip further)
    assert np.abs(int8 - fp32).mean() <= 0.05 * np.abs(fp32).max()


def test_int8_graph_is_static_qdq_with_per_channel_int8_weights(int8_bundles):
    tb = int8_bundles["multiclass"]
    graph = onnx.load(tb.bundle / MODEL_INT8).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DynamicQuantizeLinear" not in ops
    inits = {i.name: i for i in graph.initializer}
    conv_weights = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and len(inits[node.input[0]].dims) == 4:
            weight, scale = inits[node.input[0]], inits[node.input[1]]
            conv_weights.append((weight.data_type, tuple(scale.dims), weight.dims[0]))
    assert conv_weights, "no quantised 2D convolution weights (the conv2d layout)"
    for dtype, scale_dims, out_channels in conv_weights:
        assert dtype == onnx.TensorProto.INT8 and scale_dims == (out_channels,)  # one scale per output channel
    assert json.loads((tb.bundle / "manifest.json").read_text())["onnx_layout"] == "conv2d"


def test_the_run_keeps_a_sample_of_its_training_series_to_calibrate_on(task_bundles):
    tb = task_bundles["regression"]
    sample = np.load(tb.run_dir / CALIBRATION)
    train = np.load(tb.train_file)["X"]
    assert sample.dtype == np.float32 and sample.shape == train.shape  # 48 series < 256: all of them
    assert {row.tobytes() for row in sample} == {row.tobytes() for row in train}


def test_runtime_runs_the_int8_graph_when_asked(int8_bundles, task_bundles):
    tb = int8_bundles["multiclass"]
    X = np.load(tb.test_file)["X"]
    bundle = runtime.load(tb.bundle, precision="int8")
    assert bundle.precision == "int8"
    np.testing.assert_allclose(bundle.predict(X)["logits"], _raw(tb.bundle / MODEL_INT8, X), rtol=1e-6, atol=1e-6)
    assert runtime.load(tb.bundle, precision="auto").precision == "int8"
    assert runtime.load(tb.bundle).precision == "fp32"
    np.testing.assert_allclose(runtime.load(tb.bundle).predict(X)["logits"], _raw(tb.bundle / "model.onnx", X),
                               rtol=1e-6, atol=1e-6)
    plain = task_bundles["multiclass"].bundle
    assert runtime.load(plain, precision="auto").precision == "fp32"
    with pytest.raises(BundleError) as err:
        runtime.load(plain, precision="int8")
    assert str(err.value) == (f"{plain}: has no model.int8.onnx; re-export with `pipeline export RUN_DIR "
                              "--quantize int8`, or run it in fp32")
    with pytest.raises(BundleError) as err:
        runtime.load(plain, precision="int4")
    assert str(err.value) == "precision 'int4' is not valid; choose one of fp32, int8, auto"


def test_predict_evaluate_and_verify_take_precision_int8(int8_bundles, tmp_path):
    tb = int8_bundles["regression"]
    data = np.load(tb.test_file)
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(tb.bundle), "--data", str(tb.test_file), "--precision", "int8",
                                  "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["precision"] == "int8"
    rmse = _reference_metric("regression", _raw(tb.bundle / MODEL_INT8, data["X"]), data["y"], None)
    assert got["rmse"] == pytest.approx(rmse, rel=1e-6)
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    assert got["rmse"] == pytest.approx(manifest["int8"]["int8"], rel=1e-6)  # what export measured
    out = tmp_path / "p.npy"
    result = runner.invoke(main, ["predict", str(tb.bundle), "--data", str(tb.test_file), "--precision", "int8",
                                  "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"model graph: model.int8.onnx (int8)\nwrote {out} (37 series)\n"
    np.testing.assert_allclose(np.load(out), _raw(tb.bundle / MODEL_INT8, data["X"]), rtol=1e-6, atol=1e-6)
    result = runner.invoke(main, ["verify", str(tb.bundle)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    int8_lines = [line.split() for line in result.output.splitlines() if line.startswith("int8 ")]
    assert [(r[0], r[1], r[2], r[-1]) for r in int8_lines] == [("int8", "onnxruntime", "prediction", "ok")]


def test_the_int8_golden_check_fails_on_outputs_beyond_its_tolerance(int8_bundles):
    tb = int8_bundles["multiclass"]
    golden = read_golden(tb.bundle)
    entry = runtime.load(tb.bundle, precision="int8").manifest.int8
    session = ort.InferenceSession(str(tb.bundle / MODEL_INT8), providers=["CPUExecutionProvider"])
    rows = int8_rows(golden, entry, lambda feeds: session.run(None, feeds))
    assert [r.problem for r in rows] == [None, None, None]
    logits = golden["model_int8"]["outputs"]["logits"]
    logits["data"] = [v + 2 * (entry.golden_atol + entry.golden_rtol * abs(v)) for v in logits["data"]]
    rows = int8_rows(golden, entry, lambda feeds: session.run(None, feeds))
    assert [r.output for r in rows if r.problem] == ["logits"]


def _squashed(tb, tmp_path: Path) -> Path:
    """Calibration series a thousand times smaller than the data: the int8 ranges clip every real series."""
    path = tmp_path / "squashed.npy"
    np.save(path, np.load(tb.train_file)["X"] * 1e-3)
    return path


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_export_refuses_an_int8_graph_that_loses_too_much_and_writes_nothing(task_bundles, learned_regression, task,
                                                                              tmp_path):
    # a clipped graph predicts about the targets' mean: the regression run must have learned to lose by it
    tb = learned_regression if task == "regression" else task_bundles[task]
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(tb.run_dir), "--format", "onnx", "--quantize", "int8",
                                       "--calibration-data", str(_squashed(tb, tmp_path)), "--out", str(out)])
    assert result.exit_code == 1, result.output
    unit = "% of the error" if task == "regression" else " points"
    limit = 2 if task == "regression" else 1
    line = result.stderr.strip()
    assert line.startswith(f"Error: --quantize int8: model.int8.onnx: {TASKS[task].main_metric} ")
    assert f"(int8) on 37 series of {tb.test_file} (test data): " in line
    assert line.endswith(f", more than --max-metric-drop {limit}; nothing was written. Calibrate on other series "
                         "(--calibration-data FILE), allow more (--max-metric-drop), or export without --quantize")
    drop = float(line.split("(test data): ")[1].split(unit)[0])
    assert drop > limit
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_a_tiny_max_metric_drop_refuses_what_the_default_accepts(learned_regression, tmp_path):
    """The same graph, limits either side of its measured drop: accepted at the drop, refused just below."""
    tb = learned_regression
    out = tmp_path / "bundle"
    accepted = export_run(tb.run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=100.0), out=out,
                          log=lambda _: None)
    drop = json.loads((accepted / "manifest.json").read_text())["int8"]["drop"]
    assert 0 < drop <= 2  # int8 rounding costs this run some RMSE, within the default limit
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(Exception) as err:
        export_run(tb.run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=drop / 2), out=out,
                   force=True, log=lambda _: None)
    assert type(err.value).__name__ == "MetricDropError"
    assert f", more than --max-metric-drop {drop / 2:g}; nothing was written." in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier bundle is untouched


@pytest.mark.parametrize("args, message", [
    (["--calibration-data", "x.npy"], "--calibration-data applies to the int8 graph only; add --quantize int8"),
    (["--max-metric-drop", "3"], "--max-metric-drop applies to the int8 graph only; add --quantize int8"),
    (["--quantize", "int8", "--format", "torchscript"],
     "--quantize int8 quantises the ONNX and ExecuTorch model graphs; add onnx or pte to --format"),
    (["--quantize", "int8", "--max-metric-drop", "-1"], "--max-metric-drop must be >= 0; got -1"),
])
def test_quantize_flag_refusals(task_bundles, tmp_path, args, message):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(task_bundles["binary"].run_dir), "--out", str(out), *args])
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert not out.exists()


def test_calibration_data_of_the_wrong_shape_is_one_clear_line(task_bundles, tmp_path):
    tb = task_bundles["binary"]
    bad = tmp_path / "two_channels.npy"
    np.save(bad, np.zeros((4, 2, 16), np.float32))
    result = CliRunner().invoke(main, ["export", str(tb.run_dir), "--format", "onnx", "--quantize", "int8",
                                       "--calibration-data", str(bad), "--out", str(tmp_path / "b")])
    assert (result.exit_code, result.stderr) == (
        2, f"Error: --calibration-data {bad}: series have 2 channels; the model takes 1\n")


def test_a_run_without_its_calibration_sample_asks_for_calibration_data(task_bundles, tmp_path):
    tb = task_bundles["binary"]
    run = Path(shutil.copytree(tb.run_dir, tmp_path / "old-run"))
    (run / CALIBRATION).unlink()
    with pytest.raises(PipelineError) as err:
        export_run(run, ExportConfig(fmt="onnx", quantize="int8"), out=tmp_path / "b", log=lambda _: None)
    assert str(err.value) == (f"{run} has no calibration.npy (runs trained before export --quantize existed lack "
                              "it); pass --calibration-data FILE with series like the training data")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_exports_an_int8_graph_the_runtime_runs(tmp_path, npz_file, model):
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    data = npz_file("binary", n=64, length=24)
    run = train(RunSettings(DataConfig(data=str(data), task="binary", val_split=0.25), LossConfig(),
                ModelConfig(name=model, width=0.25), TrainConfig(epochs=2, batch_size=16, progress=False)),
                out=tmp_path / "run", log=lambda _: None)
    bundle = export_run(run.run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=100.0),
                        log=lambda _: None)
    entry = json.loads((bundle / "manifest.json").read_text())["int8"]
    assert entry["evaluated_on"] == f"{data} (the run's validation split)" and entry["evaluated_series"] == 16
    X = np.load(data)["X"]
    loaded = runtime.load(bundle, precision="int8")
    np.testing.assert_allclose(loaded.predict(X)["logit"], _raw(bundle / MODEL_INT8, X), rtol=1e-6, atol=1e-6)
    ops = {n.op_type for n in onnx.load(bundle / MODEL_INT8).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_a_graph_symbolic_shape_inference_gives_up_on_is_quantised_without_a_file_in_the_working_directory(
        task_bundles, tmp_path, monkeypatch):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def gives_up(self):  # as on an ensemble's stacked outputs: onnxruntime then saves its graph into the cwd
        self.run_ = False
        return False

    monkeypatch.setattr(SymbolicShapeInference, "_infer_impl", gives_up)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = export_run(task_bundles["binary"].run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=100.0),
                     out=tmp_path / "bundle", log=lambda _: None)
    assert {p.name for p in out.iterdir()} == ONNX_BUNDLE_FILES | {MODEL_INT8}
    assert list(cwd.iterdir()) == []
