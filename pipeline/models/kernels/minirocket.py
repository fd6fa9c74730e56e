"""MiniRocket (Dempster, Schmidt, Webb, KDD 2021): 84 fixed kernels, exponentially spread dilations, biases from
quantiles of training responses, PPV."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.kernels.common import (KERNEL_LENGTH, channel_combinations, golden_quantiles, rounding_scale,
                                     series_per_call, standardise_in_place, transform_in_chunks)

# the 84 MiniRocket kernels: weight 2 at three of the nine positions, -1 at the others
MINIROCKET_INDICES = tuple(itertools.combinations(range(KERNEL_LENGTH), 3))
MINIROCKET_FEATURES = 10_000
MINIROCKET_MAX_DILATIONS = 32


def minirocket_kernels() -> Tensor:
    """(84, 9): -1 everywhere, 2 at each combination's three indices."""
    w = -torch.ones(len(MINIROCKET_INDICES), KERNEL_LENGTH)
    for k, idx in enumerate(MINIROCKET_INDICES):
        w[k, list(idx)] = 2.0
    return w


def minirocket_dilations(length: int, num_features: int) -> tuple[list[int], list[int]]:
    """The paper's dilations (exponentially spread up to (length - 1) / 8, at most 32 per kernel) and the
    number of features (biases) per kernel at each."""
    per_kernel = max(1, num_features // len(MINIROCKET_INDICES))
    most = min(per_kernel, MINIROCKET_MAX_DILATIONS)
    multiplier = per_kernel / most
    top = math.log2((length - 1) / (KERNEL_LENGTH - 1))
    grid = torch.logspace(0, top, most, base=2, dtype=torch.float64).to(torch.int32)  # truncates, as astype does
    dilations, counts = torch.unique(grid, return_counts=True)
    per_dilation = (counts.double() * multiplier).to(torch.int32).tolist()
    remainder, i = per_kernel - sum(per_dilation), 0
    while remainder > 0:
        per_dilation[i] += 1
        remainder -= 1
        i = (i + 1) % len(per_dilation)
    return [int(d) for d in dilations.tolist()], per_dilation


class PPVBlock(nn.Module):
    """MiniRocket at one dilation: the 84 kernels (masked to their channel combinations), then for each kernel
    its biases' proportions of positive values, over the whole output (even padding) or only where the kernel
    does not overlap the padding (odd), alternating as in the paper."""

    def __init__(self, channels: int, length: int, dilation: int, features: int, odd_start: int):
        super().__init__()
        self.dilation, self.padding = dilation, (KERNEL_LENGTH - 1) * dilation // 2
        kernels = len(MINIROCKET_INDICES)
        self.register_buffer("weight", minirocket_kernels()[:, None, :].repeat(1, channels, 1))  # (84, C, 9)
        self.register_buffer("bias", torch.zeros(kernels, features))
        valid = torch.ones(kernels, 1, length)
        p = self.padding
        for k in range(kernels):
            if (odd_start + k) % 2 == 1 and length > 2 * p:
                valid[k, 0, :p] = 0.0
                valid[k, 0, length - p:] = 0.0
        self.register_buffer("valid", valid)  # (84, 1, L): the positions each kernel's PPV counts
        self.register_buffer("count", valid.sum(-1))  # (84, 1)
        # the kernels alternate between counting the whole output and only where they do not overlap the
        # padding: the halves k = 0, 2, ... and k = 1, 3, ..., each convolved over just the positions it counts
        self.unpadded = tuple(bool(valid[half, 0, 0] == 0) for half in (0, 1))

    def operations(self, length: int) -> int:
        """Per series: the convolution's multiply-adds (2 each) and one comparison and one sum per bias and step."""
        kernels, channels = self.weight.shape[0], self.weight.shape[1]
        return 2 * kernels * channels * KERNEL_LENGTH * length + 2 * self.bias.numel() * length

    def conv(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 84, L)
        return F.conv1d(x, self.weight, dilation=self.dilation, padding=self.padding)

    # bytes per compared element while a half's comparison is counted: its bool and its float copy
    BYTES_PER_COMPARISON = 5

    def bytes_per_series(self) -> int:
        """About the largest working memory of one series in this block: a half's comparison tensor."""
        length, features = self.valid.shape[-1], self.bias.shape[1]
        positions = max(length - (2 * self.padding if odd else 0) for odd in self.unpadded)
        return self.BYTES_PER_COMPARISON * (self.weight.shape[0] // 2) * features * positions

    def halves(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per half of the kernels (k = 0, 2, ... and 1, 3, ...): its responses at the positions its PPV counts,
        (batch, 42, L or L - 2 * padding), and its biases (42, features). An odd kernel's region is the
        convolution without padding, so no mask is multiplied and nothing outside the region is computed."""
        return [(F.conv1d(x, self.weight[half::2], dilation=self.dilation,
                          padding=0 if self.unpadded[half] else self.padding), self.bias[half::2]) for half in (0, 1)]

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 84 * features)
        # per half one (batch, 42, features, L) comparison, counted as it is made: the largest intermediate is
        # the bias count times a convolution output of one half, and the runtime bounds the series per call
        ppv = [(c.unsqueeze(2) > b.unsqueeze(-1)).to(x.dtype).sum(-1) / c.shape[-1] for c, b in self.halves(x)]
        return torch.stack(ppv, dim=2).flatten(1)  # (batch, 42, 2, features): kernel 2i + half, the paper's order

    def near_ties(self, x: Tensor) -> Tensor:
        """(batch, 84 * features): how many of each feature's comparisons sit within rounding of its bias."""
        c = self.conv(x)
        terms = KERNEL_LENGTH * int((self.weight[:, :, 0] != 0).sum(1).max())
        band = rounding_scale(x, self.weight, self.dilation, self.padding, terms)
        near = ((c.unsqueeze(2) - self.bias.unsqueeze(-1)).abs() <= band.unsqueeze(2)).to(x.dtype)
        return (near * self.valid).sum(-1).flatten(1)

    @torch.no_grad()
    def fit(self, x: Tensor, combos: Tensor, quantiles: Tensor, g: torch.Generator) -> None:
        """Channel combinations (84, C), then each kernel's biases: the quantiles of its convolution of one
        training series drawn at random."""
        self.weight.mul_(combos[:, :, None])
        for k in range(self.weight.shape[0]):
            series = x[int(torch.randint(len(x), (1,), generator=g))]
            c = F.conv1d(series[None], self.weight[k:k + 1], dilation=self.dilation, padding=self.padding)[0, 0]
            self.bias[k] = torch.quantile(c, quantiles[k])


class MiniRocketTransform(nn.Module):
    """MiniRocket's features of a (batch, C, L) series: about `num_features` PPVs (84 kernels x dilations x
    biases), then standardised with the training features' mean and std (+ 1e-8, as the paper's code)."""

    def __init__(self, channels: int, length: int, num_features: int = MINIROCKET_FEATURES):
        super().__init__()
        dilations, per_dilation = minirocket_dilations(length, num_features)
        self.blocks = nn.ModuleList(PPVBlock(channels, length, d, f, i % 2)
                                    for i, (d, f) in enumerate(zip(dilations, per_dilation)))
        self.n_features = len(MINIROCKET_INDICES) * sum(per_dilation)
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))

    def raw(self, x: Tensor) -> Tensor:
        return torch.cat([block(x) for block in self.blocks], dim=1)

    def bytes_per_series(self) -> int:
        return max(block.bytes_per_series() for block in self.blocks)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, features)
        return (self.raw(x) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Channel combinations and biases in the paper's order (all combinations first, then per dilation and
        kernel a random series), then the feature statistics of every training series; their standardised
        features (n, F), each computed once."""
        kernels = len(MINIROCKET_INDICES)
        combos = channel_combinations(x.shape[1], kernels * len(self.blocks), g)
        quantiles = golden_quantiles(self.n_features).view(-1)
        start = 0
        for i, block in enumerate(self.blocks):
            f = block.bias.shape[1]
            q = quantiles[start:start + kernels * f].view(kernels, f)
            block.fit(x, combos[i * kernels:(i + 1) * kernels], q, g)
            start += kernels * f
        raw = transform_in_chunks(self.raw, x, series_per_call(self.bytes_per_series()))
        return standardise_in_place(raw, self.mean, self.std)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features, how far each standardised feature may move when near-tie comparisons flip)."""
        ties = torch.cat([block.near_ties(x) / block.count.repeat_interleave(block.bias.shape[1], 0).view(-1)
                          for block in self.blocks], dim=1)
        return self(x), ties / self.std
