"""The kernel models' fit (pipeline.models.kernels): the transform fitted to the training series, then the closed-form
head: ridge regression on the standardised features,
its regularisation chosen by leave-one-out cross-validation over the reference's alphas (RidgeClassifierCV,
10^-3..10^3), then the output layer's scale (and, for counts, shift) fitted to the task's loss on the
leave-one-out scores, so that the exported probabilities and loss are calibrated, not the raw +-1 fit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pipeline.models.lbfgs import minimize

RIDGE_ALPHAS = tuple(float(a) for a in torch.logspace(-3, 3, 10, dtype=torch.float64))
RIDGE_MAX_SERIES = 10_000  # --head auto: ridge below this many training series, gradient descent from it
CALIBRATION_STEPS = 100


@dataclass(frozen=True)
class RidgeFit:
    weight: Tensor  # (K, F)
    bias: Tensor  # (K,)
    alpha: float
    loo: Tensor  # (n, K) leave-one-out predictions of the targets


def ridge_loo(x: Tensor, t: Tensor, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> RidgeFit:
    """Ridge with an unpenalised intercept for every alpha via one SVD; the alpha of the lowest mean squared
    leave-one-out error over all columns (the first on a tie), as scikit-learn's RidgeCV chooses it."""
    x, t = x.double(), t.double()
    n = len(x)
    x_mean, t_mean = x.mean(0), t.mean(0)
    u, s, vt = torch.linalg.svd(x - x_mean, full_matrices=False)
    ut_t = u.T @ (t - t_mean)
    best = None
    for alpha in alphas:
        shrink = s ** 2 / (s ** 2 + alpha)
        fitted = u @ (shrink[:, None] * ut_t)
        leverage = (u ** 2 * shrink).sum(1) + 1.0 / n
        residual = (t - t_mean - fitted) / (1.0 - leverage)[:, None]
        error = float((residual ** 2).mean())
        if best is None or error < best[0]:
            best = (error, alpha, residual)
    _, alpha, residual = best
    weight = vt.T @ ((s / (s ** 2 + alpha))[:, None] * ut_t)  # (F, K)
    return RidgeFit(weight.T.contiguous(), t_mean - x_mean @ weight, alpha, t - residual)


@dataclass(frozen=True)
class HeadRule:
    """How one kind of task score (runtime.tasks.Task.scores) becomes ridge targets, and which of the output
    layer's numbers are then fitted to the task's loss on the leave-one-out scores."""

    targets: callable  # (encoded targets, n_outputs, output base shift, scale) -> (n, K) float64
    calibrate: bool  # fit a scale (shared by all outputs when `shared`) to the loss
    shared: bool = False
    shift: bool = False  # fit a per-output shift too


def _plus_minus_one_hot(y: Tensor, k: int, shift, scale) -> Tensor:
    return 2.0 * torch.nn.functional.one_hot(y.long().view(-1), k).double() - 1.0


def _plus_minus(y: Tensor, k: int, shift, scale) -> Tensor:
    return 2.0 * y.double().view(len(y), k) - 1.0


def _standardised(y: Tensor, k: int, shift, scale) -> Tensor:
    shift, scale = torch.tensor(shift, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    return (y.double().view(len(y), k) - shift) / scale


def _log_counts(y: Tensor, k: int, shift, scale) -> Tensor:
    return torch.log(y.double().view(len(y), k) + 0.5)


HEAD_RULES = {"softmax": HeadRule(_plus_minus_one_hot, calibrate=True, shared=True),
              "sigmoid": HeadRule(_plus_minus, calibrate=True),
              "identity": HeadRule(_standardised, calibrate=False),
              # forecasts: targets already in each window's units (SequenceModel.normalised_targets), base 0 and 1
              "forecast": HeadRule(_standardised, calibrate=False),
              "exp": HeadRule(_log_counts, calibrate=True, shift=True)}


def calibrate(loo: Tensor, y: Tensor, loss_fn, shared: bool, shift: bool) -> tuple[Tensor, Tensor]:
    """The output layer's (scale, shift) minimising the task's loss of loo * scale + shift (scale > 0), by
    L-BFGS from scale 1 and shift 0 (pipeline.models.lbfgs: torch's iteration without torch.optim)."""
    k = loo.shape[1]
    n_scales = 1 if shared else k
    scores = loo.double()

    def objective(flat: Tensor) -> tuple[float, Tensor]:
        flat = flat.detach().requires_grad_(True)
        log_scale, offset = flat[:n_scales], flat[n_scales:] if shift else torch.zeros(k, dtype=torch.float64,
                                                                                     device=loo.device)
        with torch.enable_grad():
            loss, _ = loss_fn((scores * log_scale.exp() + offset).float(), y)
            (grad,) = torch.autograd.grad(loss, flat)
        return float(loss.detach()), grad

    start = torch.zeros(n_scales + (k if shift else 0), dtype=torch.float64, device=loo.device)
    solved = start
    if math.isfinite(objective(start)[0]):
        solved = minimize(objective, start, max_iter=CALIBRATION_STEPS)
    scale = solved[:n_scales].exp().expand(k)
    offset = solved[n_scales:] if shift else torch.zeros(k, dtype=torch.float64, device=loo.device)
    if not (torch.isfinite(scale).all() and torch.isfinite(offset).all()):
        return torch.ones(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    return scale.clone(), offset.clone()


def kernel_head(model_cfg, n_train: int) -> str:
    """--head as run: auto is ridge below RIDGE_MAX_SERIES training series, linear from there; other models
    keep 'auto' (they have no choice of head)."""
    from pipeline.settings.config import MODELS

    if not MODELS[model_cfg.name].kernel or model_cfg.head != "auto":
        return model_cfg.head
    return "ridge" if n_train < RIDGE_MAX_SERIES else "linear"


def fit_ridge_head(features: Tensor, y: Tensor, scores: str, base,
                   loss_fn) -> tuple[RidgeFit, Tensor | None, Tensor | None]:
    """The ridge fit for a task's kind of score, and the output layer's fitted (scale, shift) where the rule
    calibrates (None where the output base stays: regression's standardisation)."""
    rule = HEAD_RULES[scores]
    k = len(base.scale)
    targets = rule.targets(y.cpu(), k, base.shift, base.scale)
    fit = ridge_loo(features.cpu(), targets)
    if not rule.calibrate:
        return fit, None, None
    scale, shift = calibrate(fit.loo.to(y.device), y, loss_fn, rule.shared, rule.shift)  # the loss's device
    return fit, scale.cpu(), shift.cpu()


def fit_transform(model, source, seed: int, log) -> Tensor:
    """A kernel model's transform fitted to the normalised training series of `source` (a BatchSource; the same
    on every process: the same rows, the run's seed); their standardised features (n, F), on the CPU where the
    ridge head is solved."""
    x, _ = source.batch(torch.arange(source.n))
    with torch.no_grad():
        x = model.network_input(x)
    started = time.perf_counter()
    model.net.cpu()  # fitted on the CPU whatever the device: the same biases on every device and process
    features = model.net.fit(x.cpu(), torch.Generator().manual_seed(seed))
    model.to(x.device)
    log(f"{type(model.net).__name__}: {features.shape[1]} features of {source.n} training series fitted in "
        f"{time.perf_counter() - started:.1f} s")
    return features


def fit_head(model, features: Tensor, y: Tensor, scores: str, base, loss_fn, loss_name: str, log):
    """The ridge head in closed form, then the output layer's scale fitted to the task's loss on the leave-one-out
    scores; the output base as fitted (the run records it)."""
    fit, scale, shift = fit_ridge_head(features, y, scores, base, loss_fn)
    head = model.net.head
    with torch.no_grad():
        head.weight.copy_(fit.weight.float())
        head.bias.copy_(fit.bias.float())
    if scale is not None:
        model.output.fit(scale.float(), shift.float())
        base = replace(base, scale=[float(v) for v in scale], shift=[float(v) for v in shift])
    log(f"ridge head: alpha {fit.alpha:.3g} (lowest leave-one-out error of {len(RIDGE_ALPHAS)} alphas 1e-3..1e3)"
        + (f"; output scale {float(scale[0]):.3g} fitted to the {loss_name} loss of the leave-one-out scores"
           if scale is not None else ""))
    return base
