"""MultiRocket (Tan, Dempster, Bergmeir, Webb 2022): MiniRocket's kernels with four pooling operators on the
series and its first difference; MultiRocket-Hydra puts Hydra's features beside them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.kernels.common import KERNEL_LENGTH, channel_combinations, golden_quantiles, rounding_scale, \
    series_per_call, standardise_in_place, transform_in_chunks
from pipeline.models.kernels.hydra import HYDRA_GROUPS, HydraTransform
from pipeline.models.kernels.minirocket import MINIROCKET_INDICES, PPVBlock, minirocket_dilations

MULTIROCKET_FEATURES = 50_000  # MultiRocket's default: 4 pooling operators x 2 representations x 6,250


class PoolingBlock(PPVBlock):
    """MultiRocket at one dilation: the MiniRocket kernels and biases with four pooling operators of each
    comparison, in the reference code's definitions: PPV; LSPV, the longest gap between consecutive positions
    below the bias (the region's first and last positions bound it); MPV, the mean of (response + bias) where
    the response is above it (0 if nowhere); MIPV, the mean index of those positions (-1 if none)."""

    def __init__(self, channels: int, length: int, dilation: int, features: int, odd_start: int):
        super().__init__(channels, length, dilation, features, odd_start)
        # `relative` and `last` are no longer read (forward works on each half's own region); they stay in the
        # state dict so that runs saved before load as they are
        first = self.valid.argmax(-1, keepdim=True)  # (84, 1, 1): where each kernel's region starts
        index = torch.arange(length).view(1, 1, length)
        self.register_buffer("relative", (index - first).clamp(min=0).float() * self.valid)  # index in the region
        last = (self.valid * index).amax(-1, keepdim=True)
        self.register_buffer("last", (index == last).float())  # the region's last position
        self.steps = [2 ** i for i in range(max(1, math.ceil(math.log2(length))))]

    def operations(self, length: int) -> int:
        """PPVBlock's, and per bias and step: the other comparison, three products and sums, the prefix maximum."""
        return super().operations(length) + (8 + 2 * len(self.steps)) * self.bias.numel() * length

    # the four operators hold about six float copies of a half's comparison (above, below, products, the prefix
    # maximum and its shifted copy) and two bools
    BYTES_PER_COMPARISON = 26

    def pools(self, c: Tensor, bias: Tensor) -> Tensor:  # (batch, K, n), (K, features) -> (batch, 4, K, features)
        """The four operators of responses `c` over the positions a half of the kernels counts (n of them)."""
        n = c.shape[-1]
        index = torch.arange(n, dtype=c.dtype, device=c.device)  # the position in the region
        response, bias = c.unsqueeze(2), bias.unsqueeze(-1)  # (batch, K, 1, n), (K, features, 1)
        above = (response > bias).to(c.dtype)
        below = (response < bias).to(c.dtype)
        count = above.sum(-1)
        ppv = count / n
        mpv = (above * (response + bias)).sum(-1) / count.clamp(min=1)
        mipv = torch.where(count > 0, (above * index).sum(-1) / count.clamp(min=1), -torch.ones_like(count))
        # the last position below the bias up to each position: a prefix maximum in log2(n) doubling steps
        latest = below * index
        for step in (2 ** i for i in range(max(1, math.ceil(math.log2(n))))):
            if step < n:  # shifted right by `step`, 0 before the start (a slice, then a Pad: ExecuTorch's pad
                latest = torch.maximum(latest, F.pad(latest[..., :-step], (step, 0)))  # kernels refuse a crop)
        before = F.pad(latest[..., :-1], (1, 0))  # strictly before each position (0 at the start, as the code)
        ends = torch.cat([below[..., :-1], torch.ones_like(below[..., -1:])], dim=-1)  # and the region's last
        lspv = ((index - before) * ends).amax(-1)
        return torch.stack([ppv, lspv, mpv, mipv], dim=1)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 4, 84 * features)
        pooled = [self.pools(c, b) for c, b in self.halves(x)]  # (batch, 4, 42, features) each
        return torch.stack(pooled, dim=3).flatten(2)  # (batch, 4, 42, 2, features): kernel 2i + half

    def near_ties(self, x: Tensor) -> Tensor:
        """(batch, 4, 84 * features): how far each pooled value may move if the comparisons within rounding
        of the bias went either way: PPV by their share; MPV and MIPV as far as a mean of the remaining positions
        can go; LSPV, whose runs join or split, by the region's whole length."""
        c = self.conv(x)
        terms = KERNEL_LENGTH * int((self.weight[:, :, 0] != 0).sum(1).max())
        band = rounding_scale(x, self.weight, self.dilation, self.padding, terms).unsqueeze(2)
        response, bias = c.unsqueeze(2), self.bias.unsqueeze(-1)
        near = ((response - bias).abs() <= band).to(c.dtype) * self.valid
        ties = near.sum(-1)
        open_ = (ties > 0).to(c.dtype)
        region = self.count.unsqueeze(0)
        reach = (response.abs() + bias.abs()).mul(self.valid).amax(-1) * 2  # the largest |response + bias|
        moves = torch.stack([ties / region, region * open_, reach * open_,
                             (region + 1) * open_], dim=1)
        return moves.flatten(2)


class MultiRocketTransform(nn.Module):
    """MultiRocket's features (Tan, Dempster, Bergmeir, Webb 2022): MiniRocket's kernels with biases fitted
    separately to the series and to its first difference, four pooling operators each; standardised."""

    def __init__(self, channels: int, length: int, num_features: int = MULTIROCKET_FEATURES):
        super().__init__()
        per_representation = max(len(MINIROCKET_INDICES), num_features // 8)
        self.parts = nn.ModuleList()
        for n in (length, length - 1):
            dilations, per_dilation = minirocket_dilations(n, per_representation)
            self.parts.append(nn.ModuleList(PoolingBlock(channels, n, d, f, i % 2)
                                            for i, (d, f) in enumerate(zip(dilations, per_dilation))))
        self.n_features = sum(4 * block.bias.numel() for part in self.parts for block in part)
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))

    def _each(self, x: Tensor, what: str) -> Tensor:
        diff = x[:, :, 1:] - x[:, :, :-1]
        out = []
        for part, series in zip(self.parts, (x, diff)):
            pooled = torch.cat([block(series) if what == "forward" else block.near_ties(series) for block in part],
                               dim=2)  # (batch, 4, features)
            out.append(pooled.flatten(1))  # the operators' blocks one after another, as the reference lays them
        return torch.cat(out, dim=1)

    def raw(self, x: Tensor) -> Tensor:
        return self._each(x, "forward")

    def bytes_per_series(self) -> int:
        return max(block.bytes_per_series() for part in self.parts for block in part)

    def forward(self, x: Tensor) -> Tensor:
        return (self.raw(x) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        diff = x[:, :, 1:] - x[:, :, :-1]
        kernels = len(MINIROCKET_INDICES)
        for part, series in zip(self.parts, (x, diff)):
            combos = channel_combinations(x.shape[1], kernels * len(part), g)
            quantiles = golden_quantiles(sum(block.bias.numel() for block in part))
            start = 0
            for i, block in enumerate(part):
                f = block.bias.shape[1]
                block.fit(series, combos[i * kernels:(i + 1) * kernels],
                          quantiles[start:start + kernels * f].view(kernels, f), g)
                start += kernels * f
        raw = transform_in_chunks(self.raw, x, series_per_call(self.bytes_per_series()))
        return standardise_in_place(raw, self.mean, self.std)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self(x), self._each(x, "near_ties") / self.std


class MultiRocketHydraTransform(nn.Module):
    """MultiRocket's and Hydra's features side by side (aeon's MultiRocketHydra), each scaled its own way."""

    def __init__(self, channels: int, length: int, width: float = 1.0):
        super().__init__()
        features = max(8 * len(MINIROCKET_INDICES), round(MULTIROCKET_FEATURES * width))
        self.multirocket = MultiRocketTransform(channels, length, features)
        self.hydra = HydraTransform(channels, length, groups=max(2, 2 * round(HYDRA_GROUPS // 2 * width)))
        self.n_features = self.multirocket.n_features + self.hydra.n_features

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.multirocket(x), self.hydra(x)], dim=1)

    def bytes_per_series(self) -> int:
        return max(self.multirocket.bytes_per_series(), self.hydra.bytes_per_series())

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        return torch.cat([self.multirocket.fit(x, g), self.hydra.fit(x, g)], dim=1)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        (a, da), (b, db) = self.multirocket.feature_bounds(x), self.hydra.feature_bounds(x)
        return torch.cat([a, b], dim=1), torch.cat([da, db], dim=1)
