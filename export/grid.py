"""The verification grid: the inputs every exported graph is run on and compared with eager PyTorch."""

from __future__ import annotations

import torch

from export.verify import BATCH_SIZES, Case
from pipeline.settings.config import ModelConfig
from runtime.tasks import TASKS


# The loss grid's edges: scores a confidently trained classifier emits (logits of +-20..100), log-rates
# of +-20 (exp(20) ~ 5e8 counts), counts and regression targets far from the usual range.
EDGE_BATCH = 16
CONFIDENT_SCORE = 100.0
CONFIDENT_LOG_RATE = 20.0
COUNT_LIMIT = 1e4
REGRESSION_LIMIT = 1e4
# The model grid's edge: series at this many standard deviations, so the graph runs at large activations.
LOUD_SERIES = 10.0


def _targets(task: str, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Random targets of the task's kind: class indices, 0/1, counts or values."""
    spec = TASKS[task]
    if spec.scores == "softmax":
        return torch.randint(0, k, (n,), generator=g)
    if spec.values == "0/1":
        return torch.randint(0, 2, (n, k), generator=g).float()
    if spec.values == "count":
        return torch.poisson(torch.full((n, k), 3.0), generator=g)
    return torch.randn(n, k, generator=g)


def _series(model, n: int, c: int, length: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Raw-looking series: the training statistics' scale, so the baked-in normalisation is exercised."""
    mean, std = model.normalize.mean, model.normalize.std
    return (torch.randn(n, c, length, generator=g) * std * scale + mean).float()


def model_cases(model, cfg: ModelConfig) -> list[Case]:
    g = torch.Generator().manual_seed(1)
    # the training length first, so the golden data (first batch-2 case) uses it
    lengths = [cfg.length] if cfg.fixed_length else [cfg.length, max(cfg.length // 2, 1), 2 * cfg.length]
    cases = [Case(f"batch={n} length={L}", (_series(model, n, cfg.in_channels, L, g),))
             for L in lengths for n in BATCH_SIZES]
    loud = _series(model, 7, cfg.in_channels, cfg.length, g, scale=LOUD_SERIES)
    return cases + [Case(f"batch=7 length={cfg.length} x{LOUD_SERIES:g} std", (loud,))]


def loss_cases(task: str, cfg: ModelConfig) -> list[Case]:
    """Moderate scores at every batch size, then the scores trained models really emit (see edge_cases); per-step
    models (cfg.per_step): the same values as windows of LOSS_STEPS steps, and one window of a single step."""
    g = torch.Generator().manual_seed(2)
    k = cfg.target_outputs  # a quantile forecast: Q scores per target value
    if cfg.per_step:
        rows = [(f"batch={n} steps={LOSS_STEPS}", n, LOSS_STEPS) for n in BATCH_SIZES] + [("batch=1 steps=1", 1, 1)]
        cases = [Case(label, _as_steps(torch.randn(n * w, k, generator=g) * 2, _targets(task, n * w, k, g), n))
                 for label, n, w in rows]
        return cases + [Case(c.label + f" steps={LOSS_STEPS}", _as_steps(*c.inputs, EDGE_BATCH))
                        for c in edge_cases(task, k, g, n=EDGE_BATCH * LOSS_STEPS)]
    return [Case(f"batch={n}", (torch.randn(n, cfg.n_outputs, generator=g) * 2,
                                _targets(task, n, k, g))) for n in BATCH_SIZES] + \
        edge_cases(task, k, g, quantiles=cfg.quantiles)


LOSS_STEPS = 5  # per-step loss cases: steps per window


def _as_steps(scores: torch.Tensor, targets: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one step each, (n * W, K) and (n * W,) or (n * W, K), as n windows of W steps in the per-step
    layout: (n, K, W) and (n, W) or (n, K, W) (runtime.segments)."""
    k = scores.shape[1]
    per_step = scores.reshape(n, -1, k).transpose(1, 2).contiguous()
    if targets.dim() == 1:
        return per_step, targets.reshape(n, -1).contiguous()
    return per_step, targets.reshape(n, -1, k).transpose(1, 2).contiguous()


def _magnitudes(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """Magnitudes in [low, high] with both ends present exactly."""
    m = low + (high - low) * torch.rand(shape, generator=g)
    m.view(-1)[0], m.view(-1)[-1] = low, high
    return m


def edge_cases(task: str, k: int, g: torch.Generator, n: int = EDGE_BATCH, quantiles: int = 1) -> list[Case]:
    """Confident scores (|score| up to CONFIDENT_SCORE, both signs) with all-correct, all-wrong and random
    targets, and targets at the limits of their range: where unstable loss graphs return inf or nan."""
    s, spec = CONFIDENT_SCORE, TASKS[task]
    uniform = lambda limit: (torch.rand(n, k, generator=g) * 2 - 1) * limit  # noqa: E731
    if spec.scores == "sigmoid":
        t = torch.randint(0, 2, (n, k), generator=g).float()
        t[0], t[-1] = 0.0, 1.0  # both limits in every case
        sign, m = 2 * t - 1, _magnitudes((n, k), 15.0, s, g)
        pairs = {"correct": (sign * m, t), "wrong": (-sign * m, t), "random": (uniform(s), t)}
    elif spec.scores == "softmax":
        t = torch.randint(0, k, (n,), generator=g)
        t[0], t[-1] = 0, k - 1
        m = _magnitudes((n, 1), 15.0, s, g)
        hot = torch.nn.functional.one_hot(t, k).bool()
        correct = torch.where(hot, m, -m)
        wrong = torch.where(hot, -m, torch.where(torch.roll(hot, 1, dims=1), m, -m))
        pairs = {"correct": (correct, t), "wrong": (wrong, t), "random": (uniform(s), t)}
    elif spec.scores == "exp":
        t = torch.poisson(torch.full((n, k), 3.0), generator=g)
        t[0], t[-1] = 0.0, COUNT_LIMIT  # none, and far more than usual
        r = CONFIDENT_LOG_RATE
        wrong = torch.where(t > 3, torch.full_like(t, -r), torch.full_like(t, r))  # tiny rate for many, huge for few
        pairs = {"correct": (torch.log(t + 0.5), t), "wrong": (wrong, t), "random": (uniform(r), t)}
    else:
        t = (torch.rand(n, k, generator=g) * 2 - 1) * REGRESSION_LIMIT
        t[0], t[-1] = -REGRESSION_LIMIT, REGRESSION_LIMIT
        pairs = {"correct": (t + torch.randn(n, k, generator=g) * 1e-3, t), "wrong": (-t, t),
                 "random": (uniform(REGRESSION_LIMIT), t)}
    # a quantile forecast's scores: each value's Q quantiles (innermost), spread around it
    spread = lambda scores: scores.repeat_interleave(quantiles, dim=1) + torch.linspace(  # noqa: E731
        -1.0, 1.0, quantiles).repeat(k) * (quantiles > 1)
    return [Case(f"batch={n} edge {what}", (spread(scores.float()).contiguous(), targets)) for what, (scores, targets)
            in pairs.items()]
