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

Regression also balances its loss: with a built-in loss, training divides each target's loss by that
target's own mean-predictor loss on the training targets (target_loss_scales), so gradients have the size
they would have on standardised targets, the same --lr works at any target scale with any optimizer, and
several targets on scales a billion apart (one near 1e6, one near 1e-3) each weigh alike; with MSE it is the
MSE of the standardised targets. A custom loss (only its total is known) is divided by the mean predictor's
total loss (loss_scale), as every regression run recorded before target_loss_scales existed was. Every loss
value reported, and the exported loss graph, stay the user's loss in the user's units. numpy only.
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
    loss_scale: float = 1.0  # the mean predictor's loss (regression), else 1; reported losses are not divided
    # regression with a built-in loss: each target's mean-predictor loss, its loss in training is divided by;
    # None: the whole training loss is divided by loss_scale (a custom loss, and runs recorded before)
    target_loss_scales: list[float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.target_loss_scales is None:
            del d["target_loss_scales"]  # as runs recorded before it existed
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "OutputBase | None":
        if d is None:
            return None
        scales = d.get("target_loss_scales")
        return cls(d["rule"], list(d["scale"]), list(d["shift"]), float(d["loss_scale"]),
                   None if scales is None else [float(v) for v in scales])


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


def _identity(targets: np.ndarray, params: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    k *= len(params.get("quantiles", [0.5]))  # a quantile forecast has Q outputs per target value
    return np.ones(k), np.zeros(k)


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
                          "exp": Rule("log-mean", _log_mean),
                          # forecasts start at the window's own level: the network answers in each window's
                          # normalised units (models.build.Reversible), so its output layer starts as the identity
                          "forecast": Rule("window-level", _identity)}


def rule(task: str) -> Rule:
    return RULES[TASKS[task].scores]


def fit_output_base(task: str, targets: np.ndarray, n_outputs: int, loss_params: dict) -> OutputBase:
    """The output layer's scale and shift from the encoded training targets (loss_scale is set apart)."""
    r = rule(task)
    scale, shift = r.fit(np.asarray(targets, dtype=np.float64), loss_params, n_outputs)
    return OutputBase(r.name, [float(v) for v in scale], [float(v) for v in shift])
