"""What the kernel transforms share: the kernel length, the rounding band of a float32 convolution, the
paper's quantiles and channel combinations, chunked transforms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_LENGTH = 9
FIT_CHUNK = 64  # series per transform call while fitting (bounds memory: chunk x features x length)
# A graph call's intermediates: the exported bundle's hosts take as many series per call as fit in this (at least
# one). Measured here (onnxruntime, one thread): minirocket at length 1000 is 0.8x as fast with 4 series per call
# as with one (its comparisons leave the caches), so 4 MiB; multirocket-hydra, whose fixed cost per call is ~100
# graph nodes per dilation, falls to 0.7x at one series per call and takes 16 MiB (KernelNet.call_bytes).
CALL_BYTES = 4 << 20
# Two float32 engines may each round a sum of n products by up to about n * 2^-24 of the sum of their magnitudes
# (plus the input's own normalisation); a comparison whose margin is within ROUNDING_FACTOR * (n + 4) * 2^-24 of
# that magnitude can go either way in an engine that sums in another order.
ROUNDING_FACTOR = 4.0
UNIT_ROUNDOFF = 2.0 ** -24


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


def rounding_scale(x: Tensor, weight: Tensor, dilation: int, padding: int, terms: int) -> Tensor:
    """Per output position, how far two float32 engines' results of this convolution may differ."""
    magnitude = F.conv1d(x.abs(), weight.abs(), dilation=dilation, padding=padding)
    return magnitude * (ROUNDING_FACTOR * (terms + 4) * UNIT_ROUNDOFF)


def transform_in_chunks(transform, x: Tensor, chunk: int = FIT_CHUNK) -> Tensor:
    return torch.cat([transform(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def series_per_call(bytes_per_series: int, most: int = FIT_CHUNK, budget: int = CALL_BYTES) -> int:
    """How many series one call takes so that its comparisons stay within `budget` bytes (at least one)."""
    return max(1, min(most, budget // max(bytes_per_series, 1)))


@torch.no_grad()
def standardise_in_place(raw: Tensor, mean: Tensor, std: Tensor, chunk: int = FIT_CHUNK) -> Tensor:
    """Fit `mean` and `std` (+ 1e-8, as the paper's code) of the raw training features (n, F) in float64, a chunk
    of series at a time (no float64 copy of every feature), then standardise `raw` in place exactly as the
    transform's forward does, (raw - mean) / std in float32: the features the head is fitted to."""
    n = len(raw)
    total = torch.zeros(raw.shape[1], dtype=torch.float64)
    for i in range(0, n, chunk):
        total += raw[i:i + chunk].double().sum(0)
    mean64 = total / n
    squares = torch.zeros_like(total)
    for i in range(0, n, chunk):
        squares += (raw[i:i + chunk].double() - mean64).square().sum(0)
    mean.copy_(mean64)
    std.copy_((squares / max(n - 1, 1)).sqrt() + 1e-8)
    for i in range(0, n, chunk):
        raw[i:i + chunk] = (raw[i:i + chunk] - mean) / std
    return raw
