"""InceptionTime's network and LITE: parameter counts of the papers, any length and channels, layers against
independent references (numpy convolutions with TensorFlow's 'same' padding), and the papers' recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.commands.train import _train_configs
from pipeline.settings.config import ModelConfig
from pipeline.models.build import build_model
from pipeline.models.networks import LITE, FixedFilters, Inception, InceptionModule, SameConv1d
from pipeline.training.optim import make_optimizer, make_scheduler

ATOL = RTOL = 1e-5


def _trainable(module: torch.nn.Module, skip: str | None = "head") -> int:
    return sum(p.numel() for n, p in module.named_parameters() if p.requires_grad and not (skip and n.startswith(skip)))


def test_parameter_counts_match_the_papers():
    """Trainable parameters before the output layer, univariate: InceptionTime 420,192 (one network), LITE
    9,814 (Ismail-Fawaz et al. 2023 report both); the output layer adds (features + 1) per class."""
    inception, lite = Inception(1, 5), LITE(1, 5)
    assert _trainable(inception) == 420_192
    assert _trainable(lite) == 9_814
    assert _trainable(inception, skip=None) - _trainable(inception) == 128 * 5 + 5
    assert _trainable(lite, skip=None) - _trainable(lite) == 32 * 5 + 5


@pytest.mark.parametrize("channels", [1, 3])
def test_inception_parameter_count_follows_the_architecture(channels):
    """Counted by hand from the paper's layers: a bottleneck only on inputs of more than one channel."""
    c = channels
    first = (32 * c if c > 1 else 0) + 32 * (c if c == 1 else 32) * (40 + 20 + 10) + 32 * c + 2 * 128
    later = 128 * 32 + 32 * 32 * 70 + 128 * 32 + 2 * 128
    shortcuts = (c * 128 + 2 * 128) + (128 * 128 + 2 * 128)
    assert _trainable(Inception(c, 2)) == first + 5 * later + shortcuts


@pytest.mark.parametrize("name", ["inception", "lite"])
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_models_take_any_length_and_channels(name, channels):
    model = build_model(ModelConfig(name=name, width=0.25, in_channels=channels, length=150, n_outputs=3)).eval()
    for length in (1, 9, 150, 301):
        out = model(torch.randn(2, channels, length))
        assert out.shape == (2, 3) and torch.isfinite(out).all()


def _same_conv_reference(x: np.ndarray, w: np.ndarray, dilation: int = 1) -> np.ndarray:
    """TensorFlow 'same' convolution (cross-correlation) in float64: of the dilation*(k-1) padded steps,
    the smaller half left. x (C, L), w (O, C, k) -> (O, L)."""
    k = w.shape[-1]
    total = dilation * (k - 1)
    xp = np.pad(x, ((0, 0), (total // 2, total - total // 2)))
    L = x.shape[1]
    out = np.zeros((w.shape[0], L))
    for j in range(k):
        out += np.einsum("oc,cl->ol", w[:, :, j], xp[:, j * dilation:j * dilation + L])
    return out


@pytest.mark.parametrize("kernel, dilation", [(40, 1), (20, 2), (10, 4), (3, 1)])
def test_same_padding_splits_as_tensorflow(kernel, dilation):
    conv = SameConv1d(2, 3, kernel, bias=False, dilation=dilation)
    x = torch.randn(2, 57)
    expected = _same_conv_reference(x.double().numpy(), conv.weight.detach().double().numpy(), dilation)
    with torch.no_grad():
        np.testing.assert_allclose(conv(x[None])[0].numpy(), expected, atol=ATOL, rtol=RTOL)


def test_inception_module_against_a_reference_built_from_the_paper():
    """Bottleneck, convolutions of kernels 40/20/10 on it, max-pool(3, stride 1, 'same') + 1x1 on the input,
    concatenated, batch-normalised (eval: running statistics), ReLU; written out with numpy."""
    module = InceptionModule(3, 4, 5).eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
        module.bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 33, dtype=torch.float64)
    xn = x.numpy()
    z = np.einsum("oc,cl->ol", module.bottleneck.weight.detach().double().numpy()[:, :, 0], xn)
    branches = [_same_conv_reference(z, conv.weight.detach().double().numpy()) for conv in module.convs]
    padded = np.pad(xn, ((0, 0), (1, 1)), constant_values=-np.inf)
    pooled = np.max(np.stack([padded[:, i:i + 33] for i in range(3)]), axis=0)
    branches.append(np.einsum("oc,cl->ol", module.pool_conv.weight.detach().double().numpy()[:, :, 0], pooled))
    y = np.concatenate(branches)
    bn = module.bn
    scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    expected = np.maximum((y - bn.running_mean.double().numpy()[:, None]) * scale[:, None]
                          + bn.bias.detach().double().numpy()[:, None], 0)
    assert [c.kernel_size[0] for c in module.convs] == [40, 20, 10]
    with torch.no_grad():
        np.testing.assert_allclose(module(x.float()[None])[0].numpy(), expected, atol=ATOL, rtol=RTOL)


def test_inception_has_a_residual_shortcut_every_three_modules():
    net = Inception(1, 2)
    assert len(net.features) == 2 and all(len(block.body) == 3 for block in net.features)
    first = net.features[0].body[0]
    assert isinstance(first.bottleneck, torch.nn.Identity)  # one input channel: no bottleneck, as the paper's code
    assert net.features[0].body[1].bottleneck.out_channels == 32


def _paper_filters() -> list[np.ndarray]:
    """The hand-crafted filters as the LITE paper's code writes them, one array each."""
    filters = []
    for k in (2, 4, 8, 16, 32, 64):
        filters.append(np.array([-1.0 if i % 2 == 0 else 1.0 for i in range(k)]))  # increase detection
    for k in (2, 4, 8, 16, 32, 64):
        filters.append(np.array([1.0 if i % 2 == 0 else -1.0 for i in range(k)]))  # decrease detection
    for k in (4, 8, 16, 32, 64):  # peak detection, length 1.5 k
        left = np.linspace(0, 1, k // 4 + 1)[1:] ** 2
        right = left[::-1]
        filters.append(np.concatenate([-left, -right, 2 * left, 2 * right, -left, -right]))
    return filters


@pytest.mark.parametrize("channels", [1, 3])
def test_lite_fixed_filters_are_the_papers_each_with_its_own_same_padding(channels):
    layer = FixedFilters(channels)
    x = torch.randn(channels, 150, dtype=torch.float64)
    expected = np.concatenate([
        _same_conv_reference(x.numpy(), np.broadcast_to(f, (1, channels, len(f)))) for f in _paper_filters()])
    assert layer.out_channels == 17 and not layer.weight.requires_grad
    with torch.no_grad():
        np.testing.assert_allclose(layer(x.float()[None])[0].numpy(), expected, atol=1e-4, rtol=RTOL)


def test_lite_layers_and_fixed_filters_stay_fixed_in_training():
    model = build_model(ModelConfig(name="lite", in_channels=1, length=64, n_outputs=3))
    net: LITE = model.net
    assert [(c.kernel_size[0], c.dilation[0]) for c in net.convs] == [(40, 1), (20, 1), (10, 1)]
    depthwise = [m[0] for m in net.separable if isinstance(m, torch.nn.Sequential)]
    assert [(c.kernel_size[0], c.dilation[0], c.groups) for c in depthwise] == [(20, 2, 113), (10, 4, 32)]
    before = net.fixed.weight.detach().clone()
    optimizer = make_optimizer(_train_configs_for("lite").train, model)
    loss = F.cross_entropy(model(torch.randn(8, 1, 64)), torch.randint(0, 3, (8,)))
    loss.backward()
    optimizer.step()
    assert torch.equal(net.fixed.weight, before)
    assert net.convs[0].weight.grad is not None and net.fixed.weight.grad is None


def _train_configs_for(model: str, *extra: str, data: tuple[str, ...] = ("--data", "x.npz")):
    """The configs `pipeline train --model MODEL ...` builds, without training."""
    ctx = main.commands["train"].make_context("train", ["--model", model, *data, *extra])
    return _train_configs(ctx.params)


@pytest.mark.parametrize("model", ["inception", "lite"])
def test_the_papers_recipe_is_the_default_and_flags_override_it(model):
    train_cfg = _train_configs_for(model).train
    assert (train_cfg.epochs, train_cfg.batch_size, train_cfg.lr, train_cfg.patience, train_cfg.lr_patience,
            train_cfg.scheduler, train_cfg.optimizer) == (1500, 64, 1e-3, 0, 50, "plateau", "adam")
    scheduler = make_scheduler(train_cfg, torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3))
    assert (scheduler.patience, scheduler.factor, scheduler.min_lrs[0]) == (50, 0.5, pytest.approx(1e-4))
    given = _train_configs_for(model, "--epochs", "7", "--batch-size", "8", "--patience", "5",
                               "--lr-patience", "2").train
    assert (given.epochs, given.batch_size, given.patience, given.lr_patience) == (7, 8, 5, 2)
    embedded = _train_configs_for(model, data=()).train  # the embedded demo data keeps its short default
    assert (embedded.epochs, embedded.batch_size, embedded.patience) == (40, 64, 0)


def test_other_models_keep_their_defaults():
    train_cfg = _train_configs_for("fcn").train
    assert (train_cfg.epochs, train_cfg.batch_size, train_cfg.patience, train_cfg.lr_patience) == (300, None, 50, None)
    scheduler = make_scheduler(train_cfg, torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3))
    assert scheduler.patience == 16


def test_train_help_states_the_recipes():
    text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output.split())
    assert ("inception and lite train with their papers' recipe unless a flag says otherwise: 1500 epochs, batch 64, "
            "Adam 1e-3 halved after 50 epochs without improvement down to 1e-4, no early stopping") in text
    assert "--model inception --ensemble 5 is InceptionTime, --model lite --ensemble 5 is LITETime" in text
