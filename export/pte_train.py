"""An on-device fine-tuning program (export --format pte-train): one ExecuTorch method that runs the model, the
run's loss and the backward pass (torch.export.experimental._export_forward_backward), returning the loss, the
scores and the gradients of the trainable parameters; executorch.extension.training's SGD updates them in place.

What is trained: the output head (default), or with --finetune all every parameter (convolutions, the head and
the BatchNorm affine weights) with BatchNorm's statistics frozen (eval mode: a phone's few labelled series are
not a batch to estimate them on). ExecuTorch's CPU kernels have no backward of a 1-D convolution, so the program
is built from the 2D layout (export/layout.py: (1, k) convolutions), and a same-padded convolution pads
symmetrically and slices (the backward of an asymmetric F.pad is a negative pad, which the kernels refuse). The
joint graph is not given to XNNPACK (its partitioner gave wrong gradients here); it runs on the CPU kernels.
With --finetune head on a global-pooled network (fcn, resnet, inception, lite, unet) the frozen network below the
head is its own program instead, train_features.pte, lowered to XNNPACK: a fine-tuning call runs it once (nothing
in it changes), and each step's joint graph is only the head, the output layer and the loss.

`PteTrainer.finetune(X, y, steps, lr)` runs full-batch SGD steps, as `sgd_reference` does in eager PyTorch."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.exporters import ExportError, _first_line, quiet
from export.layout import Conv2dLayout, SameConv2d, conv2d_layout
from export.executorch_setup import require, silent_fd2
from export.pte_program import PteRunner, lower
from pipeline.losses import user_loss
from pipeline.models.networks import GlobalPooled, global_pool
from runtime.errors import BundleError
from runtime.manifest import MODEL_INPUT, PteProgram

METHOD = "forward"
FINETUNE = ("head", "all")
FEATURES_FILE = "train_features.pte"  # --finetune head: the frozen network below the head (XNNPACK)


class SlicedSameConv2d(SameConv2d):
    """SameConv2d as a convolution padded max(left, right) on both sides, then the same-length slice."""

    def forward(self, x: Tensor) -> Tensor:
        pad = max(self.pad_left, self.pad_right)
        out = F.conv2d(x, self.weight, self.bias, padding=(0, pad), dilation=self.dilation, groups=self.groups)
        start = pad - self.pad_left
        return out[..., start:start + x.shape[-1]]


def trainable_copy(model: nn.Module) -> nn.Module:
    """The model in the 2D layout with sliced same convolutions (eval mode: BatchNorm statistics frozen)."""
    fast = conv2d_layout(model)
    net = copy.deepcopy(fast if fast is not None else model)
    for owner in list(net.modules()):
        for name, child in list(owner.named_children()):
            if type(child) is SameConv2d:
                twin = SlicedSameConv2d.__new__(SlicedSameConv2d)
                twin.__dict__ = child.__dict__.copy()
                setattr(owner, name, twin)
    return net.eval()


def head_names(model: nn.Module) -> list[str]:
    """The output head's parameters: the last layer that has parameters (a Linear, or the per-step 1x1 head)."""
    names = [n for n, _ in model.named_parameters()]
    last = max((n.rsplit(".", 1)[0] for n in names), key=lambda owner: max(i for i, n in enumerate(names)
                                                                           if n.startswith(owner + ".")))
    return [n for n in names if n.rsplit(".", 1)[0] == last]


class TrainingGraph(nn.Module):
    """(x, target) -> (loss, scores): the scores are the model's first output (the loss graph's prediction)."""

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss
        self.custom = user_loss(loss)

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.model(x)
        loss = self.custom(scores, target) if self.custom is not None else self.loss(scores, target)[0]
        return loss.reshape(()), scores.detach()


def trainable(model: nn.Module, finetune: str) -> list[str]:
    """Set requires_grad: the head only, or every parameter; the names that train."""
    names = head_names(model) if finetune == "head" else [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return names


class PooledFeatures(nn.Module):
    """The frozen network below the head: (batch, channels, length) -> pooled features (batch, C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.normalize, self.net, self.lift = model.normalize, model.net, isinstance(model, Conv2dLayout)

    def forward(self, x: Tensor) -> Tensor:
        z = self.normalize(x)
        return global_pool(self.net.feature_maps(z.unsqueeze(2) if self.lift else z))


class PooledHead(nn.Module):
    """The head and the output layer on pooled features; parameters named as in the whole model (net.head.*)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = nn.Module()
        self.net.head, self.output = model.net.head, model.output

    def forward(self, features: Tensor) -> Tensor:  # (batch, C) -> (batch, n_outputs)
        return self.output(self.net.head(features))


def split_at_head(model: nn.Module, x: Tensor) -> tuple[nn.Module, nn.Module] | None:
    """(features, head) of a model whose forward is output(head(pool(feature maps))), checked on x; else None
    (ensembles, forecasters, per-step and kernel models keep the one joint graph)."""
    net = getattr(model, "net", None)
    if (not isinstance(net, GlobalPooled) or net.per_step or getattr(model, "reversible", None) is not None
            or not hasattr(model, "normalize") or not hasattr(model, "output")):
        return None
    features, head = PooledFeatures(model).eval(), PooledHead(model).eval()
    with torch.no_grad():
        same = torch.allclose(head(features(x)), model(x), rtol=1e-5, atol=1e-6)
    return (features, head) if same else None


def export_train_program(model: nn.Module, loss: nn.Module, example: tuple, finetune: str,
                         path: Path) -> tuple[list[str], PteProgram | None]:
    """The training program at `path` (batch fixed to the example's): the names of the parameters it trains, and
    the features program written beside it (FEATURES_FILE) when the head trains on frozen pooled features."""
    require()
    from executorch.exir import to_edge
    from torch.export.experimental import _export_forward_backward

    net = trainable_copy(model)
    names = trainable(net, finetune)
    x, target = example
    split = split_at_head(net, x) if finetune == "head" else None
    features = None
    if split is not None:
        below, net = split
        features = lower([below], (x,), (MODEL_INPUT,), {}, Path(path).with_name(FEATURES_FILE), True,
                         "the fine-tuning program's features")
        with torch.no_grad():
            example = (below(x), target)
    graph = TrainingGraph(net, copy.deepcopy(loss).eval())
    try:
        with quiet(), silent_fd2():
            program = _export_forward_backward(torch.export.export(graph, example, strict=False))
            buffer = to_edge(program).to_executorch().buffer
    except Exception as exc:
        raise ExportError(f"the training program could not be exported to ExecuTorch: {_first_line(exc)}") from None
    Path(path).write_bytes(buffer)
    return [f"model.{n}" for n in names], features


class PteTrainer:
    """A training program in executorch.runtime: finetune(X, y, steps, lr) -> the loss before each step. With
    `features` (the manifest's pte_train.features, a file beside `path`) the series go through it once per call
    and the steps train on its output."""

    def __init__(self, path: Path, batch: int, features: PteProgram | None = None):
        require()
        from executorch.extension.training import _load_for_executorch_for_training

        with quiet(), silent_fd2():
            self.module = _load_for_executorch_for_training(str(path))
        self.batch = batch
        self.features = None if features is None else PteRunner(Path(path).with_name(features.file), features)

    def finetune(self, X, y, steps: int, lr: float) -> list[float]:
        from executorch.extension.training import get_sgd_optimizer

        X, y = np.ascontiguousarray(X, dtype=np.float32), np.ascontiguousarray(y)
        if len(X) != self.batch:
            raise BundleError(f"X: {len(X)} series; the training program takes batches of exactly {self.batch}")
        if self.features is not None:  # the network below the head is frozen: its features once per call
            X = self.features([X])[0]
        inputs = [torch.from_numpy(X), torch.from_numpy(y)]
        losses, optimizer = [], None
        with silent_fd2():
            for _ in range(steps):
                loss, _ = self.module.forward_backward(METHOD, inputs)
                if optimizer is None:
                    optimizer = get_sgd_optimizer(self.module.named_parameters(), lr, 0, 0, 0, False)
                optimizer.step(self.module.named_gradients())
                losses.append(loss.item())
        return losses

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.module.named_parameters().items()}


def sgd_reference(model: nn.Module, loss: nn.Module, X, y, steps: int, lr: float, finetune: str):
    """The same steps in eager PyTorch on the original (1-D) model: (losses, {trained name: tensor})."""
    net = copy.deepcopy(model).eval()
    names = trainable(net, finetune)
    graph = TrainingGraph(net, copy.deepcopy(loss).eval())
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    x, target = torch.as_tensor(np.asarray(X, np.float32)), torch.as_tensor(np.asarray(y))
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        value, _ = graph(x, target)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses, {n: p.detach().clone() for n, p in net.named_parameters() if n in names}


TRAIN_FILE = "train.pte"
VERIFY_STEPS, VERIFY_LR = 20, 0.01  # the export checks this many SGD steps against eager


def export_and_verify(model: nn.Module, loss: nn.Module, x: Tensor, target: Tensor, finetune: str, folder: Path,
                      atol: float, rtol: float, log=print):
    """train.pte in `folder`, then VERIFY_STEPS SGD steps of it against the same steps in eager PyTorch: the
    manifest entry and the verification rows (the loss at every step, every trained parameter at the end)."""
    from runtime.compare import Row, compare
    from runtime.manifest import PteTrain

    if getattr(model, "per_step", False):
        raise ExportError("--format pte-train: a per-step model (--window-label each) has no fine-tuning program "
                          "yet; export it with --format pte")
    log(f"exporting the fine-tuning program ({finetune}: {'the output layer' if finetune == 'head' else 'every parameter'}"
        f", batch {len(x)}) and checking {VERIFY_STEPS} SGD steps against eager PyTorch")
    names, features = export_train_program(model, loss, (x, target), finetune, folder / TRAIN_FILE)
    trainer = PteTrainer(folder / TRAIN_FILE, len(x), features)
    losses = trainer.finetune(x.numpy(), target.numpy(), VERIFY_STEPS, VERIFY_LR)
    expected_losses, expected = sgd_reference(model, loss, x, target, VERIFY_STEPS, VERIFY_LR, finetune)
    got = trainer.parameters()
    case = f"{VERIFY_STEPS} SGD steps, lr {VERIFY_LR:g}, batch {len(x)}"
    rows = [Row.of("train", "executorch", "loss", case, compare(np.asarray(expected_losses, np.float32),
                                                                np.asarray(losses, np.float32), atol, rtol))]
    for name, value in expected.items():
        actual = got.get("model." + name)
        actual = np.zeros(0, np.float32) if actual is None else actual.reshape(value.shape)
        rows.append(Row.of("train", "executorch", name, case, compare(value.numpy(), actual, atol, rtol)))
    spec = [_input("x", x), _input("target", target)]
    return PteTrain(TRAIN_FILE, METHOD, spec, finetune, names, "sgd", VERIFY_STEPS, VERIFY_LR, features), rows


def _input(name: str, t: Tensor):
    from runtime.manifest import PteInput

    axes = ["batch", "channels", "length"] if name == "x" else ["batch", "outputs", "length"][:t.dim()]
    return PteInput(name, "int64" if t.dtype == torch.int64 else "float32", list(t.shape), axes, [])
