"""Loss modules: forward(prediction, target) -> (loss, per_sample_loss).

`prediction` is always the model's raw output (N, K): logits or log-rates. A loss that needs
probabilities applies the activation itself, so the model never ends in Sigmoid or Softmax.
The batch `loss` uses the same reduction as the torch.nn reference; `per_sample_loss` is (N,).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.settings.config import DEFAULT_QUANTILES, LossConfig
from pipeline.data.prepare import LabelEncoding
from pipeline.errors import PipelineError
from runtime.inputs import plural
from runtime.tasks import TASKS, is_custom_loss


class BuiltinLoss(nn.Module):
    """A built-in loss with its exact parameters as buffers (scriptable). Each subclass is one registry
    entry (LOSSES) and writes out its elementwise loss in the ops whose ONNX form is stable at any score."""

    name = ""
    weighted_mean = False  # torch's class-weighted 'mean' divides by the summed weights of the targets

    def __init__(self, class_weights: Tensor | None = None, pos_weight: Tensor | None = None,
                 huber_delta: float = 1.0, beta: float = 1.0, label_smoothing: float = 0.0,
                 quantiles: Tensor | None = None):
        super().__init__()
        self.has_class_weights = class_weights is not None
        self.has_pos_weight = pos_weight is not None
        self.divide_by_weights = self.weighted_mean and self.has_class_weights
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(0))
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(0))
        self.huber_delta = float(huber_delta)
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def step_elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The elementwise loss of per-step scores and 0/1 targets, both (N, K, W) (PerStepLoss); its mean is the
        loss of the N * W rows of one step each. Flattening to rows instead would have torch.export fix the batch
        or the length at 1."""
        return self._elementwise(prediction, target)

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        prediction = prediction.float()  # losses run in fp32 under autocast
        elementwise = self._elementwise(prediction, target)
        per_sample_loss = elementwise.reshape(elementwise.shape[0], -1).mean(dim=1)  # (N,)
        if self.divide_by_weights:
            loss = per_sample_loss.sum() / self.class_weights[target].sum()
        else:
            loss = per_sample_loss.mean()
        return loss, per_sample_loss


class MSELoss(BuiltinLoss):
    name = "mse"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target, reduction="none")


class L1Loss(BuiltinLoss):
    name = "l1"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(prediction, target, reduction="none")


class MAELoss(L1Loss):
    """--task forecast's name for the mean absolute error."""

    name = "mae"


class QuantileLoss(BuiltinLoss):
    """Pinball loss of a quantile forecast: prediction (N, T * H * Q), quantiles innermost (runtime.forecast),
    against the target (N, T * H): max(q * e, (q - 1) * e) with e = target - forecast, mean over quantiles."""

    name = "quantile"

    def __init__(self, quantiles: Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("quantiles", quantiles if quantiles is not None else torch.tensor([0.5]))

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        q = self.quantiles.shape[0]
        forecast = prediction.reshape(prediction.shape[0], -1, q)  # (N, T * H, Q)
        error = target.unsqueeze(2) - forecast
        return torch.maximum(self.quantiles * error, (self.quantiles - 1.0) * error).mean(dim=2)  # (N, T * H)


class HuberLoss(BuiltinLoss):
    name = "huber"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(prediction, target, reduction="none", delta=self.huber_delta)


class SmoothL1Loss(BuiltinLoss):
    name = "smooth_l1"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(prediction, target, reduction="none", beta=self.beta)


class BCEWithLogitsLoss(BuiltinLoss):
    """Stable in ONNX through the exporter's log-sigmoid translation (export/exporters.py)."""

    name = "bce_with_logits"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        pos_weight = self.pos_weight if self.has_pos_weight else None
        return F.binary_cross_entropy_with_logits(prediction, target, reduction="none", pos_weight=pos_weight)

    def step_elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        pos_weight = self.pos_weight.unsqueeze(-1) if self.has_pos_weight else None  # (K, 1): per class, every step
        return F.binary_cross_entropy_with_logits(prediction, target, reduction="none", pos_weight=pos_weight)


class BCELoss(BuiltinLoss):
    """torch.nn.BCELoss of sigmoid(logit), with its clamp of each log at -100, taken from log-sigmoid.

    BCELoss on float32 sigmoid outputs jumps to the clamp once sigmoid rounds to 1 (|logit| > ~17),
    and where it jumps depends on each engine's sigmoid, so no exported graph could agree with it
    there. log-sigmoid keeps the exact value up to the same clamp: identical to BCELoss(sigmoid(x))
    wherever float32 sigmoid has not rounded to 0 or 1.
    """

    name = "bce"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        log_p = torch.clamp(F.logsigmoid(prediction), min=-100.0)  # log(sigmoid(x))
        log_not_p = torch.clamp(F.logsigmoid(-prediction), min=-100.0)  # log(1 - sigmoid(x))
        return -(target * log_p + (1.0 - target) * log_not_p)


class HingeLoss(BuiltinLoss):
    name = "hinge"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        signed = 2.0 * target - 1.0  # labels 0/1 -> -1/+1
        return torch.clamp(1.0 - signed * prediction, min=0.0)


class CrossEntropyLoss(BuiltinLoss):
    """torch's weighted, label-smoothed cross-entropy (reduction none), written out.

    Same numbers as F.cross_entropy, but in plain ops: torch's own ONNX export of
    weight + label_smoothing disagrees with eager by about 0.04.
    """

    name = "cross_entropy"
    weighted_mean = True

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        log_p = torch.log_softmax(prediction, dim=1)  # (N, C)
        if self.has_class_weights:
            weight = self.class_weights
        else:
            weight = torch.ones(prediction.shape[1], dtype=prediction.dtype, device=prediction.device)
        nll = -log_p.gather(1, target.unsqueeze(1)).squeeze(1) * weight[target]  # (N,)
        if self.label_smoothing == 0.0:
            return nll
        smooth = -(log_p * weight.unsqueeze(0)).sum(dim=1) / prediction.shape[1]  # (N,)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth


class NLLLoss(CrossEntropyLoss):
    """nll of log_softmax(logits) is cross-entropy; the written-out form also exports to ONNX with weights."""

    name = "nll"


class MultiMarginLoss(BuiltinLoss):
    name = "multi_margin"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        weight = self.class_weights if self.has_class_weights else None
        return F.multi_margin_loss(prediction, target, weight=weight, reduction="none")


class MultilabelSoftMarginLoss(BuiltinLoss):
    name = "multilabel_soft_margin"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_soft_margin_loss(prediction, target, reduction="none")

    def step_elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        # a row's mean over labels of the sigmoid cross-entropy: the same (N, K, W) elementwise terms
        return F.binary_cross_entropy_with_logits(prediction, target, reduction="none")


class PoissonNLLLoss(BuiltinLoss):
    name = "poisson_nll"

    def _elementwise(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.poisson_nll_loss(prediction, target, log_input=True, full=False, reduction="none")


# The loss registry: each built-in name (runtime/tasks.py says which task offers it) -> its implementation.
LOSSES: dict[str, type[BuiltinLoss]] = {cls.name: cls for cls in (
    MSELoss, L1Loss, MAELoss, QuantileLoss, HuberLoss, SmoothL1Loss, BCEWithLogitsLoss, BCELoss, HingeLoss,
    CrossEntropyLoss, NLLLoss, MultiMarginLoss, MultilabelSoftMarginLoss, PoissonNLLLoss)}


class PerStepLoss(nn.Module):
    """--window-label each: a built-in loss at every time step. Scores (N, K, W) and targets (N, W) class indices or
    (N, K, W) 0/1 are read as N * W rows of one step each (runtime.segments.step_rows), so the batch loss is the
    loss's own reduction over every step (cross-entropy's class weights divide by the summed weights of every
    step's target, as torch's does on (N, C, W)); per_sample_loss is each window's mean over its steps."""

    def __init__(self, loss: BuiltinLoss):
        super().__init__()
        self.loss = loss

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if target.dim() == 3:  # 0/1 per class and step: elementwise losses, kept in the (N, K, W) layout
            elementwise = self.loss.step_elementwise(prediction.float(), target)
            return elementwise.mean(), elementwise.flatten(1).mean(dim=1)
        n, k, w = prediction.shape[0], prediction.shape[1], prediction.shape[2]
        rows = prediction.transpose(1, 2).reshape(n * w, k)  # (N * W, K); no -1, so torch.export keeps W free
        loss, per_step = self.loss(rows, target.reshape(n * w))
        return loss, per_step.reshape(n, w).mean(dim=1)


class CustomLoss(nn.Module):
    """A user loss returning a scalar; per-sample losses come from applying it to each sample."""

    def __init__(self, inner: nn.Module, spec: str):
        super().__init__()
        self.inner = inner
        self.spec = spec

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        prediction = prediction.float()
        loss = self.inner(prediction, target)
        with torch.no_grad():
            per_sample_loss = self.per_sample(prediction, target)
        return loss.reshape(()), per_sample_loss

    def per_sample(self, prediction: Tensor, target: Tensor) -> Tensor:
        def one(p: Tensor, t: Tensor) -> Tensor:
            return self.inner(p.unsqueeze(0), t.unsqueeze(0)).reshape(())

        try:
            return torch.func.vmap(one)(prediction, target)
        except Exception:  # data-dependent control flow in the user's loss: fall back to a loop
            return torch.stack([one(p, t) for p, t in zip(prediction, target)])


class TargetBalancedLoss(nn.Module):
    """What regression training minimises with a built-in loss: each target's elementwise loss divided by that
    target's own mean-predictor loss (`scales`, one per output), so targets on scales a billion apart weigh
    alike (with MSE this is exactly the MSE of the standardised targets, whose mean predictor scores 1). Returns
    (the balanced loss, the user's loss in the user's units), the second for reporting; its parameters
    (--huber-delta, --beta) keep the user's units."""

    def __init__(self, loss: BuiltinLoss, scales: Tensor):
        super().__init__()
        self.loss = loss
        self.register_buffer("scales", scales.float())

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        elementwise = self.loss._elementwise(prediction.float(), target)
        balanced = (elementwise.reshape(len(elementwise), -1) / self.scales).mean()
        return balanced, elementwise.detach().mean()


class WindowScaledLoss(nn.Module):
    """What forecasting trains on: the loss of the forecast and the target, both divided by the window's own spread
    of each target channel (models.build.Reversible), so windows of recordings at any level weigh alike (with MSE,
    the MSE in each window's normalised units). Returns (the scaled loss, the user's loss in the user's units),
    the second for reporting. `spread` is (N, T)."""

    def __init__(self, loss: nn.Module, targets: int):
        super().__init__()
        self.loss = loss
        self.targets = targets

    def forward(self, prediction: Tensor, target: Tensor, spread: Tensor) -> tuple[Tensor, Tensor]:
        n = prediction.shape[0]
        scale = spread.reshape(n, self.targets, 1)
        scaled = self.loss((prediction.reshape(n, self.targets, -1) / scale).reshape(n, -1),
                           (target.reshape(n, self.targets, -1) / scale).reshape(n, -1))[0]
        with torch.no_grad():
            reported = self.loss(prediction, target)[0]
        return scaled, reported


def target_loss_scales(loss: nn.Module, prediction: Tensor, target: Tensor) -> list[float] | None:
    """Each target's mean loss for `prediction` (the mean predictor), for TargetBalancedLoss; None for a custom
    loss (only its total is known: it is trained on as given). A scale that is not a positive number is 1."""
    if not isinstance(loss, BuiltinLoss):
        return None
    with torch.no_grad():
        elementwise = loss._elementwise(prediction.float(), target)
        per_target = elementwise.reshape(len(elementwise), -1).double().mean(dim=0)
    return [float(v) if np.isfinite(float(v)) and float(v) > 0 else 1.0 for v in per_target]


def user_loss(loss: nn.Module) -> nn.Module | None:
    """The user's own module inside a loss built by build_loss, or None for a built-in: the one place that
    tells a loss module apart (is_custom_loss does it for a name)."""
    return loss.inner if isinstance(loss, CustomLoss) else None


def balanced_class_weights(targets: np.ndarray, n_classes: int) -> list[float]:
    """n_samples / (n_classes * count_c), as scikit-learn's 'balanced'; absent classes get 0."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(targets) / (n_classes * np.maximum(counts, 1)), 0.0)
    return [float(w) for w in weights]


def resolve_loss_params(cfg: LossConfig, loss_name: str, enc: LabelEncoding,
                        train_targets: np.ndarray) -> dict:
    """The exact parameters of the loss, with 'balanced' weights computed; recorded with the run."""
    if is_custom_loss(loss_name):
        return {"custom": loss_name, "kwargs": dict(cfg.loss_params)}
    spec = TASKS[enc.task].loss(loss_name)
    unused = [k for k, v in cfg.given().items() if v and k not in spec.params]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise PipelineError(f"{flags} does not apply to --loss {loss_name}; it takes "
                            f"{', '.join('--' + p.replace('_', '-') for p in spec.params) or 'no parameters'}")
    params: dict = {}
    for name in ("huber_delta", "beta", "label_smoothing"):
        if name in spec.params:
            params[name] = cfg.value(name)
    if "quantiles" in spec.params:
        params["quantiles"] = list(cfg.quantiles or DEFAULT_QUANTILES)
    if "pos_weight" in spec.params and cfg.pos_weight is not None:
        pos = list(cfg.pos_weight)
        if len(pos) not in (1, enc.n_outputs):
            raise PipelineError(f"--pos-weight has {len(pos)} values; give 1 or one per label ({enc.n_outputs})")
        params["pos_weight"] = pos * enc.n_outputs if len(pos) == 1 else pos
    if "class_weights" in spec.params and cfg.class_weights is not None:
        n = len(enc.classes)
        if cfg.class_weights == "balanced":
            params["class_weights"] = balanced_class_weights(train_targets, n)
        elif len(cfg.class_weights) != n:
            raise PipelineError(f"--class-weights has {plural(len(cfg.class_weights), 'value')} but the data has {n} "
                                f"classes ({', '.join(enc.classes[:10])}); give one weight per class")
        else:
            params["class_weights"] = list(cfg.class_weights)
    return params


def resolve_loss_name(task: str, loss: str | None) -> str:
    """The loss to use for `task`: the default when None, else checked against the task's losses."""
    spec = TASKS[task]
    if loss is None:
        return spec.default_loss
    if is_custom_loss(loss) or loss in spec.loss_names:
        return loss
    others = [t for t, s in TASKS.items() if loss in s.loss_names]
    hint = f" ('{loss}' is a loss for --task {', '.join(others)})" if others else ""
    raise PipelineError(
        f"--loss '{loss}' does not fit --task {task}{hint}; choose one of "
        f"{', '.join(spec.loss_names)}, or a custom loss as package.module:ClassName"
    )


def build_loss(loss_name: str, params: dict, per_step: bool = False) -> nn.Module:
    """The loss module for a resolved name and parameters; an unknown name fails here, at lookup. `per_step`
    (--window-label each): a built-in loss at every time step (PerStepLoss); a custom loss receives the per-step
    scores (N, K, W) and targets ((N, W) class indices or (N, K, W)) as they are."""
    if is_custom_loss(loss_name):
        return CustomLoss(load_custom_loss(loss_name, params.get("kwargs", {})), loss_name)
    if per_step:
        return PerStepLoss(build_loss(loss_name, params))
    if loss_name not in LOSSES:
        raise PipelineError(f"loss '{loss_name}' is not a built-in loss; choose one of {', '.join(LOSSES)}, or a "
                            "custom loss as package.module:ClassName")
    tensor = lambda key: torch.tensor(params[key], dtype=torch.float32) if key in params else None  # noqa: E731
    return LOSSES[loss_name](class_weights=tensor("class_weights"), pos_weight=tensor("pos_weight"),
                       huber_delta=params.get("huber_delta", 1.0), beta=params.get("beta", 1.0),
                       label_smoothing=params.get("label_smoothing", 0.0), quantiles=tensor("quantiles"))


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_custom_loss(spec: str, kwargs: dict[str, str]) -> nn.Module:
    """Import and construct 'package.module:ClassName', checking it is a (prediction, target) Module."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise PipelineError(f"--loss '{spec}' is not of the form package.module:ClassName")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`, a loss next to the data is found
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PipelineError(f"--loss '{spec}': cannot import module '{module_name}' ({exc}); it must be "
                            "importable from the current folder or installed") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PipelineError(f"--loss '{spec}': module '{module_name}' has no class '{class_name}'")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise PipelineError(f"--loss '{spec}': '{class_name}' is not a torch.nn.Module subclass")
    params = [p for p in inspect.signature(cls.forward).parameters.values()
              if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if not any(p.kind == p.VAR_POSITIONAL for p in params):
        required = [p for p in params if p.default is p.empty]
        if len(params) < 2 or len(required) > 2:
            names = ", ".join(p.name for p in params)
            raise PipelineError(f"--loss '{spec}': {class_name}.forward({names}) must take exactly "
                                "(prediction, target)")
    try:
        return cls(**{k: _parse_value(v) for k, v in kwargs.items()})
    except TypeError as exc:
        raise PipelineError(f"--loss '{spec}': cannot construct {class_name} ({exc}); pass its arguments "
                            "with --loss-param NAME=VALUE") from None


def check_custom_loss(loss: CustomLoss, prediction: Tensor, target: Tensor, spec: str) -> None:
    """Run the user loss once on a real batch so a broken loss fails before the first epoch."""
    prediction = prediction.detach().requires_grad_(True)
    shapes = f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} {target.dtype}"
    try:
        value = loss.inner(prediction, target)
    except Exception as exc:
        raise PipelineError(f"--loss '{spec}' failed on {shapes}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise PipelineError(f"--loss '{spec}' must return a scalar tensor for {shapes}; it returned "
                            f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    if not value.requires_grad:
        raise PipelineError(f"--loss '{spec}' returned a value without gradient; compute it with torch "
                            "operations on the prediction")
    try:
        value.reshape(()).backward()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"--loss '{spec}' has no gradient on {shapes}: {type(exc).__name__}: {first}") from None
