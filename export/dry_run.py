"""Export a user loss on a tiny batch before training, so a loss that cannot be deployed fails in seconds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from export.bundle import export_loss_onnx
from export.engines import engines
from export.exporters import ExportError, export_torchscript
from export.options import DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL
from export.graphs import torchscript_loss
from export.verify import Case, verify_graph
from pipeline.errors import PipelineError
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS


def check_loss_exports(loss: nn.Module, prediction: Tensor, target: Tensor, spec: str, log=print) -> None:
    """Export `loss` to ONNX and TorchScript in a temporary folder and run both on other batch sizes against
    eager: an error when neither format works, a warning naming the format `pipeline export` would fail on."""
    log(f"checking that loss '{spec}' exports to ONNX and TorchScript (a dry export on {len(prediction)} series)")
    what = f"loss '{spec}'"
    example = (prediction.detach().float(), target)
    # other batch sizes than the example's, so a graph fixed to the example's shape shows up
    cases = [Case(f"batch={n}", (example[0][:n], example[1][:n])) for n in (1, len(prediction) - 1) if n >= 1]
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-dry-export-") as tmp:
        paths = {}
        for fmt, export in (("onnx", lambda p: export_loss_onnx(loss, example, p, DEFAULT_OPSET, {}, what)),
                            ("torchscript", lambda p: export_torchscript(torchscript_loss(loss), example, p, what)[0])):
            try:
                paths[fmt] = export(Path(tmp) / f"loss.{fmt}")
            except ExportError as exc:
                failed[fmt] = str(exc)
        if paths:
            with torch.no_grad():
                rows = verify_graph("loss", loss, engines(paths, LOSS_INPUTS), cases, LOSS_OUTPUTS, DEFAULT_ATOL,
                                    DEFAULT_RTOL)
            for row in rows:
                fmt = "onnx" if row.engine == "onnxruntime" else "torchscript"
                if row.problem and fmt not in failed:
                    failed[fmt] = (f"{what} exported to {fmt} disagrees with eager PyTorch at {row.case} "
                                   f"({row.output}: {row.problem})")
    if len(failed) == 2:
        raise PipelineError(f"--loss '{spec}' cannot be exported, so a model trained with it could not be deployed "
                            f"(checked before training, on {len(prediction)} series): {failed['onnx']}; "
                            f"{failed['torchscript']}. Write the loss with torch operations on its two arguments")
    for fmt, reason in failed.items():
        other = "torchscript" if fmt == "onnx" else "onnx"
        log(f"warning: {reason}; `pipeline export` will need --format {other} for runs with this loss")
