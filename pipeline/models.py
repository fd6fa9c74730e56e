"""Networks for (batch, channels, length) series. Every model emits raw scores (N, n_outputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import MIN_LENGTH, ModelConfig
from pipeline.errors import PipelineError

NORM_EPS = 1e-8


class Normalize(nn.Module):
    """Z-scores inside the model, so exported graphs take raw series.

    channel: training-set mean/std per channel (buffers, saved with the weights);
    series: each series by its own mean/std per channel; none: identity.
    """

    def __init__(self, mode: str, channels: int):
        super().__init__()
        self.mode = mode
        self.eps = NORM_EPS  # an attribute, not a global, so torch.jit.script compiles forward
        self.register_buffer("mean", torch.zeros(1, channels, 1))
        self.register_buffer("std", torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length)
        if self.mode == "channel":
            return (x - self.mean) / self.std
        if self.mode == "series":
            mean = x.mean(dim=2, keepdim=True)
            std = x.std(dim=2, keepdim=True, unbiased=False)
            return (x - mean) / (std + self.eps)
        return x

    @torch.no_grad()
    def fit(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(torch.where(std > NORM_EPS, std, torch.ones_like(std)).reshape(self.std.shape))


def _w(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class SameConv1d(nn.Conv1d):
    """Conv1d whose output keeps the input length, padding (k-1)//2 left and the rest right.

    Explicit padding instead of padding="same", which copies the input for even kernels and
    warns on every call; the split matches Keras 'same' used by Wang et al.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(c_in, c_out, kernel)
        self.pad_left, self.pad_right = (kernel - 1) // 2, kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, (self.pad_left, self.pad_right)), self.weight, self.bias)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(SameConv1d(c_in, c_out, kernel), nn.BatchNorm1d(c_out), nn.ReLU())


class FCN(nn.Module):
    """Wang et al. 2017 fully convolutional network: 128/256/128 filters, kernels 8/5/3, GAP."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = _w(128, width), _w(256, width), _w(128, width)
        self.features = nn.Sequential(ConvBlock(c_in, c1, 8), ConvBlock(c1, c2, 5), ConvBlock(c2, c3, 3))
        self.head = nn.Linear(c3, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        # global average pooling over length (the last axis, so a 2D-layout copy pools the same way)
        return self.head(self.features(x).mean(dim=-1).flatten(1))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(c_in, c_out, 8), ConvBlock(c_out, c_out, 5),
                                  SameConv1d(c_out, c_out, 3), nn.BatchNorm1d(c_out))
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Wang et al. 2017 ResNet: three residual blocks (64/128/128 filters), global pooling."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        c1, c2 = _w(64, width), _w(128, width)
        self.features = nn.Sequential(ResidualBlock(c_in, c1), ResidualBlock(c1, c2), ResidualBlock(c2, c2))
        self.head = nn.Linear(c2, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=-1).flatten(1))


class PairMaxPool1d(nn.MaxPool1d):
    """MaxPool1d(2). In training it takes the max over pairs of a reshaped last axis: the same values and
    the same gradients (to the first maximum of each pair), at about 1.5x the speed of max_pool1d's
    CPU kernel with indices; in eval mode (and so in every export) it is the plain MaxPool1d."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.max_pool1d(x, 2)
        pairs = x.shape[-1] // 2  # an odd last step is dropped, as MaxPool1d(2) does
        return x[..., :2 * pairs].unflatten(-1, [pairs, 2]).max(dim=-1).values


class SimpleCNN(nn.Sequential):
    """The tutorials' network: Conv1d-ReLU-MaxPool-Flatten-Linear, sized from the length."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        filters = _w(16, width)
        super().__init__(nn.Conv1d(c_in, filters, 3, padding=1), nn.ReLU(), PairMaxPool1d(), nn.Flatten(),
                         nn.Linear(filters * (length // 2), n_outputs))


class MLP(nn.Sequential):
    """Two hidden layers on the flattened series, like the tutorials' Simple_NN."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        hidden = _w(128, width)
        super().__init__(nn.Flatten(), nn.Linear(c_in * length, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


class Linear(nn.Sequential):
    """A linear model on the flattened series: the baseline."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        super().__init__(nn.Flatten(), nn.Linear(c_in * length, n_outputs))


class SequenceModel(nn.Module):
    """Normalisation followed by the network; input (batch, channels, length), output raw scores."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.normalize = Normalize(c.normalize, c.in_channels)
        if c.name == "fcn":
            self.net = FCN(c.in_channels, c.n_outputs, c.width)
        elif c.name == "resnet":
            self.net = ResNet(c.in_channels, c.n_outputs, c.width)
        elif c.name == "simple-cnn":
            self.net = SimpleCNN(c.in_channels, c.length, c.n_outputs, c.width)
        elif c.name == "mlp":
            self.net = MLP(c.in_channels, c.length, c.n_outputs, c.width)
        else:
            self.net = Linear(c.in_channels, c.length, c.n_outputs, c.width)

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length) -> (batch, n_outputs)
        return self.net(self.normalize(x))


def build_model(config: ModelConfig) -> SequenceModel:
    """A fresh model for `config`; fixed-length models need config.length."""
    shortest = MIN_LENGTH.get(config.name, 1)
    if config.fixed_length and config.length < shortest:
        raise PipelineError(f"--model {config.name} needs series of length {shortest} or more")
    return SequenceModel(config)
