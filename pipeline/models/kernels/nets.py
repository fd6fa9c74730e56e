"""The kernel models of the registry: a fitted transform and a linear head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.kernels.hydra import HYDRA_GROUPS, HydraTransform
from pipeline.models.kernels.minirocket import MINIROCKET_FEATURES, MINIROCKET_INDICES, MiniRocketTransform
from pipeline.models.kernels.multirocket import MultiRocketHydraTransform
from pipeline.models.kernels.common import CALL_BYTES, series_per_call
from pipeline.models.sizing import FixedLength
from runtime.inputs import MAX_BATCH
from runtime.manifest import BatchBound


class KernelNet(FixedLength, nn.Module):
    """A kernel transform (fitted by `fit`, never trained) and a linear head on its standardised features.
    Sized from the training length (its dilations are); `width` scales the number of features."""

    call_bytes = CALL_BYTES  # a graph call's comparisons at most (pipeline.models.kernels.common)

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

    def bytes_per_series(self) -> int:
        """About the largest working memory one series takes in the graph (the transform's comparisons)."""
        return int(self.transform.bytes_per_series())

    @torch.no_grad()
    def fit(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Fit the transform to the (normalised) training series; their standardised features (n, F)."""
        return self.transform.fit(x, g)

    @torch.no_grad()
    def threshold_bound(self, x: Tensor) -> tuple[Tensor, Tensor, int]:
        """The head's output; per series and output, how far it may move if every comparison within an
        engine's rounding of its threshold went the other way (the head is linear in the features); and how
        many (series, feature) pairs have such a comparison."""
        features, moves = self.transform.feature_bounds(x)
        return self.head(features), moves @ self.head.weight.abs().T, int((moves > 0).sum())


def call_bound(model: nn.Module) -> BatchBound | None:
    """The manifest's batch_bound of a model holding kernel nets (an ensemble's members run one after another
    in a call: their sum bounds it), so a call's comparisons stay within its call_bytes; None for the networks,
    whose activations their input's size bounds."""
    nets = [net for net in model.modules() if isinstance(net, KernelNet)]
    if not nets:
        return None
    per_series = sum(net.bytes_per_series() for net in nets)
    return BatchBound(series_per_call(per_series, MAX_BATCH, max(net.call_bytes for net in nets)), per_series)


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

    call_bytes = 4 * CALL_BYTES  # its calls carry ~100 graph nodes per dilation: fewer, larger calls

    def make_transform(self, c_in: int, length: int, width: float) -> nn.Module:
        return MultiRocketHydraTransform(c_in, length, width)
