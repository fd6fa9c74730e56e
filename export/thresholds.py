"""Verification at a threshold: the kernel models (pipeline.models.kernels) count comparisons of a convolution with a
fitted bias (MiniRocket's PPV, Hydra's winning kernel). An engine that sums the convolution in another order can
flip a comparison that sits within a rounding error of its bias, which moves a feature by a whole step (1/length
for a PPV). For every verification input, eager PyTorch finds those comparisons (within ROUNDING_FACTOR x
(terms + 4) x 2^-24 of the magnitudes summed: pipeline.models.kernels) and bounds how far each graph output can move if
every one of them went the other way (the head is linear in the features; the output layer, the ensemble's
average and the task's outputs are bounded as below). Each output is then checked against
atol + rtol x |eager| + that bound, element by element: a series with no comparison near a bias is held to the
plain tolerance, and a difference beyond the bound fails as before. verification.json records, per check, the
number of near-tie comparisons and the largest bound used."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.models.kernels import KernelNet
from pipeline.models.build import EnsembleNet, SequenceModel, _log_mean_exp


@dataclass(frozen=True)
class Allowance:
    """Per graph output, the extra absolute difference each element may show (for an integer output: where it
    may differ), and how many comparisons of the case sit within rounding of their thresholds."""

    outputs: tuple[np.ndarray, ...]
    near_ties: int


def score_bounds(model: SequenceModel, x: Tensor) -> tuple[Tensor, Tensor, int] | None:
    """The model's raw scores, a bound on how far each may move by near-tie flips, and the number of (series,
    feature) pairs with a comparison near its threshold; None for a model without kernel transforms."""
    with torch.no_grad():
        x = model.network_input(x)
        if isinstance(model.net, KernelNet):
            z, dz, n = model.net.threshold_bound(x)
            return model.output(z), dz * model.output.scale.abs(), n
        if isinstance(model.net, EnsembleNet) and isinstance(model.net.members[0], KernelNet):
            return _ensemble_bounds(model.net, x)
    return None


def _ensemble_bounds(ensemble: EnsembleNet, x: Tensor) -> tuple[Tensor, Tensor, int]:
    parts = [member.threshold_bound(x) for member in ensemble.members]
    z = torch.stack([p[0] for p in parts]) * ensemble.scale + ensemble.shift  # (members, batch, K)
    dz = torch.stack([p[1] for p in parts]) * ensemble.scale.abs()
    combined = ensemble(x)
    if ensemble.combine == "softmax":  # a log-softmax moves by at most twice its scores' largest move
        bound = 2 * dz.amax(dim=(0, 2)).unsqueeze(1).expand_as(combined)
    elif ensemble.combine == "identity":
        bound = dz.mean(0)
    else:  # sigmoid and exp combine monotonically in every member's score: the ends bound the move
        low, high = _combine(ensemble, z - dz), _combine(ensemble, z + dz)
        bound = torch.maximum((low - combined).abs(), (high - combined).abs())
    return combined, bound, sum(p[2] for p in parts)


def _combine(ensemble: EnsembleNet, z: Tensor) -> Tensor:
    """EnsembleNet's sigmoid or exp combination of stacked member scores (members, batch, K)."""
    if ensemble.combine == "sigmoid":
        return _log_mean_exp(F.logsigmoid(z)) - _log_mean_exp(F.logsigmoid(-z))
    return _log_mean_exp(z)


def output_allowance(model: SequenceModel, scores: str, x: Tensor) -> Allowance | None:
    """The Allowance of each named output of the task's graph (raw scores first) on input `x`."""
    bounds = score_bounds(model, x)
    if bounds is None:
        return None
    z, dz, n = bounds
    if scores == "sigmoid":
        outputs = (dz, 0.25 * dz)  # the logistic function's slope is at most 1/4
    elif scores == "softmax":
        top2 = z.topk(min(2, z.shape[1]), dim=1).values
        gap = top2[:, 0] - top2[:, -1]
        widest = dz.amax(1)
        # a probability moves by at most half its scores' largest move; the label only where the top two can swap
        outputs = (dz, 0.5 * widest.unsqueeze(1).expand_as(dz), (gap <= 2 * widest).to(z.dtype) * (z.shape[1] > 1))
    elif scores == "exp":
        outputs = (dz, torch.exp(z) * torch.expm1(dz))
    else:
        outputs = (dz,)
    return Allowance(tuple(o.double().numpy() for o in outputs), n)


def allowance_for(model: SequenceModel, scores: str):
    """verify_graph's `allowance` for a model graph: None for a model without kernel transforms; else each
    case's Allowance, computed once per case."""
    if getattr(model, "reversible", None) is not None:
        return forecast_allowance(model)
    members = model.net.members if isinstance(model.net, EnsembleNet) else [model.net]
    if not all(isinstance(member, KernelNet) for member in members):
        return None
    cache: dict[int, Allowance | None] = {}

    def per_case(case) -> Allowance | None:
        if id(case) not in cache:
            cache[id(case)] = output_allowance(model, scores, case.inputs[0])
        return cache[id(case)]

    return per_case


FORECAST_ATOL = 1e-5  # per unit of the window's spread: the network computes in each window's normalised units


def forecast_allowance(model: SequenceModel):
    """A forecaster's outputs are each window's normalised forecast times its spread plus its level
    (models.build.Reversible): any engine's float32 rounding of the normalised values (about 1e-7 of 1) comes
    out multiplied by the spread, so each output may also differ by FORECAST_ATOL times its window's spread
    of that target channel (1e-5 in the units the network computes in)."""

    def per_case(case) -> Allowance:
        x = case.inputs[0]
        with torch.no_grad():
            spread = model.target_spread(x).double()  # (batch, T)
        n, t = spread.shape
        shape = model.forecast_shape
        q = shape[2] if len(shape) == 3 else 1
        extra = torch.full((n, t * shape[1], q), FORECAST_ATOL, dtype=torch.float64)  # normalised units
        bounds = score_bounds(model, x)  # a kernel forecaster: near-threshold comparisons move its scores
        near = 0
        if bounds is not None:
            _, dz, near = bounds
            # each quantile is the median plus or minus softplus of others (1-Lipschitz): at most their sum moves it
            extra = extra + dz.double().reshape(n, t * shape[1], q).sum(dim=2, keepdim=True)
        shaped = (extra.reshape(n, t, -1) * spread.reshape(n, t, 1)).reshape(n, *shape)
        return Allowance((shaped.reshape(n, -1).numpy(), shaped.numpy()), near)

    return per_case
