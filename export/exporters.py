"""One function per format: (module, example inputs, path) -> path. Verification is separate."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

DEFAULT_OPSET = 18


class ExportError(Exception):
    """A graph could not be exported; the message names the graph and the cause."""


@contextlib.contextmanager
def quiet():
    """The exporters' own deprecation and registry chatter is not the user's business."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        sink = io.StringIO()  # failed strategies print whole FX graphs; the error says what matters
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    """The line of the root cause that names the failing op, without terminal colours."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    for line in text.splitlines():
        if "not supported" in line or "Unsupported" in line or "No decompositions" in line:
            return line.strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _stable_log_sigmoid(x):
    """log(sigmoid(x)) as -softplus(-x). The stock ONNX translation is Log(Sigmoid(x)), which is -inf once
    sigmoid(x) rounds to 0 in float32 (x < -88): the scores of every confident classifier. onnxruntime's
    Softplus is the stable max(x, 0) + log1p(exp(-|x|)), as torch's own log_sigmoid kernel."""
    from onnxscript import opset18 as op

    return op.Neg(op.Softplus(op.Neg(x)))


def _translations() -> dict:
    """ATen ops whose stock ONNX form is numerically worse than eager PyTorch, with stable replacements.
    Applies to every graph, so user losses built on F.logsigmoid, F.binary_cross_entropy_with_logits or
    F.multilabel_soft_margin_loss export stably too."""
    return {torch.ops.aten.log_sigmoid.default: _stable_log_sigmoid}


def export_onnx(module: nn.Module, example_inputs: tuple, path: Path, input_names: tuple[str, ...],
                output_names: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]],
                opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None, what: str = "graph") -> Path:
    """Export with named dynamic axes into ONE file (no external data) and check it."""
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
                      for name, axes in dynamic_axes.items()}
    dynamic_shapes = {name: dynamic_shapes.get(name, {}) for name in input_names}
    try:
        with quiet():
            torch.onnx.export(module, example_inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              custom_translation_table=_translations())
    except Exception as exc:
        raise ExportError(f"{what} could not be exported to ONNX: {_first_line(exc)}") from None
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))
    _check_symbolic_inputs(proto, dynamic_axes, what)
    return Path(path)


def _check_symbolic_inputs(proto: onnx.ModelProto, dynamic_axes: dict[str, dict[int, str]], what: str) -> None:
    for graph_input in proto.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        for axis, name in dynamic_axes.get(graph_input.name, {}).items():
            if not dims[axis].dim_param:
                raise ExportError(f"{what}: ONNX input '{graph_input.name}' axis {axis} ('{name}') was fixed to "
                                  f"{dims[axis].dim_value}; it must stay dynamic")


def export_torchscript(module: nn.Module, example_inputs: tuple, path: Path, what: str = "graph") -> tuple[Path, str]:
    """torch.jit.script, or trace as a recorded fallback; saved for libtorch's torch::jit::load."""
    with quiet():
        try:
            compiled = torch.jit.script(module)
            method = "script"
        except Exception as script_exc:
            try:
                compiled = torch.jit.trace(module, example_inputs, check_trace=False)
                method = f"trace (script failed: {_first_line(script_exc)})"
            except Exception as exc:
                raise ExportError(f"{what} could not be exported to TorchScript: {_first_line(exc)}") from None
        try:  # a traced Python call (a custom autograd.Function, say) only fails here
            compiled.save(str(path))
        except Exception as exc:
            raise ExportError(f"{what} could not be exported to TorchScript: {_first_line(exc)}") from None
    return Path(path), method
