"""Custom losses for `pipeline train --loss examples.mylosses:NAME` (docs/training.md): each is a torch.nn.Module
called as loss(prediction, target) on the model's raw scores; tests/test_cli_matrix.py trains every task with one."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on logits: class indices (multiclass) or 0/1 targets (binary)."""

    def __init__(self, gamma=2.0):
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, prediction, target):
        if target.dtype == torch.long:
            ce = F.cross_entropy(prediction, target, reduction="none")
        else:
            ce = F.binary_cross_entropy_with_logits(prediction, target, reduction="none").mean(dim=1)
        return ((1 - torch.exp(-ce)) ** self.gamma * ce).mean()


class LogCosh(nn.Module):
    def forward(self, prediction, target):
        d = prediction - target
        return (d + F.softplus(-2 * d) - math.log(2.0)).mean()


class MultiLabelBCE(nn.Module):
    def forward(self, prediction, target):
        return F.binary_cross_entropy_with_logits(prediction, target)


class Poisson(nn.Module):
    def forward(self, prediction, target):
        return F.poisson_nll_loss(prediction, target, log_input=True)
