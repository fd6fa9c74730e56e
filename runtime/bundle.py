"""Load an exported bundle and run its graphs with onnxruntime: predictions, losses, metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import forecast, segments
from runtime.errors import BundleError, InputError, IntegrityError, check_regular
from runtime.inputs import SeriesSpec, as_array, batch_rows, batches, plural
from runtime.errors import input_error
from runtime.signature import check_signature, file_sha256, trusted_key
from runtime.manifest import LOSS_ONNX, MANIFEST_FILE, MODEL_INPUT, MODEL_INT8, MODEL_ONNX, MODEL_PRECISIONS, Manifest
from runtime.tasks import TASKS
from runtime.windows import Stream, window_starts, window_view


MAX_WINDOW_VALUES = 1 << 27  # channels x length of one window (512 MiB of float32): past it, a typo, not a window


def check_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists with its recorded size and sha256."""
    for name, entry in sorted(manifest.files.items()):
        path = Path(bundle_dir) / name
        check_regular(path)  # a link, a folder or a FIFO where a file belongs
        if not path.is_file():
            raise IntegrityError(f"{path}: listed in manifest.json but missing; the bundle is incomplete, "
                                 "copy it again or re-export it")
        size = path.stat().st_size
        if size != entry.bytes:
            raise IntegrityError(f"{path}: is {size} bytes but {MANIFEST_FILE} says {entry.bytes} (truncated or "
                                 "altered); copy the bundle again or re-export it")
        if file_sha256(path) != entry.sha256:
            raise IntegrityError(f"{path}: sha256 differs from manifest.json (the file was altered); copy the "
                                 "bundle again or re-export it")


def session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are not the user's
    if threads is not None:
        if threads < 1:
            raise BundleError(f"threads: {threads} must be at least 1 (or None for onnxruntime's default)")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _open(path: Path, options: ort.SessionOptions, providers: list[str] | None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BundleError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None


def _check_io(session: ort.InferenceSession, path: Path, inputs: list[tuple[str, str]], outputs: list[str]) -> None:
    """The graph's input names/dtypes and output names are those the manifest promises."""
    got_inputs = [(i.name, i.type) for i in session.get_inputs()]
    want_inputs = [(name, f"tensor({'float' if dtype == 'float32' else dtype})") for name, dtype in inputs]
    got_outputs = [o.name for o in session.get_outputs()]
    if got_inputs != want_inputs or got_outputs != list(outputs):
        raise BundleError(f"{path}: graph inputs {got_inputs} and outputs {got_outputs} differ from {MANIFEST_FILE} "
                          f"(inputs {want_inputs}, outputs {list(outputs)}); the bundle is inconsistent, re-export it")


class Bundle:
    """An exported model and loss, checked and ready to run (use `runtime.load`)."""

    def __init__(self, path: Path, manifest: Manifest, model: ort.InferenceSession,
                 loss: ort.InferenceSession | None, precision: str = "fp32", model_file: str = MODEL_ONNX):
        self.path, self.manifest = path, manifest
        self.precision = precision  # the model graph that runs: fp32 (model.onnx) or int8 (model.int8.onnx)
        self.model_file = model_file
        self.task: str = manifest.task
        self.spec = TASKS[manifest.task]
        self.outputs: list[str] = list(manifest.outputs)
        self.n_outputs: int = manifest.n_outputs
        w = manifest.window
        self.quantiles: tuple[float, ...] = tuple(w.quantiles or ()) if w is not None and w.horizon else ()
        # the loss graph's target width: a quantile forecast has Q raw outputs per target value
        self.target_outputs: int = self.n_outputs // max(len(self.quantiles), 1)
        self.classes: list[str] | None = manifest.classes
        self.series = SeriesSpec(manifest.input)
        # --window-label each: a label for every time step, windows stitched per sample (runtime.segments)
        self.steps: bool = w is not None and w.label == "each"
        self.model_session, self.loss_session = model, loss

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, task={self.task!r}, outputs={self.outputs}, precision={self.precision!r})"

    def predict(self, x, batch_size: int | None = None, name: str = "x",
                lines: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Named model outputs for series x, (N, C, L) or (N, L); large inputs run in bounded batches.
        `lines` (the file line of each series) makes messages name lines instead of 0-based rows."""
        x = self.series.check(x, name)
        bound = self.manifest.batch_bound
        rows = batch_rows(x, batch_size, None if bound is None else bound.series_per_call)
        if len(x) <= rows and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous \
                and np.isfinite(x).all():  # one ready batch (the latency case): no copies, no batching
            return dict(zip(self.outputs, self.model_session.run(None, {MODEL_INPUT: x})))
        results: dict[str, np.ndarray] = {}
        for start, batch in batches(x, rows, name, lines):
            outputs = self.model_session.run(None, {MODEL_INPUT: batch})
            if not results:  # allocate once, now that each output's trailing shape and dtype are known
                results = {n: np.empty((len(x),) + o.shape[1:], dtype=o.dtype) for n, o in zip(self.outputs, outputs)}
            for output, values in zip(self.outputs, outputs):
                results[output][start:start + len(batch)] = values
        return results

    @property
    def window(self):
        """The manifest's `window` (length, stride, label rule) of a windowed bundle, else None."""
        return self.manifest.window

    def _window(self, length: int | None, stride: int | None) -> tuple[int, int]:
        """The windows' length and stride: the ones given (whole numbers of at least 1 sample, a window of at most
        MAX_WINDOW_VALUES values), else the manifest's."""
        for name, value in (("length", length), ("stride", stride)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InputError(f"window {name} must be a whole number of samples; got {value!r}")
            if value < 1:
                raise InputError(f"window {name} must be at least 1 sample; got {value} (leave it out for the "
                                 "bundle's own window)")
        w = self.manifest.window
        length = int(length) if length is not None else (w.length if w else self.series.fixed or
                                                         self.series.trained_length)
        stride = int(stride) if stride is not None else (w.stride if w else length)
        if length * self.series.channels > MAX_WINDOW_VALUES:
            raise InputError(f"window length {length:,} is too long: {length * self.series.channels:,} values a window, "
                             f"the most is {MAX_WINDOW_VALUES:,}; pass a shorter length")
        return length, stride

    def predict_windows(self, recording, length: int | None = None, stride: int | None = None,
                        name: str = "recording") -> dict[str, np.ndarray]:
        """Outputs of every window of one recording (C, T) (or (T,) for one channel), cut as training cut them
        (the manifest's window; `length`/`stride` override), with each window's start and end sample."""
        length, stride = self._window(length, stride)
        try:
            x = np.asarray(recording)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{name}: not an array of numbers ({str(exc).splitlines()[0]}); pass "
                             f"({self.series.channels}, samples) floats") from None
        if x.dtype.kind not in "biuf":
            raise InputError(f"{name}: holds {x.dtype} values; pass numbers, ({self.series.channels}, samples) floats")
        x = x[None, :] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] != self.series.channels:
            raise InputError(f"{name}: has shape {np.shape(recording)}; pass ({self.series.channels}, samples)")
        starts = window_starts(x.shape[1], length, stride)
        found = {"start": starts, "end": starts + length}
        if not len(starts):  # shorter than one window: no rows, each output's trailing shape and dtype
            out = self.predict(np.zeros((1, self.series.channels, length), dtype=np.float32))
            return {**found, **{k: v[:0] for k, v in out.items()}}
        parts = [self.predict(window_view(x, starts[i:i + 4096], length), name=name)
                 for i in range(0, len(starts), 4096)]  # bounded memory for recordings of any length
        return {**found, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}}

    def stream(self, length: int | None = None, stride: int | None = None) -> Stream | segments.StepStream:
        """A stream for one live recording: push chunks, get the outputs of the windows they complete
        (runtime.windows.Stream); windows as the manifest's `window` (or `length`/`stride`). A per-step bundle
        (--window-label each) answers samples instead, stitched, once final (runtime.segments.StepStream)."""
        length, stride = self._window(length, stride)
        run = lambda x: dict(zip(self.outputs, self.model_session.run(None, {MODEL_INPUT: x})))  # noqa: E731
        self.series.check(np.zeros((1, self.series.channels, length), dtype=np.float32), "window")
        windows = Stream(run, self.outputs, self.series.channels, length, stride)
        if self.steps:
            return segments.StepStream(windows, self.spec.main_output, self.spec.scores, self.n_outputs)
        return windows

    def label_samples(self, recording, length: int | None = None, stride: int | None = None,
                      name: str = "recording") -> dict[str, np.ndarray]:
        """A per-step bundle's answer for every sample of one recording (C, T) some window covers: the windows'
        per-step probabilities averaged (runtime.segments.stitched): {"sample", "probabilities" (n, K), "label"}."""
        if not self.steps:
            raise InputError(f"label_samples: {self.path} answers one label per window; per-sample labels need a "
                             "bundle trained with --window-label each")
        return self._stitched(recording, self.predict_windows(recording, length, stride, name), length, stride, name)

    def _stitched(self, recording, out: dict, length: int | None, stride: int | None, name: str) -> dict:
        """label_samples from predict_windows' `out` of the same recording (the tail window run here)."""
        x = np.asarray(recording, dtype=np.float32)
        x = x[None, :] if x.ndim == 1 else x
        length, stride = self._window(length, stride)
        end = segments.tail(x.shape[1], length, stride)
        last = None if end is None else \
            self.predict(np.ascontiguousarray(x[None, :, end[0]:]), name=name)[self.spec.main_output][0]
        return segments.stitched(out[self.spec.main_output], out["start"], x.shape[1], self.spec.scores, last, stride)

    def evaluate_recordings(self, recordings: list, labels: list, names: list[str] | None = None,
                            lines: list | None = None) -> dict:
        """A per-step bundle on labelled recordings (each (C, T) with raw labels per sample, (T,) or (T, K)): the
        loss and the task's metrics over every step of every window, and under "segments" the stitched
        per-sample accuracy, macro-F1 and event scores (runtime.segments.segment_report)."""
        names = names or [f"recording {r}" for r in range(len(recordings))]
        raws, targets, true, predicted = [], [], [], []
        for r, (x, y) in enumerate(zip(recordings, labels)):
            encoded = self.encode(y, names[r], None if lines is None else lines[r])
            if len(encoded) != np.shape(x)[-1]:
                raise InputError(f"{names[r]}: has {len(encoded)} labels for {np.shape(x)[-1]} samples; pass one per "
                                 "sample")
            out = self.predict_windows(x, name=names[r])
            raws.append(out[self.outputs[0]])
            targets.append(segments.step_targets(encoded, out["start"], self.window.length))
            found = self._stitched(x, out, None, None, names[r])  # the same windows, run once
            true.append(encoded[found["sample"]])
            predicted.append(found["label"])
        raw, target = np.concatenate(raws), np.concatenate(targets)
        if not len(raw):
            raise InputError("recordings: no recording holds a whole window; pass longer recordings")
        loss, _ = self.loss(raw, target)
        return {"loss": loss, **self.spec.compute_metrics(raw, target),
                "segments": segments.segment_report(true, predicted, self.spec.scores)}

    def loss(self, prediction, target) -> tuple[float, np.ndarray]:
        """(loss, per_sample_loss) from the loss graph: prediction is the first model output, target encoded."""
        if self.loss_session is None:
            raise BundleError(f"{self.path}: has no {LOSS_ONNX} (its --format left out onnx); re-export with "
                              "--format onnx, all, or a list with onnx such as onnx,aoti")
        prediction = np.asarray(prediction)
        rank = 3 if self.steps else 2
        if prediction.dtype.kind != "f" or prediction.ndim != rank or prediction.shape[1] != self.n_outputs:
            raise InputError(f"prediction: has shape {prediction.shape} and dtype {prediction.dtype}; pass the "
                             f"model's '{self.outputs[0]}' output, float (N, {self.n_outputs}"
                             + (", W)" if self.steps else ")"))
        target, problems = self.spec.check_encoded(target, self.target_outputs, steps=self.steps)
        if problems:
            raise input_error(problems)
        if len(target) != len(prediction):
            raise InputError(f"target: has {len(target)} rows but prediction has {len(prediction)}")
        if self.steps and target.shape[-1] != prediction.shape[-1]:
            raise InputError(f"target: has {target.shape[-1]} steps per window but prediction has "
                             f"{prediction.shape[-1]}; pass a target for every step")
        if len(prediction) == 0:
            raise InputError("prediction: holds no rows; pass at least one")
        loss, per_sample = self.loss_session.run(
            None, {"prediction": np.ascontiguousarray(prediction, dtype=np.float32), "target": target})
        return float(loss), per_sample

    def encode(self, y, name: str = "y", lines: np.ndarray | None = None) -> np.ndarray:
        """Raw labels (class names or numbers, as in the training data) as loss-graph targets."""
        target, problems = self.spec.encode(y, self.classes, self.target_outputs, name, lines)
        if problems:
            raise input_error(problems)
        return target

    def evaluate(self, x, y, batch_size: int | None = None, x_name: str = "x",
                 y_name: str = "y", lines: np.ndarray | None = None) -> dict[str, float | None]:
        """The loss and the trainer's metrics on series x with raw labels y."""
        if self.steps:
            raise InputError(f"evaluate: {self.path} labels every time step; score it on whole labelled recordings "
                             "with evaluate_recordings(recordings, labels), or `pipeline evaluate`")
        target = self.encode(y, y_name, lines)
        if len(target) != len(x):
            raise InputError(f"{y_name}: has {plural(len(target), 'label')} for {len(x)} series; pass one per series")
        raw = self.predict(x, batch_size, x_name, lines)[self.outputs[0]]
        loss, _ = self.loss(raw, target)
        metrics = {"loss": loss, **self.spec.compute_metrics(raw, target)}
        w = self.window
        if w is not None and w.horizon:  # beside the naive forecasts of the same windows (runtime.forecast)
            history = np.asarray(x, dtype=np.float64)[:, w.targets]
            metrics["forecast"] = forecast.report(history, raw, target, w.horizon, w.season or 1, self.quantiles)
        return metrics

    def forecast(self, history, steps: int | None = None) -> np.ndarray:
        """The forecast of the next `steps` samples (default: the horizon) after the last window of one
        recording's `history` (C, T) (or (T,)), as (targets, steps) or (targets, steps, quantiles). Past the
        horizon, when every channel is a target, it rolls out: the median forecast is appended to the history
        and the model forecasts again from the window that ends with it (runtime.forecast.rollout), so errors
        compound with each horizon; with input-only channels, whose future the model does not forecast, only
        `steps` <= horizon is possible."""
        w = self.window
        if w is None or not w.horizon:
            raise InputError(f"forecast: {self.path} is a --task {self.task} bundle; forecasting needs a bundle "
                             "trained with --task forecast")
        x = as_array(history, "history")
        if x.ndim == 1 and self.series.channels == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != self.series.channels or x.shape[1] < w.length:
            raise InputError(f"history: has shape {x.shape}; pass ({self.series.channels}, T) samples with T at least "
                             f"the window of {w.length}")
        steps = w.horizon if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"steps must be a whole number of at least 1; got {steps!r}")
        if steps > w.horizon and len(w.targets) != self.series.channels:
            raise InputError(f"steps {steps} is past the horizon of {w.horizon}: rolling out feeds the forecast back "
                             f"as the next input, which needs every channel to be a target (this bundle forecasts "
                             f"{len(w.targets)} of {self.series.channels}); ask for at most {w.horizon}")
        window = x[:, x.shape[1] - w.length:]
        run = lambda batch: self.predict(batch)[self.outputs[0]]  # noqa: E731
        q = max(len(self.quantiles), 1)
        out = forecast.rollout(run, window, int(steps), w.horizon, list(w.targets), q)  # (T, steps, Q)
        return out if self.quantiles else out[:, :, 0]

    def class_names(self, index: np.ndarray) -> np.ndarray:
        """Class names for class indices (multiclass labels, or binary 0/1 decisions)."""
        return np.asarray(self.classes, dtype=object)[np.asarray(index, dtype=np.int64)]


def model_file(manifest: Manifest, path: Path, precision: str) -> tuple[str, str]:
    """(file name, precision) of the model graph that `precision` picks in the bundle at `path`."""
    if precision not in MODEL_PRECISIONS:
        raise BundleError(f"precision '{precision}' is not valid; choose one of {', '.join(MODEL_PRECISIONS)}")
    if precision == "int8" and not manifest.has(MODEL_INT8):
        raise BundleError(f"{path}: has no {MODEL_INT8}; re-export with `pipeline export RUN_DIR --quantize int8`, "
                          "or run it in fp32")
    if precision == "int8" or (precision == "auto" and manifest.has(MODEL_INT8)):
        return MODEL_INT8, "int8"
    return MODEL_ONNX, "fp32"


def signed_manifest(path: Path, public_key: str | os.PathLike | None = None) -> Manifest:
    """The bundle's manifest, read after its signature verified with `public_key` (default $PIPELINE_PUBLIC_KEY;
    no check when neither is set)."""
    key = trusted_key(public_key)
    if key is not None:
        if not path.is_dir():
            raise BundleError(f"{path}: not a folder; pass the bundle folder written by pipeline export")
        check_signature(path, key, sha256=file_sha256)
    return Manifest.read(path)


def load(bundle_dir: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None,
         check: bool = True, precision: str = "fp32", public_key: str | os.PathLike | None = None) -> Bundle:
    """Open a bundle: check its format version and every file's sha256, then start onnxruntime sessions.
    `precision` picks the model graph: fp32 (model.onnx), int8 (model.int8.onnx, from export --quantize int8),
    or auto (int8 when the bundle has it). `public_key` (PEM; default $PIPELINE_PUBLIC_KEY): the bundle's
    signature (model.sig) must verify with it and cover exactly its files before anything else is read."""
    path = Path(bundle_dir)
    manifest = signed_manifest(path, public_key)
    name, precision = model_file(manifest, path, precision)
    if check:
        check_files(path, manifest)
    if not manifest.has(MODEL_ONNX):
        raise BundleError(f"{path}: has no {MODEL_ONNX} (its --format left out onnx); the runtime runs ONNX "
                          "graphs, so re-export with --format onnx, all, or a list with onnx such as onnx,aoti")
    options = session_options(threads)
    model = _open(path / name, options, providers)
    _check_io(model, path / name, [(MODEL_INPUT, manifest.input.dtype)], manifest.outputs)
    loss = None
    if manifest.has(LOSS_ONNX):
        loss = _open(path / LOSS_ONNX, options, providers)
        spec = manifest.loss
        _check_io(loss, path / LOSS_ONNX, [(i.name, i.dtype) for i in spec.inputs], spec.outputs)
    return Bundle(path, manifest, model, loss, precision, name)
