"""The closed registry of tasks and their losses (no torch here, so the CLI can list choices).

One table drives the CLI choices, label validation, the loss factory, metrics and (later) the named
outputs of exported graphs. Losses always receive the model's raw scores; the `activation` column
says what the loss applies to those scores itself (the model never ends in Softmax or Sigmoid).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossSpec:
    """One built-in loss: its name, the flags that tune it and what it applies to raw scores."""

    name: str
    params: tuple[str, ...] = ()  # LossConfig fields this loss reads
    activation: str | None = None  # applied to raw scores before the torch loss
    summary: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """One task: target rule, built-in losses (first is the default), outputs and metrics."""

    name: str
    losses: tuple[LossSpec, ...]
    target_dtype: str  # "float32" or "int64"
    target_rule: str  # said in error messages
    outputs: tuple[str, ...]  # named graph outputs, raw scores first
    metrics: tuple[str, ...]  # first is the one shown in the progress bar and history

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


TASKS: dict[str, TaskSpec] = {
    "regression": TaskSpec(
        name="regression",
        losses=(
            LossSpec("mse", summary="mean squared error"),
            LossSpec("l1", summary="mean absolute error"),
            LossSpec("huber", ("huber_delta",), summary="Huber loss, quadratic below --huber-delta"),
            LossSpec("smooth_l1", ("beta",), summary="Smooth-L1 loss, quadratic below --beta"),
        ),
        target_dtype="float32",
        target_rule="real numbers, one column per target",
        outputs=("prediction",),
        metrics=("mae", "rmse", "r2"),
    ),
    "binary": TaskSpec(
        name="binary",
        losses=(
            LossSpec("bce_with_logits", ("pos_weight",), summary="sigmoid + binary cross-entropy, fused"),
            LossSpec("bce", activation="sigmoid", summary="binary cross-entropy on sigmoid(logit)"),
            LossSpec("hinge", summary="mean max(0, 1 - y*f) with labels 0/1 mapped to -1/+1"),
        ),
        target_dtype="float32",
        target_rule="0 or 1",
        outputs=("logit", "probability"),
        metrics=("accuracy", "f1", "roc_auc"),
    ),
    "multiclass": TaskSpec(
        name="multiclass",
        losses=(
            LossSpec("cross_entropy", ("class_weights", "label_smoothing"),
                     summary="softmax cross-entropy on logits"),
            LossSpec("multi_margin", ("class_weights",), summary="multi-class hinge loss"),
            LossSpec("nll", ("class_weights",), activation="log_softmax",
                     summary="negative log-likelihood of log_softmax(logits)"),
        ),
        target_dtype="int64",
        target_rule="integer class indices 0..C-1 or string class names",
        outputs=("logits", "probabilities", "label"),
        metrics=("accuracy", "macro_f1"),
    ),
    "multilabel": TaskSpec(
        name="multilabel",
        losses=(
            LossSpec("bce_with_logits", ("pos_weight",), summary="per-label sigmoid cross-entropy"),
            LossSpec("multilabel_soft_margin", summary="multi-label soft margin loss"),
        ),
        target_dtype="float32",
        target_rule="a 0/1 matrix with one column per label",
        outputs=("logits", "probabilities"),
        metrics=("micro_f1", "macro_f1"),
    ),
    "count": TaskSpec(
        name="count",
        losses=(LossSpec("poisson_nll", summary="Poisson negative log-likelihood of the log-rate"),),
        target_dtype="float32",
        target_rule="non-negative integers",
        outputs=("log_rate", "rate"),
        metrics=("mae", "poisson_deviance"),
    ),
}

TASK_NAMES = tuple(TASKS)
ALL_LOSS_NAMES = tuple(dict.fromkeys(n for t in TASKS.values() for n in t.loss_names))

# Metrics where lower is better (used to pick what the progress bar calls "best").
LOWER_IS_BETTER = {"mae", "rmse", "poisson_deviance"}


def is_custom_loss(name: str) -> bool:
    """A user loss is written 'package.module:ClassName'."""
    return ":" in name


def resolve_loss_name(task: str, loss: str | None) -> str:
    """The loss to use for `task`: the default when None, else checked against the table."""
    spec = TASKS[task]
    if loss is None:
        return spec.default_loss
    if is_custom_loss(loss) or loss in spec.loss_names:
        return loss
    from pipeline.errors import PipelineError

    others = [t for t, s in TASKS.items() if loss in s.loss_names]
    hint = f" ('{loss}' is a loss for --task {', '.join(others)})" if others else ""
    raise PipelineError(
        f"--loss '{loss}' does not fit --task {task}{hint}; choose one of "
        f"{', '.join(spec.loss_names)}, or a custom loss as package.module:ClassName"
    )
