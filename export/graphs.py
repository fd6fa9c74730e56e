"""The modules that become graphs: the model with named task outputs, and the loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.losses import user_loss
from runtime.tasks import TASKS

class _TaskGraph(nn.Module):
    """Holds the eager model; each task's subclass only says which outputs follow from the raw scores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):  # (batch, channels, length) -> the task's named outputs
        return self.named(self.model(x))


class RegressionGraph(_TaskGraph):
    def named(self, scores: Tensor) -> Tensor:  # (batch, K)
        return scores


class SigmoidGraph(_TaskGraph):
    """binary and multilabel: raw logits and their probabilities."""

    def named(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        return logits, torch.sigmoid(logits)


class SoftmaxGraph(_TaskGraph):
    """multiclass: logits, probabilities and the int64 label index."""

    def named(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return logits, torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)


class CountGraph(_TaskGraph):
    """count: the log-rate the Poisson loss takes, and the rate."""

    def named(self, log_rate: Tensor) -> tuple[Tensor, Tensor]:
        return log_rate, torch.exp(log_rate)


class ForecastGraph(_TaskGraph):
    """forecast: the flat forecast the loss takes (batch, T * H * Q) and the same numbers as `forecast`,
    (batch, T, H) or (batch, T, H, Q) (runtime.forecast's layout)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.shape = list(model.forecast_shape)

    def named(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        return flat, flat.reshape([flat.shape[0]] + self.shape)


class SaliencyGraph(nn.Module):
    """A task graph's outputs and then `saliency`, from one pass over the convolutions (export --saliency): the
    activation map of the predicted class (multiclass, (batch, length)), of the one output (batch, length), or
    of every output (batch, outputs, length) (models.build.scores_and_maps), each divided by its largest
    magnitude, so that it lies in [-1, 1] with its signs and zeros kept.

    Why scaled: a map's value at a step is a sum of (channels) terms that cancel, and in a regression's units
    those terms can be thousands where the sum is near 0; any engine's rounding of them is then far above
    1e-5 of the value. Divided by the map's largest value, the same rounding is a few 1e-7 of it."""

    def __init__(self, task_graph: _TaskGraph):
        super().__init__()
        self.task_graph = task_graph

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        scores, maps = self.task_graph.model.scores_and_maps(x)  # (batch, K), (batch, K, length)
        outputs = as_tuple(self.task_graph.named(scores))
        if isinstance(self.task_graph, SoftmaxGraph):
            label = outputs[2].view(-1, 1, 1).expand(-1, 1, maps.shape[2])
            chosen = maps.gather(1, label).squeeze(1)
        else:
            chosen = maps[:, 0] if maps.shape[1] == 1 else maps
        return (*outputs, chosen / chosen.abs().amax(dim=-1, keepdim=True).clamp_min(TINY_MAP))


TINY_MAP = 1e-30  # a map that is zero everywhere (no feature active) stays zero


# How each kind of task score (runtime.tasks.Task.scores) becomes the task's named outputs.
_GRAPHS = {"identity": RegressionGraph, "sigmoid": SigmoidGraph, "softmax": SoftmaxGraph, "exp": CountGraph,
           "forecast": ForecastGraph}


def model_graph(model: nn.Module, task: str, saliency: bool = False) -> nn.Module:
    """The eager model (never a compiled wrapper) wrapped to emit the task's named outputs (and, with
    `saliency`, the activation map after them), in eval mode."""
    graph = _GRAPHS[TASKS[task].scores](model)
    return (SaliencyGraph(graph) if saliency else graph).eval()


def as_tuple(outputs) -> tuple[Tensor, ...]:
    """A graph's outputs as a tuple (a single tensor, a tuple, or the list an AOTInductor package returns)."""
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


class _UserLossGraph(nn.Module):
    """Holds a user loss; each subclass says how it gets the per-sample losses in its format."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner


class ScriptableCustomLoss(_UserLossGraph):
    """A user loss for TorchScript: per-sample losses by a scripted loop over the batch.

    (The eager wrapper uses torch.func.vmap, which TorchScript cannot compile.)
    """

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        prediction = prediction.float()
        loss = self.inner(prediction, target).reshape(())
        per_sample = [self.inner(prediction[i:i + 1], target[i:i + 1]).reshape(())
                      for i in range(prediction.shape[0])]
        return loss, torch.stack(per_sample)


class ScanCustomLoss(_UserLossGraph):
    """A user loss for ONNX when vmap cannot stay batch-dynamic: per-sample losses by a scan over the batch
    (an ONNX Scan). torch's vmap rules for some ops (nll_loss, so every F.cross_entropy) fix the batch size
    while exporting; a scan has no such rule, at the price of a loop in the graph."""

    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        from torch._higher_order_ops.scan import scan

        prediction = prediction.float()
        loss = self.inner(prediction, target).reshape(())

        def step(carry: Tensor, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            p, t = pair
            return carry.clone(), self.inner(p.unsqueeze(0), t.unsqueeze(0)).reshape(())

        _, per_sample = scan(step, torch.zeros((), dtype=prediction.dtype), (prediction, target))
        return loss, per_sample


def loss_candidates(loss: nn.Module) -> list[nn.Module]:
    """The modules to try, in order, for a loss's ONNX graph: built-ins as they are; user losses with
    per-sample losses by vmap (one batched graph) and, where that fixes the batch size, by a scan."""
    inner = user_loss(loss)
    return [loss] if inner is None else [loss, ScanCustomLoss(inner).eval()]


def torchscript_loss(loss: nn.Module) -> nn.Module:
    """The module to script for a loss graph: built-ins as they are, user losses with a loop."""
    inner = user_loss(loss)
    return ScriptableCustomLoss(inner).eval() if inner is not None else loss
