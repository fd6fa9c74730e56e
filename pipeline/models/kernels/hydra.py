"""Hydra (Dempster, Schmidt, Webb, DMKD 2023): groups of competing random kernels, counting which wins."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.kernels.common import (KERNEL_LENGTH, ROUNDING_FACTOR, UNIT_ROUNDOFF, series_per_call,
                                           transform_in_chunks)

HYDRA_KERNELS, HYDRA_GROUPS = 8, 64


def hydra_dilations(length: int) -> list[int]:
    """Hydra's dilations: powers of two up to (length - 1) / 8."""
    return [2 ** i for i in range(int(math.log2((length - 1) / (KERNEL_LENGTH - 1))) + 1)]


class HydraBlock(nn.Module):
    """Hydra at one dilation on one representation (the series or its first difference): `groups` groups of
    `kernels` random kernels (zero mean, unit L1 norm) on a sum of channels; at each position the group's
    largest response adds its value to its kernel's count_max and the smallest adds 1 to its count_min."""

    def __init__(self, channels: int, kernels: int, groups: int, dilation: int):
        super().__init__()
        self.dilation, self.padding, self.groups = dilation, (KERNEL_LENGTH - 1) * dilation // 2, groups
        self.register_buffer("weight", torch.zeros(groups * kernels, 1, KERNEL_LENGTH))
        self.register_buffer("mix", torch.ones(groups, channels))  # how often each group sums each channel
        self.register_buffer("kernel_index", torch.arange(kernels).view(1, 1, kernels, 1))

    def operations(self, length: int) -> int:
        """Per series: the channel sums, the grouped convolution, the max and min, and the two counts."""
        groups, channels = self.mix.shape
        responses = self.weight.shape[0] * length
        return 2 * groups * channels * length + 2 * KERNEL_LENGTH * responses + 2 * responses + 4 * responses

    def bytes_per_series(self, length: int) -> int:
        """About the largest working memory of one series here: the responses (batch, groups, kernels, L) as
        floats, and the winners' one-hot comparison with them as bool and float."""
        return 9 * self.weight.shape[0] * length

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, groups, kernels, L') responses, and the group sums they convolve (batch, groups, L')."""
        mixed = torch.matmul(self.mix, x)
        z = F.conv1d(mixed, self.weight, dilation=self.dilation, padding=self.padding, groups=self.groups)
        return z.unflatten(1, (self.groups, -1)), mixed

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 2 * groups * kernels)
        z, _ = self.scores(x)
        top, top_index = z.max(2)  # (batch, groups, L')
        low_index = z.argmin(2)
        count_max = ((top_index.unsqueeze(2) == self.kernel_index).to(x.dtype) * top.unsqueeze(2)).sum(-1)
        count_min = (low_index.unsqueeze(2) == self.kernel_index).to(x.dtype).sum(-1)
        return torch.cat([count_max, count_min], dim=1).flatten(1)

    def near_ties(self, x: Tensor) -> Tensor:
        """(batch, 2 * groups * kernels): how far each count may move when a winner within rounding of another
        kernel's response loses to it (its value for count_max, 1 for count_min)."""
        z, mixed = self.scores(x)
        band = F.conv1d(mixed.abs(), self.weight.abs(), dilation=self.dilation, padding=self.padding,
                        groups=self.groups).unflatten(1, (self.groups, -1)).amax(2, keepdim=True)
        band = 2 * band * (ROUNDING_FACTOR * (KERNEL_LENGTH * int(self.mix.sum(1).max()) + 4) * UNIT_ROUNDOFF)
        top, low = z.amax(2, keepdim=True), z.amin(2, keepdim=True)
        near_top, near_low = (top - z) <= band, (z - low) <= band
        open_top = near_top & (near_top.sum(2, keepdim=True) >= 2)  # a position whose winner could change
        open_low = near_low & (near_low.sum(2, keepdim=True) >= 2)
        moves_max = (open_top.to(x.dtype) * top.abs()).sum(-1)
        moves_min = open_low.to(x.dtype).sum(-1)
        return torch.cat([moves_max, moves_min], dim=1).flatten(1)

    @torch.no_grad()
    def fit(self, channels: int, g: torch.Generator) -> None:
        w = torch.randn(self.weight.shape, generator=g)
        w -= w.mean(-1, keepdim=True)
        self.weight.copy_(w / w.abs().sum(-1, keepdim=True))
        if channels > 1:  # the multivariate code: each group sums clip(C // 2, 2, 8) channels drawn with replacement
            per_group = min(max(channels // 2, 2), 8)
            picks = torch.randint(0, channels, (self.groups, per_group), generator=g)
            self.mix.zero_().scatter_add_(1, picks, torch.ones_like(picks, dtype=self.mix.dtype))


class SparseScale(nn.Module):
    """Hydra's SparseScaler: sqrt of the clamped counts, standardised, zeros kept at zero."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def forward(self, counts: Tensor) -> Tensor:
        root = counts.clamp(min=0).sqrt()
        return (root - self.mean) * (root != 0).to(root.dtype) / self.std

    @torch.no_grad()
    def fit(self, counts: Tensor) -> None:
        root = counts.double().clamp(min=0).sqrt()
        epsilon = (root == 0).double().mean(0) ** 4 + 1e-8
        self.mean.copy_(root.mean(0))
        self.std.copy_(root.std(0) + epsilon)

    def moves(self, counts: Tensor, delta: Tensor) -> Tensor:
        """How far each scaled feature may move when its count moves by up to `delta` either way: the scaled
        value at both ends of [count - delta, count + delta] and, when 0 lies inside, at 0 and just above."""
        here = self(counts)
        ends = [self(counts - delta), self(counts + delta)]
        spans = ((counts - delta) <= 0) & ((counts + delta) > 0)
        just_above = -self.mean / self.std
        ends += [torch.where(spans, torch.zeros_like(here), here), torch.where(spans, just_above.expand_as(here), here)]
        return torch.stack([(e - here).abs() for e in ends]).amax(0) * (delta > 0).to(here.dtype)


class HydraTransform(nn.Module):
    """Hydra's features: per dilation, half the groups on the series and half on its first difference."""

    def __init__(self, channels: int, length: int, groups: int = HYDRA_GROUPS, kernels: int = HYDRA_KERNELS):
        super().__init__()
        half = max(1, groups // 2)
        dilations = hydra_dilations(length)
        self.length = length
        self.series = nn.ModuleList(HydraBlock(channels, kernels, half, d) for d in dilations)
        self.diffs = nn.ModuleList(HydraBlock(channels, kernels, half, d) for d in dilations)
        self.n_features = 4 * half * kernels * len(dilations)
        self.scale = SparseScale(self.n_features)

    def raw(self, x: Tensor) -> Tensor:
        diff = x[:, :, 1:] - x[:, :, :-1]
        parts = []
        for on_series, on_diff in zip(self.series, self.diffs):
            parts += [on_series(x), on_diff(diff)]
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale(self.raw(x))

    def bytes_per_series(self) -> int:
        return max(block.bytes_per_series(self.length) for block in (*self.series, *self.diffs))

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        for on_series, on_diff in zip(self.series, self.diffs):
            on_series.fit(x.shape[1], g)
            on_diff.fit(x.shape[1], g)
        counts = transform_in_chunks(self.raw, x, series_per_call(self.bytes_per_series()))
        self.scale.fit(counts)
        return transform_in_chunks(self.scale, counts)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        diff = x[:, :, 1:] - x[:, :, :-1]
        parts = []
        for on_series, on_diff in zip(self.series, self.diffs):
            parts += [on_series.near_ties(x), on_diff.near_ties(diff)]
        counts = self.raw(x)
        return self.scale(counts), self.scale.moves(counts, torch.cat(parts, dim=1))
