"""L-BFGS with the strong-Wolfe line search over one flat float64 vector: torch.optim.LBFGS's iteration, the
same arithmetic in the same order (tests/pipeline/models/test_lbfgs.py holds it to torch.optim.LBFGS's iterates),
without a torch.optim.Optimizer. Constructing any Optimizer imports torch._dynamo (about 1.5 s, a third of a
kernel model's whole `pipeline train`), and the ridge head's calibration is the only optimisation such a run does.

The line search is torch's own `_strong_wolfe`, a plain function of torch.optim.lbfgs that imports nothing more."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.optim.lbfgs import _strong_wolfe

Objective = Callable[[Tensor], tuple[float, Tensor]]  # x -> (loss, gradient like x)


def _two_loop(grad: Tensor, old_dirs: list, old_stps: list, ro: list, h_diag) -> Tensor:
    """The L-BFGS direction: minus the inverse-Hessian estimate times the gradient."""
    al = [None] * len(old_dirs)
    q = grad.neg()
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = old_stps[i].dot(q) * ro[i]
        q.add_(old_dirs[i], alpha=-al[i])
    r = torch.mul(q, h_diag)
    for i in range(len(old_dirs)):
        be_i = old_dirs[i].dot(r) * ro[i]
        r.add_(old_stps[i], alpha=al[i] - be_i)
    return r


def minimize(objective: Objective, x: Tensor, max_iter: int, lr: float = 1.0, tolerance_grad: float = 1e-7,
             tolerance_change: float = 1e-9, history_size: int = 100) -> Tensor:
    """The x reached by one `torch.optim.LBFGS(..., max_iter=max_iter, line_search_fn="strong_wolfe").step`
    from `x` (max_eval = max_iter * 1.25, as torch's default)."""
    max_eval = max_iter * 5 // 4
    loss, grad = objective(x)
    evals = 1
    if grad.abs().max() <= tolerance_grad:
        return x
    old_dirs, old_stps, ro, h_diag = [], [], [], 1
    d = t = prev_grad = None
    for n_iter in range(1, max_iter + 1):
        if n_iter == 1:
            d = grad.neg()
        else:
            y, s = grad.sub(prev_grad), d.mul(t)
            ys = y.dot(s)
            if ys > 1e-10:  # the curvature condition; otherwise the pair is skipped
                if len(old_dirs) == history_size:
                    old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                old_dirs.append(y), old_stps.append(s), ro.append(1.0 / ys)
                h_diag = ys / y.dot(y)
            d = _two_loop(grad, old_dirs, old_stps, ro, h_diag)
        prev_grad, prev_loss = grad.clone(), loss
        t = min(1.0, 1.0 / grad.abs().sum()) * lr if n_iter == 1 else lr
        gtd = grad.dot(d)
        if gtd > -tolerance_change:
            break
        loss, grad, t, ls_evals = _strong_wolfe(
            lambda x0, step, direction: objective(torch.add(x0, direction, alpha=step)), x, t, d, loss, grad, gtd,
            max_ls=max_eval - evals)
        x = torch.add(x, d, alpha=t)
        evals += ls_evals
        if (n_iter == max_iter or evals >= max_eval or grad.abs().max() <= tolerance_grad
                or d.mul(t).abs().max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change):
            break
    return x
