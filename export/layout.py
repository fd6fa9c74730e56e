"""The ONNX model graph's layout: 1D layers restated as 2D layers over (batch, channels, 1, length).

onnxruntime's CPU provider runs 2D convolutions with its blocked NCHWc kernels (and fuses
BatchNorm and ReLU into them); 1D convolutions take a slower im2col path. The copy computes the
same function with the same weights, and the export verifies it against the eager model like any
other graph, so the bundle's numbers are held to the same tolerance.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.build import SequenceModel, scores_and_maps
from pipeline.models.networks import SameConv1d

# Layers that are the same function on 3D and 4D tensors (shape-agnostic or acting on dim 1 / the last axis).
LAYOUT_FREE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout,
               nn.Flatten, nn.Linear, nn.Sequential, nn.ModuleList)


class SameConv2d(nn.Conv2d):
    """SameConv1d on (batch, channels, 1, length): the same left/right split of the padding."""

    def __init__(self, conv: SameConv1d):
        super().__init__(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]),
                         dilation=(1, conv.dilation[0]), groups=conv.groups, bias=conv.bias is not None)
        self.pad_left, self.pad_right = conv.pad_left, conv.pad_right

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, (self.pad_left, self.pad_right)), self.weight, self.bias)


def _conv2d(conv: nn.Conv1d) -> nn.Conv2d | None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                     padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
                     bias=conv.bias is not None)


def _batchnorm2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)


def _pool2d(pool: nn.MaxPool1d | nn.AvgPool1d) -> nn.Module | None:
    if isinstance(pool, nn.MaxPool1d):
        if pool.return_indices:
            return None
        return nn.MaxPool2d((1, pool.kernel_size), (1, pool.stride), (0, pool.padding), (1, pool.dilation),
                            ceil_mode=pool.ceil_mode)
    return nn.AvgPool2d((1, pool.kernel_size[0]), (1, pool.stride[0]), (0, pool.padding[0]), pool.ceil_mode,
                        pool.count_include_pad)


def _as_2d(module: nn.Module) -> nn.Module | None:
    """The 2D-layout twin of one 1D layer (weights copied), or None when there is none."""
    if isinstance(module, SameConv1d):
        twin = SameConv2d(module)
    elif isinstance(module, nn.Conv1d):
        twin = _conv2d(module)
    elif isinstance(module, nn.BatchNorm1d):
        twin = _batchnorm2d(module)
    elif isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)):
        return _pool2d(module)
    else:
        return None
    if twin is None:
        return None
    state = {k: v.unsqueeze(2) if k == "weight" and v.dim() == 3 else v for k, v in module.state_dict().items()}
    twin.load_state_dict(state)
    return twin


def _convert(module: nn.Module) -> bool:
    """Swap every 1D layer below `module` in place; False if a layer of unknown layout is found."""
    for name, child in module.named_children():
        twin = _as_2d(child)
        if twin is not None:
            setattr(module, name, twin)
        elif type(child).__module__.startswith("torch.nn") and not isinstance(child, LAYOUT_FREE):
            return False  # e.g. LSTM, AdaptiveAvgPool1d: leave the graph in its 1D form
        elif not _convert(child):
            return False
    return True


class Conv2dLayout(nn.Module):
    """Normalise on (batch, channels, length), run the 2D-layout network on (batch, channels, 1, length), then
    the output layer."""

    def __init__(self, normalize: nn.Module, net: nn.Module, output: nn.Module):
        super().__init__()
        self.normalize, self.net, self.output = normalize, net, output

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length) -> (batch, n_outputs)
        return self.output(self.net(self.normalize(x).unsqueeze(2)))

    def scores_and_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:  # as SequenceModel's, in the 2D layout
        return scores_and_maps(self.net, self.output, self.normalize(x).unsqueeze(2))


class Lifted(nn.Module):
    """A 2D-layout network read on (batch, channels, length): it runs on (batch, channels, 1, length)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(2))


def conv2d_layout(model: SequenceModel) -> nn.Module | None:
    """A copy of the model with its convolutions as 2D layers, or None when it has none to convert."""
    net = copy.deepcopy(model.net)
    if not any(isinstance(m, nn.Conv1d) for m in net.modules()) or not _convert(net):
        return None
    if model.reversible is not None:  # a forecaster: the same model around the 2D-layout network
        twin = copy.copy(model)
        twin._modules = dict(model._modules, net=Lifted(net))
        return twin.eval()
    return Conv2dLayout(model.normalize, net, model.output).eval()
