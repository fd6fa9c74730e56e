"""The device, the optimizer and the learning-rate schedule a run trains with, from its TrainConfig."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.settings.config import DEVICES, TrainConfig
from pipeline.training.device import check_device

PLATEAU_FACTOR = 0.5
MIN_LR_FRACTION = 0.1  # Wang et al.: 1e-3 down to 1e-4


def pick_device(name: str) -> torch.device:
    check_device(name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # the fused kernels apply the same update in one call per step instead of several small ops per
    # parameter tensor, which is most of an optimizer step for these small networks
    fused = {"fused": True} if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) \
        else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.scheduler == "plateau":
        # Wang et al. 2017 halve the rate when the monitored loss stalls
        stall = cfg.lr_patience if cfg.lr_patience is not None else max(3, cfg.patience // 3) if cfg.patience else 10
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=PLATEAU_FACTOR, patience=stall, min_lr=cfg.lr * MIN_LR_FRACTION)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None
