"""Convolution-kernel models: MiniRocket (Dempster, Schmidt, Webb, KDD 2021), Hydra (DMKD 2023) and
MultiRocket-Hydra (Tan et al. 2022 + Hydra). Each is a transform of fixed kernels whose biases, channel
combinations and feature statistics are fitted once from the training series (`fit`), then standardised
features and a linear head (trained in closed form by pipeline.models.ridge, or by gradient descent with the task's
loss). Every step is a plain tensor op, so the whole model exports as one graph; the counting comparisons
(PPV, Hydra's winning kernel) also report how far each comparison sits from flipping (`threshold_bound`),
which export verification uses to tell an engine's rounding from a real disagreement."""

from pipeline.models.kernels.common import KERNEL_LENGTH, ROUNDING_FACTOR, UNIT_ROUNDOFF, transform_in_chunks
from pipeline.models.kernels.hydra import HydraBlock, HydraTransform, SparseScale
from pipeline.models.kernels.minirocket import MINIROCKET_INDICES, MiniRocketTransform, PPVBlock, minirocket_dilations
from pipeline.models.kernels.multirocket import MultiRocketHydraTransform, MultiRocketTransform, PoolingBlock
from pipeline.models.kernels.nets import Hydra, KernelNet, MiniRocket, MultiRocketHydra, call_bound

__all__ = ["KERNEL_LENGTH", "MINIROCKET_INDICES", "ROUNDING_FACTOR", "UNIT_ROUNDOFF", "Hydra", "HydraBlock",
           "HydraTransform", "KernelNet", "MiniRocket", "MiniRocketTransform", "MultiRocketHydra",
           "MultiRocketHydraTransform", "MultiRocketTransform", "PPVBlock", "PoolingBlock", "SparseScale", "call_bound",
           "minirocket_dilations", "transform_in_chunks"]
