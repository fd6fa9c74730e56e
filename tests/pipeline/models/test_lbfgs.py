"""pipeline.models.lbfgs against torch.optim.LBFGS (the reference it ports), the ridge head's calibration against
the same calibration written with torch.optim.LBFGS, and a ridge run that never imports torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from pipeline.losses import build_loss
from pipeline.models.lbfgs import minimize
from pipeline.models.ridge import CALIBRATION_STEPS, calibrate
from tests.conftest import subprocess_env


def _rosenbrock(x):
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def _torch_lbfgs(fn, start, max_iter, **options):
    """The reference: one step of torch.optim.LBFGS with the strong-Wolfe line search."""
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], max_iter=max_iter, line_search_fn="strong_wolfe", **options)

    def closure():
        optimizer.zero_grad()
        loss = fn(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    return x.detach()


def _objective(fn):
    def objective(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = fn(x)
            (grad,) = torch.autograd.grad(loss, x)
        return float(loss), grad
    return objective


@settings(max_examples=25, deadline=None)
@given(start=st.lists(st.floats(-3, 3), min_size=2, max_size=6), max_iter=st.sampled_from([1, 2, 7, 40, 100]),
       history=st.sampled_from([2, 100]))
def test_minimize_takes_torch_lbfgs_iterates_exactly(start, max_iter, history):
    """The same arithmetic in the same order: every coordinate equal to the last bit, for any start, any
    number of iterations (the history full or not), a curved valley the line search works on."""
    start = torch.tensor(start, dtype=torch.float64)
    expected = _torch_lbfgs(_rosenbrock, start, max_iter, history_size=history)
    got = minimize(_objective(_rosenbrock), start, max_iter, history_size=history)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_minimize_reaches_the_rosenbrock_minimum_and_stops_at_a_zero_gradient():
    torch.testing.assert_close(minimize(_objective(_rosenbrock), torch.tensor([-1.2, 1.0], dtype=torch.float64), 100),
                               torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)  # stops at a 1e-9 change
    at_minimum = torch.ones(3, dtype=torch.float64)
    assert minimize(_objective(_rosenbrock), at_minimum, 100) is at_minimum


def _calibrate_with_torch_optim(loo, y, loss_fn, shared, shift):
    """The calibration as it was written with torch.optim.LBFGS (the reference)."""
    k = loo.shape[1]
    log_scale = torch.zeros(1 if shared else k, dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(k, dtype=torch.float64, requires_grad=shift)
    optimizer = torch.optim.LBFGS([log_scale] + ([offset] if shift else []), max_iter=CALIBRATION_STEPS,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss, _ = loss_fn((loo * log_scale.exp() + offset).float(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_scale.detach().exp().expand(k), offset.detach()


@pytest.mark.parametrize("task, loss, shared, shift", [("multiclass", "cross_entropy", True, False),
                                                       ("binary", "bce", False, False),
                                                       ("multilabel", "bce", False, False),
                                                       ("count", "poisson_nll", False, True)])
def test_calibration_equals_torch_optim_lbfgs(task, loss, shared, shift):
    """Scores of a separable fit (the scale runs far from 1) and of a noisy one, for every calibrated head."""
    g = torch.Generator().manual_seed(0)
    n, k = 60, {"multiclass": 3, "binary": 1, "multilabel": 2, "count": 2}[task]
    for noise in (0.05, 1.0):
        if task == "multiclass":
            y = torch.randint(0, k, (n,), generator=g)
            loo = 2.0 * torch.nn.functional.one_hot(y, k).double() - 1.0
        elif task == "count":
            y = torch.poisson(torch.full((n, k), 30.0), generator=g)
            loo = torch.log(y.double() + 0.5) / 3.0
        else:
            y = torch.randint(0, 2, (n, k), generator=g).float()
            loo = 2.0 * y.double() - 1.0
        loo = loo + noise * torch.randn(loo.shape, generator=g, dtype=torch.float64)
        loss_fn = build_loss(loss, {})
        expected = _calibrate_with_torch_optim(loo, y, loss_fn, shared, shift)
        got = calibrate(loo, y, loss_fn, shared, shift)
        for g_value, e_value in zip(got, expected):
            torch.testing.assert_close(g_value, e_value, atol=0, rtol=1e-12)


def test_a_ridge_run_imports_no_dynamo_and_saves_no_optimizer(tmp_path, npz_file):
    """torch._dynamo costs 1.5 s of a 3 s kernel run; every torch.optim optimizer imports it when built."""
    data = npz_file("multiclass", n=30, length=24)
    script = ("import sys; from pipeline.cli import main\n"
              "try: main(['train', '--model', 'minirocket', '--data', sys.argv[1], '--out', sys.argv[2], "
              "'--no-progress'])\nexcept SystemExit as e: assert not e.code, e.code\n"
              "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script, str(data), str(tmp_path / "run")], capture_output=True,
                          text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"
    from pipeline.training.checkpoint import load_checkpoint

    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["optimizer"] is None and last["scheduler"] is None
