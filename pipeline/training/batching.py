"""Rows of a split as tensors, gathered by index in batches (never sample by sample), and evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.data.load import Split
from pipeline.models.kernels import call_bound
from runtime.tasks import compute_metrics

EVAL_BATCH = 1024
# Windows of recordings (cut on demand) up to this many bytes are cut once and held as one tensor; more are
# cut batch by batch, as memory-mapped files are read.
WINDOWS_HELD_BYTES = 1 << 30


class BatchSource:
    """Rows of one split as tensors; batches are gathered by index, never sample by sample."""

    def __init__(self, split: Split, device: torch.device):
        self.n = len(split)
        self.device = device
        self.mapped = isinstance(split.X, np.memmap) or (
            not isinstance(split.X, np.ndarray) and len(split.rows) * split.X.nbytes // max(len(split.X), 1)
            > WINDOWS_HELD_BYTES)
        if self.mapped:  # larger than we want in memory: gather each batch from the mapped file
            self.X, self.rows = split.X, split.rows
        else:
            X = split.X if len(split.rows) == len(split.X) and isinstance(split.X, np.ndarray) else split.X[split.rows]
            self.X = torch.from_numpy(np.ascontiguousarray(X)).to(device)
        self.y = torch.from_numpy(split.targets).to(device)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        if self.mapped:
            rows = self.rows[idx.numpy()]
            order = np.argsort(rows)  # sequential reads from the mapped file
            x = np.empty((len(rows),) + self.X.shape[1:], dtype=np.float32)
            x[order] = self.X[rows[order]]
            return torch.from_numpy(x).to(self.device, non_blocking=True), self.y[idx.to(self.device)]
        idx = idx.to(self.device)
        return self.X[idx], self.y[idx]

    def channel_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean/std over all rows, in float64, chunked for mapped files."""
        total = sq = 0.0
        count = 0
        for start in range(0, self.n, 4096):
            x, _ = self.batch(torch.arange(start, min(start + 4096, self.n)))
            x = x.double()
            total = total + x.sum(dim=(0, 2))
            sq = sq + (x * x).sum(dim=(0, 2))
            count += x.shape[0] * x.shape[2]
        mean = total / count
        std = torch.sqrt(torch.clamp(sq / count - mean * mean, min=0.0))
        return mean.float().cpu(), std.float().cpu()


def batch_bounds(n: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """Batch (start, end) pairs; a last batch smaller than `min_last` joins the previous batch.

    BatchNorm cannot train on one sample (per process, under DDP), and the batch sizes are the same
    every epoch, so a compiled model sees no new shape after the first epoch.
    """
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


@torch.inference_mode()
def predict_raw(model: nn.Module, source: BatchSource) -> Tensor:
    """Raw model outputs (N, K) in eval mode, in order."""
    model.eval()
    bound = call_bound(model)  # kernel models: as many series as the exported bundle's calls take
    size = EVAL_BATCH if bound is None else bound.series_per_call
    outs = [model(source.batch(torch.arange(s, e))[0]).float() for s, e in batch_bounds(source.n, size)]
    return torch.cat(outs)


@torch.inference_mode()
def window_spreads(model: nn.Module, source: BatchSource) -> Tensor:
    """Each window's spread of each target channel (N, T), as the forecasting model scales it."""
    parts = [model.target_spread(source.batch(torch.arange(s, e))[0]) for s, e in batch_bounds(source.n, EVAL_BATCH)]
    return torch.cat(parts)


@torch.inference_mode()
def evaluate(model: nn.Module, loss_fn: nn.Module, source: BatchSource, task: str,
             balanced: nn.Module | None = None) -> dict:
    """The set's loss (with the training reduction over the whole set) and the task metrics; with `balanced`
    (regression's TargetBalancedLoss) also the loss training minimises, as balanced_loss."""
    outputs = predict_raw(model, source)
    loss, _ = loss_fn(outputs, source.y)
    metrics = compute_metrics(task, outputs.cpu().numpy(), source.y.cpu().numpy())
    extra = {}
    if balanced is not None:  # forecasts: each window's loss in its own scale (losses.WindowScaledLoss)
        spread = (window_spreads(model, source),) if getattr(model, "reversible", None) is not None else ()
        extra = {"balanced_loss": float(balanced(outputs, source.y, *spread)[0])}
    return {"loss": float(loss), **metrics, **extra}
