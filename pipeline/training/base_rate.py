"""Where a model's output starts: the training targets' base rate, one rule per kind of score.

Every model ends in `models.OutputScale`: raw score = network output * scale + shift, with `scale` and
`shift` fixed buffers fitted here from the training targets, so a fresh network (whose own output is near 0)
already predicts the constant baseline, whatever the model:

- identity (regression): the targets standardised per column; shift = mean, scale = std. The network learns
  z-scores and the graph answers in the user's units.
- sigmoid (binary, multilabel): shift = the log-odds of each label's training prevalence (times its
  --pos-weight, whose weighted loss is lowest there).
- softmax (multiclass): shift = the log of the class frequencies (weighted by --class-weights, mixed with
  --label-smoothing), centred.
- exp (count): shift = the log of the mean count per column.

Regression also has a loss scale: the training loss is divided by the loss of the mean predictor on the
training targets, a constant, so gradients have the size they would have on standardised targets and the
same --lr works at any target scale with any optimizer. Every loss value reported stays the user's loss in
the user's units. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from runtime.tasks import TASKS

# a column whose targets all but agree (std below this fraction of its level) is not rescaled
CONSTANT_RELATIVE_STD = 1e-7
MIN_PROBABILITY = 1e-6
OUTPUT_BASE = "output_base"  # its key in config.json, checkpoints and metrics.json


@dataclass(frozen=True)
class OutputBase:
    """The fitted output layer of a run (saved in config.json, checkpoints, metrics.json and the manifest)."""

    rule: str
    scale: list[float]
    shift: list[float]
    loss_scale: float = 1.0  # the training loss is divided by it (regression); reported losses are not

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "OutputBase | None":
        return None if d is None else cls(d["rule"], list(d["scale"]), list(d["shift"]), float(d["loss_scale"]))


def _smoothed(positives: np.ndarray, n: int) -> np.ndarray:
    """A proportion never exactly 0 or 1 (half a series either way), so its log-odds stay finite."""
    return (positives + 0.5) / (n + 1.0)


def _standardised(targets: np.ndarray, params: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    t = targets.reshape(len(targets), k)
    mean, std = t.mean(axis=0), t.std(axis=0)
    usable = std > CONSTANT_RELATIVE_STD * np.maximum(1.0, np.abs(mean))
    return np.where(usable, std, 1.0), mean


def _log_odds(targets: np.ndarray, params: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    p = _smoothed(targets.reshape(len(targets), k).sum(axis=0), len(targets))
    pos_weight = np.asarray(params.get("pos_weight", 1.0), dtype=np.float64)  # the weighted loss is lowest here
    return np.ones(k), np.log(p) - np.log1p(-p) + np.log(pos_weight)


def _log_frequencies(targets: np.ndarray, params: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(targets.astype(np.int64).reshape(-1), minlength=k).astype(np.float64)
    q = _smoothed(counts, len(targets)) * np.asarray(params.get("class_weights", np.ones(k)), dtype=np.float64)
    smoothing = float(params.get("label_smoothing", 0.0))
    q = (1.0 - smoothing) * q / q.sum() + smoothing / k
    shift = np.log(np.maximum(q, MIN_PROBABILITY))  # a class weighted 0 starts unlikely, not at -inf
    return np.ones(k), shift - shift.mean()


def _log_mean(targets: np.ndarray, params: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    mean = targets.reshape(len(targets), k).mean(axis=0)
    return np.ones(k), np.log(np.maximum(mean, 0.5 / len(targets)))  # none counted: half a count over the set


@dataclass(frozen=True)
class Rule:
    """How one kind of score starts (the module docstring says each): its fit (targets, loss params, outputs)
    -> (scale, shift)."""

    name: str  # recorded with the run and in the manifest
    fit: Callable[[np.ndarray, dict, int], tuple[np.ndarray, np.ndarray]]
    scales_loss: bool = False  # the loss is in the targets' units: divided by the mean predictor's loss


# one rule per Task.scores
RULES: dict[str, Rule] = {"identity": Rule("standardise", _standardised, scales_loss=True),
                          "sigmoid": Rule("log-odds", _log_odds),
                          "softmax": Rule("log-frequency", _log_frequencies),
                          "exp": Rule("log-mean", _log_mean)}


def rule(task: str) -> Rule:
    return RULES[TASKS[task].scores]


def fit_output_base(task: str, targets: np.ndarray, n_outputs: int, loss_params: dict) -> OutputBase:
    """The output layer's scale and shift from the encoded training targets (loss_scale is set apart)."""
    r = rule(task)
    scale, shift = r.fit(np.asarray(targets, dtype=np.float64), loss_params, n_outputs)
    return OutputBase(r.name, [float(v) for v in scale], [float(v) for v in shift])
