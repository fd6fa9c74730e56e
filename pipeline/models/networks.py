"""The networks of the model registry (pipeline.settings.config.MODELS names each by its class here): FCN, ResNet,
InceptionTime, LITE, the simple CNN, the MLP and the linear baseline, with their building blocks (and the kernel
models of pipeline.models.kernels). Each maps a
normalised (batch, channels, length) series to (batch, n_outputs); pipeline/models/build.py wraps it with the input
normalisation and the output layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.kernels import Hydra, MiniRocket, MultiRocketHydra
from pipeline.models.sizing import AnyLength, FixedLength

KERNEL_NETWORKS = (MiniRocket, Hydra, MultiRocketHydra)  # the registry's kernel models, from pipeline.models.kernels


def _w(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class SameConv1d(nn.Conv1d):
    """Conv1d whose output keeps the input length: of the dilation * (k - 1) padded steps, half (rounded
    down) go left and the rest right.

    Explicit padding instead of padding="same", which copies the input for even kernels and
    warns on every call; the split matches Keras/TensorFlow 'same' used by the papers' code.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, dilation: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, dilation=dilation, groups=groups, bias=bias)
        total = dilation * (kernel - 1)
        self.pad_left, self.pad_right = total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, (self.pad_left, self.pad_right)), self.weight, self.bias)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(SameConv1d(c_in, c_out, kernel), nn.BatchNorm1d(c_out), nn.ReLU())


def per_step_head(weight: Tensor, bias: Tensor, features: Tensor) -> Tensor:
    """A linear head (weight (K, C), bias (K,)) applied at every time step, a 1x1 convolution: (batch, C, [1,]
    length) -> (batch, K, length). Tensors, not the nn.Linear: TorchScript compiles a free function once, for the
    first module type it is given."""
    return torch.matmul(weight, features.flatten(1, -2)) + bias.unsqueeze(-1)


class GlobalPooled:
    """A network ending in global average pooling over length and a linear head (fcn, resnet, inception, lite,
    unet): its class activation maps (Zhou et al. 2016) are exact, the head's weights times the last feature maps,
    and the mean over length of an output's map plus the head's bias is that output's score. With `per_step`
    (--window-label each) there is no pool: the head scores every time step, (batch, n_outputs, length)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.per_step = False  # set by pipeline.models.build from ModelConfig.per_step (an instance attribute for
        # TorchScript)

    def feature_maps(self, x: Tensor) -> Tensor:  # (batch, channels, [1,] length): a 2D-layout copy adds the 1
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.per_step:
            return per_step_head(self.head.weight, self.head.bias, self.feature_maps(x))
        return self.head(global_pool(self.feature_maps(x)))

    def scores_and_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(scores (batch, n_outputs), maps (batch, n_outputs, length)) from one pass over the convolutions."""
        features = self.feature_maps(x)
        scores = self.head(global_pool(features))
        maps = torch.matmul(self.head.weight, features.flatten(1, -2))  # (K, C) @ (batch, C, length)
        return scores, maps


def global_pool(features: Tensor) -> Tensor:
    """Global average pooling over length: (batch, C, length) or a 2D-layout copy's (batch, C, 1, length) ->
    (batch, C). The 2D form averages over its last two axes with the dims kept, the form XNNPACK (ExecuTorch)
    runs as its global average pool: the whole network is then one delegate call."""
    if features.dim() == 4:
        return features.mean(dim=(-2, -1), keepdim=True).flatten(1)
    return features.mean(dim=-1)


class FCN(GlobalPooled, AnyLength, nn.Module):
    """Wang et al. 2017 fully convolutional network: 128/256/128 filters, kernels 8/5/3, GAP."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = _w(128, width), _w(256, width), _w(128, width)
        self.features = nn.Sequential(ConvBlock(c_in, c1, 8), ConvBlock(c1, c2, 5), ConvBlock(c2, c3, 3))
        self.head = nn.Linear(c3, n_outputs)


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(c_in, c_out, 8), ConvBlock(c_out, c_out, 5),
                                  SameConv1d(c_out, c_out, 3), nn.BatchNorm1d(c_out))
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(GlobalPooled, AnyLength, nn.Module):
    """Wang et al. 2017 ResNet: three residual blocks (64/128/128 filters), global pooling."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        c1, c2 = _w(64, width), _w(128, width)
        self.features = nn.Sequential(ResidualBlock(c_in, c1), ResidualBlock(c1, c2), ResidualBlock(c2, c2))
        self.head = nn.Linear(c2, n_outputs)


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


class SimpleCNN(FixedLength, nn.Sequential):
    """The tutorials' network: Conv1d-ReLU-MaxPool-Flatten-Linear, sized from the length."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        filters = _w(16, width)
        super().__init__(nn.Conv1d(c_in, filters, 3, padding=1), nn.ReLU(), PairMaxPool1d(), nn.Flatten(),
                         nn.Linear(filters * (length // 2), n_outputs))


class MLP(FixedLength, nn.Sequential):
    """Two hidden layers on the flattened series, like the tutorials' Simple_NN."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        hidden = _w(128, width)
        super().__init__(nn.Flatten(), nn.Linear(c_in * length, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


class Linear(FixedLength, nn.Sequential):
    """A linear model on the flattened series: the baseline."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        super().__init__(nn.Flatten(), nn.Linear(c_in * length, n_outputs))


class SamePool1d(nn.MaxPool1d):
    """Max-pool of 3, stride 1, padded so the length stays (Keras' MaxPool1D(3, 1, 'same'): padded steps
    never win). Calls the pooling that also returns indices: the one without them (torch.max_pool1d) fixes
    the series length when torch.export traces it, so pt2/AOTInductor graphs would lose dynamic length."""

    def __init__(self):
        super().__init__(3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool1d(x, self.kernel_size, self.stride, self.padding, return_indices=True)[0]


class InceptionModule(nn.Module):
    """One Inception module: a 1x1 bottleneck (when the input has more than one channel), three
    convolutions of kernels 40/20/10 on it, and a max-pool (3, stride 1) + 1x1 convolution branch on
    the input; the four concatenated, batch-normalised, ReLU. No biases, as in the paper's code."""

    def __init__(self, c_in: int, filters: int, bottleneck: int, kernels: tuple[int, ...] = (40, 20, 10)):
        super().__init__()
        self.bottleneck = nn.Conv1d(c_in, bottleneck, 1, bias=False) if c_in > 1 else nn.Identity()
        width = bottleneck if c_in > 1 else c_in
        self.convs = nn.ModuleList(SameConv1d(width, filters, k, bias=False) for k in kernels)
        self.pool = SamePool1d()
        self.pool_conv = nn.Conv1d(c_in, filters, 1, bias=False)
        self.bn = nn.BatchNorm1d(filters * (len(kernels) + 1))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        z = self.bottleneck(x)
        branches = [conv(z) for conv in self.convs]
        branches.append(self.pool_conv(self.pool(x)))
        return self.relu(self.bn(torch.cat(branches, dim=1)))


class InceptionBlock(nn.Module):
    """Three Inception modules and the residual shortcut around them (1x1 convolution + BatchNorm)."""

    def __init__(self, c_in: int, filters: int, bottleneck: int, modules: int = 3):
        super().__init__()
        c_out = 4 * filters
        self.body = nn.Sequential(*(InceptionModule(c_in if i == 0 else c_out, filters, bottleneck)
                                    for i in range(modules)))
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Inception(GlobalPooled, AnyLength, nn.Module):
    """One network of InceptionTime (Ismail Fawaz et al. 2020, "InceptionTime: Finding AlexNet for time
    series classification", Data Mining and Knowledge Discovery 34): depth 6 (two residual blocks of three
    Inception modules), bottleneck 32, kernels 40/20/10 plus the max-pool branch, 32 filters per branch,
    global average pooling. 420,192 trainable parameters before the output layer on univariate series, as
    the paper's code builds it. InceptionTime is the ensemble of five: `--model inception --ensemble 5`."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0, depth: int = 6):
        super().__init__()
        filters, bottleneck = _w(32, width), _w(32, width)
        blocks, c = [], c_in
        for _ in range(depth // 3):
            blocks.append(InceptionBlock(c, filters, bottleneck))
            c = 4 * filters
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c, n_outputs)


def lite_filters(c_in: int, sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64)) -> Tensor:
    """LITE's fixed hand-crafted filters (Ismail-Fawaz et al. 2022, "Deep learning for time series
    classification using new hand-crafted convolution filters"): 6 increase detectors (-1, 1, -1, ...),
    6 decrease detectors (1, -1, 1, ...) of lengths `sizes`, and 5 peak detectors of lengths 1.5 k for k in
    sizes[1:]; each sums over all channels. All sit in one (17, c_in, 96) kernel, each starting (k - 1) // 2
    steps before the kernel's centre, so one 'same' convolution gives every filter's own 'same' output."""
    kernels = []
    for negative in (0, 1):  # increase: even positions negative; decrease: odd positions negative
        for k in sizes:
            f = torch.ones(k, dtype=torch.float64)
            f[torch.arange(k) % 2 == negative] = -1.0
            kernels.append(f)
    for k in sizes[1:]:
        f = torch.zeros(k + k // 2, dtype=torch.float64)
        left = torch.linspace(0, 1, k // 4 + 1, dtype=torch.float64)[1:] ** 2
        right = left.flip(0)
        q = k // 4
        f[0:q], f[q:2 * q] = -left, -right
        f[2 * q:3 * q], f[3 * q:4 * q] = 2 * left, 2 * right
        f[4 * q:5 * q], f[5 * q:] = -left, -right
        kernels.append(f)
    longest = max(len(f) for f in kernels)
    weight = torch.zeros(len(kernels), c_in, longest, dtype=torch.float64)
    centre = (longest - 1) // 2
    for i, f in enumerate(kernels):
        start = centre - (len(f) - 1) // 2
        weight[i, :, start:start + len(f)] = f
    return weight.float()


class FixedFilters(SameConv1d):
    """LITE's hybrid layer: the fixed filters of `lite_filters`, never trained, then ReLU."""

    def __init__(self, c_in: int):
        weight = lite_filters(c_in)
        super().__init__(c_in, weight.shape[0], weight.shape[2], bias=False)
        with torch.no_grad():
            self.weight.copy_(weight)
        self.weight.requires_grad_(False)


class SeparableConv1d(nn.Sequential):
    """A depthwise convolution ('same' padding, dilated) followed by a 1x1 pointwise one, no biases
    (Keras SeparableConv1D)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__(SameConv1d(c_in, c_in, kernel, bias=False, dilation=dilation, groups=c_in),
                         nn.Conv1d(c_in, c_out, 1, bias=False))


class LITE(GlobalPooled, AnyLength, nn.Module):
    """LITE (Ismail-Fawaz et al. 2023, "LITE: Light Inception with boosTing tEchniques for Time Series
    Classification", IEEE DSAA): one multiplexing Inception module (three convolutions of kernels 40/20/10,
    32 filters each, no bottleneck) beside the 17 fixed hand-crafted filters, then two depthwise-separable
    convolutions (kernels 20 and 10, dilations 2 and 4, 32 filters), BatchNorm + ReLU after each, global
    average pooling. 9,814 trainable parameters before the output layer on univariate series, as in the
    paper. LITETime is the ensemble of five: `--model lite --ensemble 5`."""

    def __init__(self, c_in: int, n_outputs: int, width: float = 1.0, kernel: int = 40):
        super().__init__()
        filters = _w(32, width)
        self.convs = nn.ModuleList(SameConv1d(c_in, filters, kernel // 2 ** i, bias=False) for i in range(3))
        self.fixed = FixedFilters(c_in)
        self.fixed_relu = nn.ReLU()
        c = 3 * filters + self.fixed.out_channels
        self.bn = nn.BatchNorm1d(c)
        self.relu = nn.ReLU()
        layers = []
        for i in range(2):
            layers += [SeparableConv1d(c, filters, (kernel // 2) // 2 ** i, dilation=2 ** (i + 1)),
                       nn.BatchNorm1d(filters), nn.ReLU()]
            c = filters
        self.separable = nn.Sequential(*layers)
        self.head = nn.Linear(filters, n_outputs)

    def feature_maps(self, x: Tensor) -> Tensor:
        branches = [conv(x) for conv in self.convs]
        branches.append(self.fixed_relu(self.fixed(x)))
        z = self.relu(self.bn(torch.cat(branches, dim=1)))
        return self.separable(z)


class CausalConv1d(SameConv1d):
    """A dilated convolution that reads only the past: all dilation * (k - 1) padded steps go left, so output
    step t depends on input steps t and before."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__(c_in, c_out, kernel, dilation=dilation)
        self.pad_left, self.pad_right = dilation * (kernel - 1), 0


class TemporalBlock(nn.Module):
    """Bai, Kolter and Koltun 2018's residual block: two causal dilated convolutions with ReLUs, and the input
    (through a 1x1 convolution where the width changes) added back."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(CausalConv1d(c_in, c_out, kernel, dilation), nn.ReLU(),
                                  CausalConv1d(c_out, c_out, kernel, dilation), nn.ReLU())
        self.shortcut = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


TCN_KERNEL = 3


def tcn_levels(length: int, kernel: int = TCN_KERNEL) -> int:
    """Blocks of dilations 1, 2, 4, ... until the receptive field, 1 + 2 (k - 1)(2^levels - 1), covers `length`."""
    levels = 1
    while 1 + 2 * (kernel - 1) * (2 ** levels - 1) < length:
        levels += 1
    return levels


class TCN(AnyLength, nn.Module):
    """A temporal convolutional network (Bai, Kolter and Koltun 2018; darts' TCNModel is the peer): residual
    blocks of causal convolutions dilated 1, 2, 4, ... until the receptive field covers the training length,
    and a linear head on the last time step's features (what the whole window leads to, causally)."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        channels = _w(64, width)
        blocks, c = [], c_in
        for level in range(tcn_levels(length)):
            blocks.append(TemporalBlock(c, channels, TCN_KERNEL, 2 ** level))
            c = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, n_outputs)
        self.per_step = False  # --window-label each: the head at every step, each reading only the past (causal)
        with torch.no_grad():  # one step's features are not averaged: a tenth of the usual start keeps the first
            self.head.weight.mul_(0.1)  # scores near the output layer's base, as the pooled models' are
            self.head.bias.zero_()

    @classmethod
    def from_config(cls, c) -> nn.Module:  # any length, its depth sized from the training length
        return cls(c.in_channels, max(c.length, 1), c.n_outputs, c.width)

    def forward(self, x: Tensor) -> Tensor:
        if self.per_step:
            return per_step_head(self.head.weight, self.head.bias, self.features(x))
        return self.head(self.features(x)[..., -1].flatten(1))  # a 2D-layout copy: (batch, C, 1) -> (batch, C)


class DoubleConv(nn.Sequential):
    """Two 'same' convolutions, each with BatchNorm and ReLU: one level of the U-Net."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(ConvBlock(c_in, c_out, kernel), ConvBlock(c_out, c_out, kernel))


class Upsample2x(nn.Module):
    """Nearest-neighbour upsampling by 2 along length, cut to the length of the skip connection it meets (the
    encoder pools with ceil_mode, so odd lengths come back whole)."""

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        return torch.repeat_interleave(x, 2, dim=-1)[..., :like.shape[-1]]


class UNet(GlobalPooled, FixedLength, nn.Module):
    """A 1-D U-Net in the manner of U-Time (Perslev et al. 2019, NeurIPS): an encoder of four levels (two 'same'
    convolutions of kernel 5, BatchNorm, ReLU; 16/32/64/128 filters) with max-pooling by 2 between them, a
    bottom level of 256, and a decoder that upsamples by 2, convolves, concatenates the encoder's level of the
    same length (the skip connection) and convolves twice; so each step's features see about 250 samples of
    context at full resolution. Per step (--window-label each) its head labels every sample; otherwise the
    features are globally pooled like fcn's. Fixed to the training length, as U-Time is: its pooled lengths
    are then constants, which every export format keeps (a dynamic length's ceil-halvings are what torch.export
    cannot prove shapes through)."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0, depth: int = 4,
                 kernel: int = 5):
        super().__init__()
        sizes = [_w(16 * 2 ** i, width) for i in range(depth + 1)]
        self.down = nn.ModuleList(DoubleConv(c_in if i == 0 else sizes[i - 1], sizes[i], kernel) for i in range(depth))
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.bottom = DoubleConv(sizes[depth - 1], sizes[depth], kernel)
        self.upsample = Upsample2x()
        self.up_convs = nn.ModuleList(ConvBlock(sizes[i + 1], sizes[i], kernel) for i in reversed(range(depth)))
        self.up = nn.ModuleList(DoubleConv(2 * sizes[i], sizes[i], kernel) for i in reversed(range(depth)))
        self.head = nn.Linear(sizes[0], n_outputs)
        with torch.no_grad():  # its full-resolution features are large at the start: a tenth of the usual head
            self.head.weight.mul_(0.1)  # keeps the first scores near the output layer's base, as fcn's are
            self.head.bias.zero_()

    def feature_maps(self, x: Tensor) -> Tensor:
        skips: list[Tensor] = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for i, (conv, level) in enumerate(zip(self.up_convs, self.up)):
            skip = skips[len(skips) - 1 - i]
            x = level(torch.cat([conv(self.upsample(x, skip)), skip], dim=1))
        return x
