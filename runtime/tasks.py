"""The closed registry of tasks, with their behaviour (numpy only, so the runtime reads it without torch).

A task is defined here once and read by everyone: the CLI's choices, label validation and encoding
(training and the runtime share `Task.encode`), the graph's named outputs and how they follow from the
raw scores, the decision rule, the metrics, and the columns `predict` writes. Adding a task means adding
one `Task` to `TASKS` (and, in `pipeline/losses.py`, its losses' implementations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime import forecast as fc
from runtime import metrics as m
from runtime.segments import step_rows
from runtime.inputs import as_array, not_numbers_text, number_text, parse_numbers, rows_text

MAX_CLASSES_LISTED = 10


@dataclass(frozen=True)
class LossSpec:
    """One built-in loss of a task: its name, the LossConfig fields (flags) that tune it, a summary."""

    name: str
    params: tuple[str, ...] = ()
    summary: str = ""


def _first(values: np.ndarray, rows: np.ndarray) -> str:
    """The first offending value as the user wrote it: 7 not 7.0, a row of several as [0, 2]."""
    v = values[rows][0]
    if np.ndim(v):
        return "[" + ", ".join(number_text(e) for e in np.asarray(v).tolist()) + "]"
    return number_text(v)


@dataclass(frozen=True)
class Task:
    """One task. `scores` says how the model's raw output (N, K) becomes the named outputs:
    'identity' (values), 'sigmoid' (probabilities per column), 'softmax' (one class), 'exp' (rates),
    'forecast' (the flat forecast and its (N, T, H[, Q]) shape; runtime.forecast)."""

    name: str
    losses: tuple[LossSpec, ...]  # the first is the default
    outputs: tuple[str, ...]  # the graph's named outputs, raw scores first (the loss graph's `prediction`)
    scores: str
    target_rule: str  # what a label must be, said in error messages
    target_meaning: str  # what the loss graph's target holds, said in the manifest
    metric_fn: Callable[[np.ndarray, np.ndarray], dict]  # (raw scores float64, encoded targets) -> metrics
    metrics: tuple[str, ...]  # its keys; the first is shown in the progress bar and history.csv
    has_classes: bool = False  # labels are class names/indices (binary, multiclass): stratified splits
    decision: str | None = None  # how raw scores become labels: 'argmax' or 'threshold' (score > 0)
    main_output: str = ""  # what a .npy of predictions holds
    values: str | None = None  # a rule on each target value: '0/1' or 'count' (non-negative integers)
    # the metric a cheaper graph (INT8) is held to: an error (lower is better; its drop is a relative
    # increase in percent) or a score in 0..1 (its drop is in points)
    main_metric: str = "accuracy"
    main_metric_is_error: bool = False
    # the share of a small training set (fewer than pipeline.settings.config.AUTO_VAL_MIN_SERIES series) held out to
    # choose the checkpoint: none for classes (Wang et al. select by training loss, which works there); for
    # amounts, selecting by training loss keeps the most overfit epoch, so 30% is held out
    small_set_val_split: float = 0.0

    # --- names ---------------------------------------------------------------------------------------
    @property
    def default_loss(self) -> str:
        return self.losses[0].name

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.losses)

    def loss(self, name: str) -> LossSpec:
        for spec in self.losses:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def target_dtype(self) -> str:
        return "int64" if self.scores == "softmax" else "float32"

    def target_shape(self, k: int, steps: bool = False) -> list:
        """The loss graph's target shape; `steps` (--window-label each): a target per time step."""
        if steps:
            return ["batch", "length"] if self.scores == "softmax" else ["batch", k, "length"]
        return ["batch"] if self.scores == "softmax" else ["batch", k]

    @property
    def labels_steps(self) -> bool:
        """Whether the task can label every time step (--window-label each): the class tasks."""
        return self.scores in ("softmax", "sigmoid")

    # --- labels -> targets: ONE implementation for training and the runtime ---------------------------
    def encode(self, y, classes, n_outputs: int, where: str,
               lines: np.ndarray | None = None) -> tuple[np.ndarray | None, list[str]]:
        """Raw labels (class names or numbers; numbers as text from a text file) as loss-graph targets, or
        None and every problem found. `where` names the labels ("train.csv: column 'y'"); `lines` (the
        1-based file line of each series) makes messages name lines instead of 0-based rows."""
        y = np.asarray(y)
        if y.ndim == 0:
            return None, [f"{where}: is a single value; pass one label per series"]
        if self.has_classes:
            return self._encode_classes(y, list(classes or []), where, lines)
        return self._encode_numbers(y, n_outputs, where, lines)

    def _encode_classes(self, y: np.ndarray, classes: list[str], where: str, lines) -> tuple:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            hint = " (for several labels per series use --task multilabel)" if self.scores == "softmax" else ""
            return None, [f"{where}: has shape {y.shape}; {self.name} labels are one class per series{hint}"]
        if y.dtype.kind in "biuf":
            finite = np.isfinite(y)
            if not finite.all():
                return None, [f"{where} {rows_text(np.flatnonzero(~finite), lines)}: label is NaN or Inf; every "
                              "series needs a label (drop or fill those rows)"]
            fractional = y != np.round(y)
            if self.scores == "softmax" and fractional.any():  # numbers name class indices
                return None, [f"{where} {rows_text(np.flatnonzero(fractional), lines)}: {_first(y, fractional)} is "
                              f"not an integer; {self.name} labels are {self.target_rule}"]
        texts = [number_text(v).strip() for v in y.tolist()]  # 7.0 -> '7', ' a' -> 'a'
        index = {c: i for i, c in enumerate(classes)}
        unknown = np.array([t not in index for t in texts], dtype=bool)
        if unknown.any():
            rows = np.flatnonzero(unknown)
            shown = ", ".join(classes[:MAX_CLASSES_LISTED]) + (", ..." if len(classes) > MAX_CLASSES_LISTED else "")
            return None, [f"{where} {rows_text(rows, lines)}: class '{texts[rows[0]]}' is not one of the classes "
                          f"of the training data ({shown})"]
        idx = np.array([index[t] for t in texts], dtype=np.int64)
        return (idx if self.scores == "softmax" else idx.astype(np.float32)[:, None]), []

    def _encode_numbers(self, y: np.ndarray, n_outputs: int, where: str, lines) -> tuple:
        rule = f"{self.name} labels are {self.target_rule}"
        if y.dtype.kind in "USO":
            numbers, bad = parse_numbers(y)
            if bad.any():
                rows = np.flatnonzero(bad.reshape(len(y), -1).any(axis=1))
                return None, [f"{where} {rows_text(rows, lines)}: {not_numbers_text(y, bad)}; {rule}"]
            y = numbers
        if y.dtype.kind not in "biuf":
            return None, [f"{where}: has dtype {y.dtype}; {rule}"]
        y = y.astype(np.float64)
        bad = ~np.isfinite(y).reshape(len(y), -1).all(axis=1)
        if bad.any():
            return None, [f"{where} {rows_text(np.flatnonzero(bad), lines)}: label is NaN or Inf; every series "
                          "needs a label (drop or fill those rows)"]
        if self.values == "0/1" and y.ndim != 2:
            return None, [f"{where}: has shape {y.shape}; {rule} (for one label use --task binary)"]
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != n_outputs:
            return None, [f"{where}: has {y2.shape[1]} target columns but the training data has {n_outputs}; "
                          "every file needs the same targets"]
        problems = [f"{where} {rows_text(np.flatnonzero(rows), lines)}: {_first(y, rows)} {why}; {rule}{hint}"
                    for rows, why, hint in self._value_problems(y2)]
        return (None if problems else y2.astype(np.float32)), problems

    def _value_problems(self, y2: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
        """(rows, what is wrong, a hint) for each value rule of the task that some rows break."""
        rules = []
        if self.values == "0/1":
            rules.append(((y2 != 0) & (y2 != 1), "is not 0 or 1", ""))
        if self.values == "count":
            rules.append((y2 < 0, "is negative", ""))
            rules.append((y2 != np.round(y2), "is fractional", " (use --task regression for amounts)"))
        return [(cells.any(axis=1), why, hint) for cells, why, hint in rules if cells.any()]

    def check_encoded(self, target, n_outputs: int, name: str = "target",
                      steps: bool = False) -> tuple[np.ndarray | None, list[str]]:
        """Targets already encoded (what `encode` returns), checked: dtype, shape and the values allowed; `steps`:
        a target per time step, (N, W) class indices or (N, K, W) 0/1 (runtime.segments)."""
        target = as_array(target, name)
        if steps:
            want = 2 if self.scores == "softmax" else 3
            if target.ndim != want or (want == 3 and target.shape[1] != n_outputs):
                layout = "(N, W) class indices" if want == 2 else f"(N, {n_outputs}, W)"
                return None, [f"{name}: has shape {target.shape}; per-step {self.name} targets are {layout}"]
            rows, problems = self.check_encoded(step_rows(target), n_outputs, name)
            if problems:
                return None, [p.replace(f"{name} row", f"{name} step row") for p in problems]
            return (rows.reshape(target.shape) if want == 2 else target.astype(np.float32)), []
        if self.scores == "softmax":
            if target.ndim != 1:
                return None, [f"{name}: has shape {target.shape}; {self.name} targets are class indices (N,)"]
            bad = (target != np.round(target)) | (target < 0) | (target >= n_outputs)
            if bad.any():
                return None, [f"{name} {rows_text(np.flatnonzero(bad))}: {number_text(target[bad][0])} is not a "
                              f"class index 0..{n_outputs - 1}"]
            return target.astype(np.int64), []
        if target.ndim == 1 and n_outputs == 1:
            target = target[:, None]
        if target.ndim != 2 or target.shape[1] != n_outputs:
            return None, [f"{name}: has shape {target.shape}; {self.name} targets are (N, {n_outputs})"
                          + (" or (N,)" if n_outputs == 1 else "")]
        target = target.astype(np.float32)
        bad = ~np.isfinite(target).all(axis=1)
        if bad.any():
            return None, [f"{name} {rows_text(np.flatnonzero(bad))}: NaN or Inf; every series needs a target"]
        problems = [f"{name} {rows_text(np.flatnonzero(rows))}: {_first(target, rows)} {why}"
                    for rows, why, _ in self._value_problems(target)]
        return (None if problems else target), problems

    # --- outputs -> what people read ------------------------------------------------------------------
    def prediction_columns(self, outputs: dict[str, np.ndarray], classes: list[str] | None,
                           n_outputs: int, quantiles: tuple[float, ...] = ()) -> dict[str, np.ndarray]:
        """One column per value `predict` writes, one row per series: decisions by class name, then scores
        (a forecast: `classes` names its targets, a column per target, step and quantile)."""
        if self.scores == "forecast":
            return _forecast_columns(outputs["forecast"], classes, quantiles)
        names = list(classes) if classes else [str(j) for j in range(n_outputs)]
        raw, named = outputs[self.outputs[0]], outputs[self.main_output]
        as_names = np.asarray(names, dtype=object)
        columns: dict[str, np.ndarray] = {}
        if self.scores == "softmax":
            columns["label"] = as_names[np.asarray(outputs["label"], dtype=np.int64)]
            columns.update({f"probability_{c}": named[:, j] for j, c in enumerate(names)})
        elif self.scores == "sigmoid" and self.has_classes:
            columns["label"] = as_names[(raw[:, 0] > 0).astype(np.int64)]
            columns[f"probability_{names[1]}"] = named[:, 0]
        elif self.scores == "sigmoid":
            columns.update({f"label_{c}": (raw[:, j] > 0).astype(np.int64) for j, c in enumerate(names)})
            columns.update({f"probability_{c}": named[:, j] for j, c in enumerate(names)})
        else:
            key = self.main_output
            columns.update({key if named.shape[1] == 1 else f"{key}_{j}": named[:, j] for j in range(named.shape[1])})
        return columns

    def step_columns(self, found: dict[str, np.ndarray], classes: list[str] | None,
                     n_outputs: int) -> dict[str, np.ndarray]:
        """One column per value `predict` writes for one sample of a per-step model (runtime.segments.stitched's
        probabilities and label): the label by class name (label_<name> 0/1 per label for multilabel), then the
        stitched probabilities."""
        names = list(classes) if classes else [str(j) for j in range(n_outputs)]
        p, label = found["probabilities"], found["label"]
        if self.scores == "softmax":
            return {"label": np.asarray(names, dtype=object)[label],
                    **{f"probability_{c}": p[:, j] for j, c in enumerate(names)}}
        if self.has_classes:  # binary: one probability, of the second class
            return {"label": np.asarray(names, dtype=object)[label[:, 0]], f"probability_{names[1]}": p[:, 0]}
        return {**{f"label_{c}": label[:, j] for j, c in enumerate(names)},
                **{f"probability_{c}": p[:, j] for j, c in enumerate(names)}}

    def compute_metrics(self, raw_output: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
        """The task's metrics from the model's raw scores (N, K) and the encoded targets; per-step scores
        (N, K, W) are scored step by step (every step a row)."""
        raw_output = np.asarray(raw_output, dtype=np.float64)
        if raw_output.ndim == 3:
            raw_output, target = step_rows(raw_output), step_rows(target)
        return self.metric_fn(raw_output, np.asarray(target))


def _forecast_columns(forecast: np.ndarray, targets: list[str] | None, quantiles) -> dict[str, np.ndarray]:
    """'h1'..'hH' (one target) or '<target>_h1'.. per target, each with '_q<quantile>' for quantile forecasts."""
    n, t, h = forecast.shape[:3]
    names = list(targets) if targets else [str(j) for j in range(t)]
    columns = {}
    for j in range(t):
        for step in range(h):
            stem = f"h{step + 1}" if t == 1 else f"{names[j]}_h{step + 1}"
            if forecast.ndim == 3:
                columns[stem] = forecast[:, j, step]
            else:
                columns.update({f"{stem}_q{q:g}": forecast[:, j, step, i] for i, q in enumerate(quantiles)})
    return columns


TASKS: dict[str, Task] = {
    "regression": Task(
        name="regression",
        losses=(LossSpec("mse", summary="mean squared error"),
                LossSpec("l1", summary="mean absolute error"),
                LossSpec("huber", ("huber_delta",), summary="Huber loss, quadratic below --huber-delta"),
                LossSpec("smooth_l1", ("beta",), summary="Smooth-L1 loss, quadratic below --beta")),
        outputs=("prediction",), scores="identity", target_rule="real numbers, one column per target",
        target_meaning="values", metric_fn=m.regression_metrics, metrics=("mae", "rmse", "r2"),
        main_output="prediction", main_metric="rmse", main_metric_is_error=True, small_set_val_split=0.3),
    "binary": Task(
        name="binary",
        losses=(LossSpec("bce_with_logits", ("pos_weight",), summary="sigmoid + binary cross-entropy, fused"),
                LossSpec("bce", summary="binary cross-entropy on sigmoid(logit)"),
                LossSpec("hinge", summary="mean max(0, 1 - y*f) with labels 0/1 mapped to -1/+1")),
        outputs=("logit", "probability"), scores="sigmoid", target_rule="two classes (0 and 1, or two names)",
        target_meaning="0 or 1", metric_fn=m.binary_metrics, metrics=("accuracy", "f1", "roc_auc"),
        has_classes=True, decision="threshold", main_output="probability", values="0/1"),
    "multiclass": Task(
        name="multiclass",
        losses=(LossSpec("cross_entropy", ("class_weights", "label_smoothing"),
                         summary="softmax cross-entropy on logits"),
                LossSpec("multi_margin", ("class_weights",), summary="multi-class hinge loss"),
                LossSpec("nll", ("class_weights",), summary="negative log-likelihood of log_softmax(logits)")),
        outputs=("logits", "probabilities", "label"), scores="softmax",
        target_rule="integer class indices 0..C-1 or class names", target_meaning="class index",
        metric_fn=m.multiclass_metrics, metrics=("accuracy", "macro_f1"), has_classes=True, decision="argmax",
        main_output="probabilities"),
    "multilabel": Task(
        name="multilabel",
        losses=(LossSpec("bce_with_logits", ("pos_weight",), summary="per-label sigmoid cross-entropy"),
                LossSpec("multilabel_soft_margin", summary="multi-label soft margin loss")),
        outputs=("logits", "probabilities"), scores="sigmoid", target_rule="a 0/1 matrix with one column per label",
        target_meaning="0/1 per label", metric_fn=m.multilabel_metrics, metrics=("micro_f1", "macro_f1"),
        decision="threshold", main_output="probabilities", values="0/1", main_metric="micro_f1"),
    "count": Task(
        name="count",
        losses=(LossSpec("poisson_nll", summary="Poisson negative log-likelihood of the log-rate"),),
        outputs=("log_rate", "rate"), scores="exp", target_rule="non-negative integers", target_meaning="counts",
        metric_fn=m.count_metrics, metrics=("mae", "poisson_deviance"), main_output="rate", values="count",
        main_metric="mae", main_metric_is_error=True, small_set_val_split=0.3),
    "forecast": Task(
        name="forecast",
        losses=(LossSpec("mse", summary="mean squared error of the point forecast"),
                LossSpec("mae", summary="mean absolute error of the point forecast"),
                LossSpec("huber", ("huber_delta",), summary="Huber loss, quadratic below --huber-delta"),
                LossSpec("smooth_l1", ("beta",), summary="Smooth-L1 loss, quadratic below --beta"),
                LossSpec("quantile", ("quantiles",), summary="pinball loss of each of --quantiles (non-crossing)")),
        outputs=("prediction", "forecast"), scores="forecast",
        target_rule="the next --horizon samples of the target channels", target_meaning="future values",
        metric_fn=fc.forecast_metrics, metrics=("mae", "rmse", "smape"), main_output="forecast",
        main_metric="mae", main_metric_is_error=True, small_set_val_split=0.3),
}

TASK_NAMES = tuple(TASKS)
ALL_LOSS_NAMES = tuple(dict.fromkeys(n for t in TASKS.values() for n in t.loss_names))


def is_custom_loss(name: str) -> bool:
    """The one test of a loss name: a user loss is written 'package.module:ClassName'."""
    return ":" in name


def compute_metrics(task: str, raw_output: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    """Metrics of `task` from the model's raw scores (N, K) and the encoded targets."""
    return TASKS[task].compute_metrics(raw_output, target)
