"""How a network of the registry is built from its ModelConfig: for any length, or sized from the training
length."""

from __future__ import annotations

from torch import nn


class AnyLength:
    """A network of any series length, built from (channels, outputs, width)."""

    @classmethod
    def from_config(cls, c) -> nn.Module:  # c: pipeline.settings.config.ModelConfig
        return cls(c.in_channels, c.n_outputs, c.width)


class FixedLength:
    """A network sized from the training length, built from (channels, length, outputs, width)."""

    @classmethod
    def from_config(cls, c) -> nn.Module:  # c: pipeline.settings.config.ModelConfig
        return cls(c.in_channels, c.length, c.n_outputs, c.width)
