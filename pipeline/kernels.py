"""Convolution-kernel models: MiniRocket (Dempster, Schmidt, Webb, KDD 2021), Hydra (DMKD 2023) and
MultiRocket-Hydra (Tan et al. 2022 + Hydra). Each is a transform of fixed kernels whose biases, channel
combinations and feature statistics are fitted once from the training series (`fit`), then standardised
features and a linear head (trained in closed form by pipeline.ridge, or by gradient descent with the task's
loss). Every step is a plain tensor op, so the whole model exports as one graph; the counting comparisons
(PPV, Hydra's winning kernel) also report how far each comparison sits from flipping (`threshold_bound`),
which export verification uses to tell an engine's rounding from a real disagreement."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.sizing import FixedLength

KERNEL_LENGTH = 9
# the 84 MiniRocket kernels: weight 2 at three of the nine positions, -1 at the others
MINIROCKET_INDICES = tuple(itertools.combinations(range(KERNEL_LENGTH), 3))
MINIROCKET_FEATURES = 10_000
MINIROCKET_MAX_DILATIONS = 32
HYDRA_KERNELS, HYDRA_GROUPS = 8, 64
MULTIROCKET_FEATURES = 50_000  # MultiRocket's default: 4 pooling operators x 2 representations x 6,250
FIT_CHUNK = 64  # series per transform call while fitting (bounds memory: chunk x features x length)
# Two float32 engines may each round a sum of n products by up to about n * 2^-24 of the sum of their magnitudes
# (plus the input's own normalisation); a comparison whose margin is within ROUNDING_FACTOR * (n + 4) * 2^-24 of
# that magnitude can go either way in an engine that sums in another order.
ROUNDING_FACTOR = 4.0
UNIT_ROUNDOFF = 2.0 ** -24


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


def golden_quantiles(n: int) -> Tensor:
    """The low-discrepancy sequence (i * golden ratio) mod 1, i = 1..n, as float32 (the paper's quantiles)."""
    phi = (math.sqrt(5) + 1) / 2
    return torch.tensor([(i * phi) % 1 for i in range(1, n + 1)], dtype=torch.float32)


def channel_combinations(channels: int, combinations: int, g: torch.Generator) -> Tensor:
    """(combinations, channels) 0/1: the multivariate paper's random channel subsets (2^U(0, log2(min(C, 9) + 1))
    channels each, without replacement); all ones for one channel."""
    top = math.log2(min(channels, KERNEL_LENGTH) + 1)
    sizes = (2 ** (torch.rand(combinations, generator=g, dtype=torch.float64) * top)).to(torch.int64)
    mask = torch.zeros(combinations, channels)
    for i, size in enumerate(sizes.tolist()):
        mask[i, torch.randperm(channels, generator=g)[:size]] = 1.0
    return mask


def _rounding_scale(x: Tensor, weight: Tensor, dilation: int, padding: int, terms: int) -> Tensor:
    """Per output position, how far two float32 engines' results of this convolution may differ."""
    magnitude = F.conv1d(x.abs(), weight.abs(), dilation=dilation, padding=padding)
    return magnitude * (ROUNDING_FACTOR * (terms + 4) * UNIT_ROUNDOFF)


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

    def operations(self, length: int) -> int:
        """Per series: the convolution's multiply-adds (2 each) and one comparison and one sum per bias and step."""
        kernels, channels = self.weight.shape[0], self.weight.shape[1]
        return 2 * kernels * channels * KERNEL_LENGTH * length + 2 * self.bias.numel() * length

    def conv(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 84, L)
        return F.conv1d(x, self.weight, dilation=self.dilation, padding=self.padding)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 84 * features)
        c = self.conv(x)
        positive = (c.unsqueeze(2) > self.bias.unsqueeze(-1)).to(x.dtype)  # (batch, 84, features, L)
        return ((positive * self.valid).sum(-1) / self.count).flatten(1)

    def near_ties(self, x: Tensor) -> Tensor:
        """(batch, 84 * features): how many of each feature's comparisons sit within rounding of its bias."""
        c = self.conv(x)
        terms = KERNEL_LENGTH * int((self.weight[:, :, 0] != 0).sum(1).max())
        band = _rounding_scale(x, self.weight, self.dilation, self.padding, terms)
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

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, features)
        return (self.raw(x) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> None:
        """Channel combinations and biases in the paper's order (all combinations first, then per dilation and
        kernel a random series), then the feature statistics of every training series."""
        kernels = len(MINIROCKET_INDICES)
        combos = channel_combinations(x.shape[1], kernels * len(self.blocks), g)
        quantiles = golden_quantiles(self.n_features).view(-1)
        start = 0
        for i, block in enumerate(self.blocks):
            f = block.bias.shape[1]
            q = quantiles[start:start + kernels * f].view(kernels, f)
            block.fit(x, combos[i * kernels:(i + 1) * kernels], q, g)
            start += kernels * f
        features = transform_in_chunks(self.raw, x).double()
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0) + 1e-8)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features, how far each standardised feature may move when near-tie comparisons flip)."""
        ties = torch.cat([block.near_ties(x) / block.count.repeat_interleave(block.bias.shape[1], 0).view(-1)
                          for block in self.blocks], dim=1)
        return self(x), ties / self.std


class PoolingBlock(PPVBlock):
    """MultiRocket at one dilation: the MiniRocket kernels and biases with four pooling operators of each
    comparison, in the reference code's definitions: PPV; LSPV, the longest gap between consecutive positions
    below the bias (the region's first and last positions bound it); MPV, the mean of (response + bias) where
    the response is above it (0 if nowhere); MIPV, the mean index of those positions (-1 if none)."""

    def __init__(self, channels: int, length: int, dilation: int, features: int, odd_start: int):
        super().__init__(channels, length, dilation, features, odd_start)
        first = self.valid.argmax(-1, keepdim=True)  # (84, 1, 1): where each kernel's region starts
        index = torch.arange(length).view(1, 1, length)
        self.register_buffer("relative", (index - first).clamp(min=0).float() * self.valid)  # index in the region
        last = (self.valid * index).amax(-1, keepdim=True)
        self.register_buffer("last", (index == last).float())  # the region's last position
        self.steps = [2 ** i for i in range(max(1, math.ceil(math.log2(length))))]

    def operations(self, length: int) -> int:
        """PPVBlock's, and per bias and step: the other comparison, three products and sums, the prefix maximum."""
        return super().operations(length) + (8 + 2 * len(self.steps)) * self.bias.numel() * length

    def pools(self, c: Tensor) -> Tensor:  # (batch, 84, L) -> (batch, 4, 84, features)
        response, bias = c.unsqueeze(2), self.bias.unsqueeze(-1)  # (batch, 84, 1, L), (84, features, 1)
        above = (response > bias).to(c.dtype) * self.valid
        below = (response < bias).to(c.dtype) * self.valid
        count = above.sum(-1)
        ppv = count / self.count
        mpv = (above * (response + bias)).sum(-1) / count.clamp(min=1)
        mipv = torch.where(count > 0, (above * self.relative).sum(-1) / count.clamp(min=1), -torch.ones_like(count))
        # the last position below the bias up to each position: a prefix maximum in log2(L) doubling steps
        latest = below * self.relative
        for step in self.steps:
            latest = torch.maximum(latest, F.pad(latest[..., :-step], (step, 0)))
        before = F.pad(latest[..., :-1], (1, 0))  # strictly before each position (0 at the start, as the code)
        ends = torch.maximum(below, self.last)
        lspv = ((self.relative - before) * ends).amax(-1)
        return torch.stack([ppv, lspv, mpv, mipv], dim=1)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, L) -> (batch, 4, 84 * features)
        return self.pools(self.conv(x)).flatten(2)

    def near_ties(self, x: Tensor) -> Tensor:
        """(batch, 4, 84 * features): how far each pooled value may move if the comparisons within rounding
        of the bias went either way: PPV by their share; MPV and MIPV as far as a mean of the remaining positions
        can go; LSPV, whose runs join or split, by the region's whole length."""
        c = self.conv(x)
        terms = KERNEL_LENGTH * int((self.weight[:, :, 0] != 0).sum(1).max())
        band = _rounding_scale(x, self.weight, self.dilation, self.padding, terms).unsqueeze(2)
        response, bias = c.unsqueeze(2), self.bias.unsqueeze(-1)
        near = ((response - bias).abs() <= band).to(c.dtype) * self.valid
        ties = near.sum(-1)
        sure = ((response - bias > band).to(c.dtype) * self.valid).sum(-1)  # above the bias in every engine
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

    def forward(self, x: Tensor) -> Tensor:
        return (self.raw(x) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> None:
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
        features = transform_in_chunks(self.raw, x, chunk=16).double()
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0) + 1e-8)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self(x), self._each(x, "near_ties") / self.std


class MultiRocketHydraTransform(nn.Module):
    """MultiRocket's and Hydra's features side by side (aeon's MultiRocketHydra), each scaled its own way."""

    def __init__(self, channels: int, length: int, width: float = 1.0):
        super().__init__()
        self.multirocket = MultiRocketTransform(channels, length, max(8 * len(MINIROCKET_INDICES),
                                                                     round(MULTIROCKET_FEATURES * width)))
        self.hydra = HydraTransform(channels, length, groups=max(2, 2 * round(HYDRA_GROUPS // 2 * width)))
        self.n_features = self.multirocket.n_features + self.hydra.n_features

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.multirocket(x), self.hydra(x)], dim=1)

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> None:
        self.multirocket.fit(x, g)
        self.hydra.fit(x, g)

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        (a, da), (b, db) = self.multirocket.feature_bounds(x), self.hydra.feature_bounds(x)
        return torch.cat([a, b], dim=1), torch.cat([da, db], dim=1)


def transform_in_chunks(transform, x: Tensor, chunk: int = FIT_CHUNK) -> Tensor:
    return torch.cat([transform(x[i:i + chunk]) for i in range(0, len(x), chunk)])


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

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> None:
        for on_series, on_diff in zip(self.series, self.diffs):
            on_series.fit(x.shape[1], g)
            on_diff.fit(x.shape[1], g)
        self.scale.fit(transform_in_chunks(self.raw, x))

    def feature_bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        diff = x[:, :, 1:] - x[:, :, :-1]
        parts = []
        for on_series, on_diff in zip(self.series, self.diffs):
            parts += [on_series.near_ties(x), on_diff.near_ties(diff)]
        counts = self.raw(x)
        return self.scale(counts), self.scale.moves(counts, torch.cat(parts, dim=1))


class KernelNet(FixedLength, nn.Module):
    """A kernel transform (fitted by `fit`, never trained) and a linear head on its standardised features.
    Sized from the training length (its dilations are); `width` scales the number of features."""

    def __init__(self, c_in: int, length: int, n_outputs: int, width: float = 1.0):
        super().__init__()
        self.transform = self.make_transform(c_in, length, width)
        self.head = nn.Linear(self.transform.n_features, n_outputs)
        nn.init.zeros_(self.head.weight)  # the reference's init: the output starts at the output layer's base
        nn.init.zeros_(self.head.bias)

    def make_transform(self, c_in: int, length: int, width: float) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length) -> (batch, n_outputs)
        return self.head(self.transform(x))

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Fit the transform to the (normalised) training series; their standardised features (n, F)."""
        self.transform.fit(x, g)
        return transform_in_chunks(self.transform, x)

    @torch.no_grad()
    def threshold_bound(self, x: Tensor) -> tuple[Tensor, Tensor, int]:
        """The head's output; per series and output, how far it may move if every comparison within an
        engine's rounding of its threshold went the other way (the head is linear in the features); and how
        many (series, feature) pairs have such a comparison."""
        features, moves = self.transform.feature_bounds(x)
        return self.head(features), moves @ self.head.weight.abs().T, int((moves > 0).sum())


class MiniRocket(KernelNet):
    """MiniRocket (Dempster, Schmidt, Webb, KDD 2021): about 10,000 PPV features of 84 fixed kernels."""

    def make_transform(self, c_in: int, length: int, width: float) -> nn.Module:
        return MiniRocketTransform(c_in, length, max(len(MINIROCKET_INDICES), round(MINIROCKET_FEATURES * width)))


class Hydra(KernelNet):
    """Hydra (Dempster, Schmidt, Webb, DMKD 2023): 64 groups of 8 competing random kernels per dilation."""

    def make_transform(self, c_in: int, length: int, width: float) -> nn.Module:
        return HydraTransform(c_in, length, groups=max(2, 2 * round(HYDRA_GROUPS // 2 * width)))


class MultiRocketHydra(KernelNet):
    """MultiRocket-Hydra (aeon; Middlehurst et al.'s bake-off): MultiRocket's 50,000 features and Hydra's."""

    def make_transform(self, c_in: int, length: int, width: float) -> nn.Module:
        return MultiRocketHydraTransform(c_in, length, width)
