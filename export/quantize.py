"""model.int8.onnx: onnxruntime's static quantisation of the verified fp32 model graph, measured before
it is kept.

QDQ format, int8 weights per output channel, uint8 activations per tensor (the u8s8 kernels VNNI CPUs
run), calibrated by min/max on a sample of the run's training series (RUN_DIR/calibration.npy, or
--calibration-data). Static rather than dynamic quantisation: onnxruntime's dynamic quantisation of
convolutions is slower than fp32 (onnxruntime issue 12854). The quantised graph keeps the fp32 graph's
layout (conv2d where the export picked it), its normalisation and its named outputs.

An int8 graph cannot match eager PyTorch to 1e-5, so it is held to what matters instead: the task's main
metric on the run's labelled held-out data (test, else validation, else training series), against the
fp32 graph on the same series. Export fails, with nothing written, when the drop is larger than
--max-metric-drop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.settings.config import ModelConfig
from pipeline.errors import DataError, PipelineError
from pipeline.training.run_config import RunConfig
from pipeline.training.run_folder import CALIBRATION, CALIBRATION_SERIES, RunFolder
from runtime.inputs import plural
from runtime.manifest import MODEL_INPUT, MODEL_INT8, SALIENCY_OUTPUT, Int8
from runtime.tasks import TASKS, Task

METHOD = "onnxruntime static quantisation, QDQ; int8 weights per channel, uint8 activations per tensor (min/max)"
CALIBRATION_BATCH = 32
EVAL_BATCH = 256
# The int8 graph on another CPU may round an activation to the next step; its golden outputs are checked
# to a tolerance of that order, not the fp32 graph's 1e-5.
GOLDEN_ATOL, GOLDEN_RTOL = 1e-2, 1e-2


class MetricDropError(Exception):
    """The int8 graph loses more of the main metric than --max-metric-drop allows (export exits 1)."""


def default_max_drop(task: Task) -> float:
    """1 point of a score (accuracy, F1), or 2 percent of an error (RMSE, MAE)."""
    return 2.0 if task.main_metric_is_error else 1.0


def drop_unit(task: Task) -> str:
    return "percent" if task.main_metric_is_error else "points"


@dataclass(frozen=True)
class Measured:
    """Both graphs on the same labelled series."""

    where: str
    series: int
    fp32: float
    int8: float
    agreement: float | None

    def drop(self, task: Task) -> float:
        if task.main_metric_is_error:
            return 100.0 * (self.int8 - self.fp32) / self.fp32 if self.fp32 > 0 else (0.0 if self.int8 <= 0
                                                                                      else float("inf"))
        return 100.0 * (self.fp32 - self.int8)


def calibration_series(run_dir: Path, cfg: ModelConfig, data_file: str | None, seed: int) -> tuple[np.ndarray, str]:
    """The series to calibrate on, and where they came from (said in the manifest)."""
    if data_file is None:
        path = Path(run_dir) / CALIBRATION
        if not path.is_file():
            raise PipelineError(f"{run_dir} has no {CALIBRATION} (runs trained before export --quantize existed lack "
                                "it); pass --calibration-data FILE with series like the training data")
        return np.load(path, allow_pickle=False), f"{CALIBRATION} of the run (a random sample of its training series)"
    from pipeline.data.readers import read_series

    data = read_series(data_file, labels=False)
    X = data.X
    problems = []
    if X.shape[1] != cfg.in_channels:
        problems.append(f"{data_file}: series have {plural(X.shape[1], 'channel')}; the model takes "
                        f"{cfg.in_channels}")
    if cfg.fixed_length and X.shape[2] != cfg.length:
        problems.append(f"{data_file}: series have length {X.shape[2]}; --model {cfg.name} takes length {cfg.length}")
    if not np.isfinite(X).all():
        problems.append(f"{data_file}: holds NaN or Inf; calibration series must be finite")
    if problems:
        raise DataError([f"--calibration-data {p}" for p in problems])
    n = min(CALIBRATION_SERIES, data.n)
    rows = np.sort(np.random.default_rng(seed).choice(data.n, n, replace=False))
    return np.ascontiguousarray(X[rows], dtype=np.float32), f"--calibration-data {data_file}"


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: one feed dict per call, None at the end."""

    def __init__(self, X: np.ndarray):
        self._feeds = iter([{MODEL_INPUT: X[i:i + CALIBRATION_BATCH]} for i in range(0, len(X), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._feeds, None)


def _op_types(graph_path: Path) -> list[str]:
    """What to quantise: the convolutions and linear layers; a graph with the saliency output keeps MatMul in
    float (the map's head weights times the features: per-channel int8 of the head's weight, shared with its
    Gemm, fails in onnxruntime's quantiser, and the map is scaled per series anyway)."""
    import onnx

    outputs = [o.name for o in onnx.load(str(graph_path), load_external_data=False).graph.output]
    return ["Conv", "Gemm"] if SALIENCY_OUTPUT in outputs else ["Conv", "Gemm", "MatMul"]


@contextlib.contextmanager
def _working_directory(path: str):
    """contextlib.chdir (Python 3.11+) for 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def quantize_model(fp32_path: Path, out: Path, X: np.ndarray) -> Path:
    """Write the int8 graph of `fp32_path` to `out`, calibrated on the series X (N, C, L)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(f".{out.name}.prepared")
    quiet = logging.getLogger("onnxruntime.quantization")  # per-node notes; our log says what happened
    level, root_level = quiet.level, logging.getLogger().level
    quiet.setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    fp32_path, prepared = Path(fp32_path).resolve(), prepared.resolve()
    try:
        # symbolic shape inference saves the graph it gave up on into the working directory
        # (sym_shape_infer_temp.onnx and a data file): it runs in a folder of its own, never the user's
        with tempfile.TemporaryDirectory(prefix="pipeline-quantize-") as scratch, _working_directory(scratch):
            try:
                quant_pre_process(str(fp32_path), str(prepared))
            except Exception:  # it gives up on some graphs (an ensemble's stacked outputs)
                quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Reader(np.ascontiguousarray(X, dtype=np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=_op_types(prepared))
    finally:
        prepared.unlink(missing_ok=True)
        quiet.setLevel(level)
        logging.getLogger().setLevel(root_level)
    return out


def labelled_series(run_dir: Path, saved: RunConfig):
    """The run's labelled held-out series as (X (N_file, C, L), rows, targets, description)."""
    from pipeline.data.load import load_datasets

    data_cfg = saved.settings.data
    try:
        datasets = load_datasets(data_cfg, saved.model.name, saved.seed, saved.record.encoding)
    except DataError as exc:
        raise PipelineError(f"--quantize int8 measures the int8 graph on the run's data, which cannot be read "
                            f"now: {exc}") from None
    data = data_cfg.data or datasets.train.source  # the embedded data has no path
    val = (f"{data_cfg.val_data} (validation data)" if data_cfg.val_data
           else f"{data} (the run's validation split)")
    for split, where in ((datasets.test, f"{data_cfg.test_data} (test data)"), (datasets.val, val),
                         (datasets.train, f"{data} (training data: the run has no test or validation data)")):
        if split is not None and len(split):
            return split.X, split.rows, split.targets, where
    raise PipelineError(f"{run_dir}: no labelled series to measure the int8 graph on")


def raw_scores(run, X: np.ndarray, rows: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """run(series) -> the graph's outputs, on X[rows] in calls of `batch`: the first output (the raw scores)."""
    return np.concatenate([run(np.ascontiguousarray(X[rows[i:i + batch]], dtype=np.float32))[0]
                           for i in range(0, len(rows), batch)])


def decisions(task: Task, raw: np.ndarray) -> np.ndarray | None:
    """Each series' predicted label(s) from raw scores, or None for tasks without labels."""
    if task.decision == "argmax":
        return raw.argmax(axis=1)[:, None]
    if task.decision == "threshold":
        return raw > 0
    return None


def measure(task: Task, fp32: Path, int8: Path, X: np.ndarray, rows: np.ndarray, targets: np.ndarray,
            where: str, threads: int | None = None) -> Measured:
    """The task's main metric of both ONNX graphs on X[rows], and how often their labels agree."""
    from runtime.bundle import session_options

    options = session_options(threads)
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    scores = [raw_scores(lambda x, s=s: s.run(None, {MODEL_INPUT: x}), X, rows) for s in sessions]
    return compare(task, scores[0], scores[1], targets, where)


def compare(task: Task, fp32_scores: np.ndarray, int8_scores: np.ndarray, targets: np.ndarray,
            where: str) -> Measured:
    """The task's main metric of both graphs' raw scores on the same series, and how often their labels agree."""
    scores = (fp32_scores, int8_scores)
    metric = [task.compute_metrics(s, targets)[task.main_metric] for s in scores]
    labels = [decisions(task, s) for s in scores]
    agreement = None if labels[0] is None else float((labels[0] == labels[1]).all(axis=1).mean())
    return Measured(where, len(fp32_scores), float(metric[0]), float(metric[1]), agreement)


def judged(task: Task, m: Measured, max_drop: float | None, what: str, log=print) -> tuple[float, float, str]:
    """(drop, limit, unit) of a measured int8 graph; MetricDropError naming `what` when it costs too much."""
    limit = default_max_drop(task) if max_drop is None else max_drop
    drop, unit = m.drop(task), drop_unit(task)
    said = (f"{task.main_metric} {m.fp32:.4g} (fp32) -> {m.int8:.4g} (int8) on {m.series} series of "
            f"{m.where}: {'+' if drop > 0 and unit == 'percent' else ''}{drop:.2f}"
            f"{'% of the error' if unit == 'percent' else ' points'}"
            + ("" if m.agreement is None else f", labels agree on {100 * m.agreement:.1f}% of series"))
    if not drop <= limit:
        raise MetricDropError(f"--quantize int8: {what}: {said}, more than --max-metric-drop {limit:g}; nothing was "
                              "written. Calibrate on other series (--calibration-data FILE), allow more "
                              "(--max-metric-drop), or export without --quantize")
    log(f"int8 ({what}): {said} (limit {limit:g})")
    return drop, limit, unit


@dataclass(frozen=True)
class Int8Inputs:
    """What the int8 graph is calibrated and measured on, read before any graph is exported (a missing
    file fails in seconds, not after the export)."""

    calibration: np.ndarray
    calibration_source: str
    X: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    where: str


def int8_inputs(run_dir: Path, cfg: ModelConfig, calibration_data: str | None) -> Int8Inputs:
    saved = RunFolder(run_dir).read_config()
    X_cal, source = calibration_series(run_dir, cfg, calibration_data, saved.seed)
    return Int8Inputs(X_cal, source, *labelled_series(run_dir, saved))


def quantize_bundle(tmp: Path, inputs: Int8Inputs, task_name: str, max_drop: float | None, log=print) -> Int8:
    """Quantise tmp/model.onnx into tmp/model.int8.onnx and measure it; MetricDropError when it costs too much."""
    task = TASKS[task_name]
    log(f"quantising the model graph to int8 ({len(inputs.calibration)} series to calibrate on); measuring both "
        f"graphs on {len(inputs.rows)} series of {inputs.where}")
    fp32_path, int8_path = tmp / "model.onnx", tmp / MODEL_INT8
    quantize_model(fp32_path, int8_path, inputs.calibration)
    m = measure(task, fp32_path, int8_path, inputs.X, inputs.rows, inputs.targets, inputs.where)
    return int8_entry(task, m, inputs, max_drop, MODEL_INT8, METHOD, log)


def int8_entry(task: Task, m: Measured, inputs: Int8Inputs, max_drop: float | None, file: str, method: str,
               log=print) -> Int8:
    """The manifest's account of an int8 graph `file`, after judged() let it through."""
    drop, limit, unit = judged(task, m, max_drop, file, log)
    return Int8(file=file, method=method, calibration=inputs.calibration_source,
                calibration_series=len(inputs.calibration), evaluated_on=inputs.where, evaluated_series=m.series,
                metric=task.main_metric, fp32=m.fp32, int8=m.int8, drop=round(drop, 6), drop_unit=unit,
                max_drop=limit, label_agreement=m.agreement, golden_atol=GOLDEN_ATOL, golden_rtol=GOLDEN_RTOL)
