"""One function per format: (module, example inputs, path) -> path. Verification is separate."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.options import DEFAULT_OPSET


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


@functools.cache
def _registry(build, opset: int, table: tuple):
    """torchlib's ONNX registry for `opset` (made by torch's own `build`) with the translations of `table`
    ((aten op, function) pairs), once per process: torch.onnx.export rebuilds it on every call (about 1.6 s of
    one core, twice per bundle: model and loss). Only torch.onnx.export's own custom-table step writes to a
    registry, and we hand it no table."""
    registry = build(opset_version=opset)
    for target, function in table:
        registry.register_op(target, function, is_complex=False)
    return registry


@contextlib.contextmanager
def _reused_registry():
    """Inside, torch.onnx.export takes the cached registry of its opset. Yields the custom table to pass: None
    (the registry holds it), or the table itself on a torch without that registry (the stock path)."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        stock = cls.__dict__["from_torchlib"]
        build, default = stock.__get__(None, cls), stock.__func__.__defaults__[0]
    except (ImportError, KeyError, AttributeError, TypeError, IndexError):
        yield _translations()
        return
    table = tuple(_translations().items())
    cls.from_torchlib = classmethod(lambda _, opset_version=default: _registry(build, opset_version, table))
    try:
        yield None
    finally:
        cls.from_torchlib = stock


def export_onnx(module: nn.Module, example_inputs: tuple, path: Path, input_names: tuple[str, ...],
                output_names: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]],
                opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None, what: str = "graph") -> Path:
    """Export with named dynamic axes into ONE file (no external data) and check it."""
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
                      for name, axes in dynamic_axes.items()}
    dynamic_shapes = {name: dynamic_shapes.get(name, {}) for name in input_names}
    try:
        with quiet(), _reused_registry() as table:
            torch.onnx.export(module, example_inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              custom_translation_table=table)
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


# --- torch.export and AOTInductor --------------------------------------------------------------------------

DIM_MIN = 1  # every dynamic dimension starts at 1: a batch of one, a series of one step


def torch_export(module: nn.Module, example_inputs: tuple, input_names: tuple[str, ...],
                 dynamic_axes: dict[str, dict[int, str]], what: str = "graph"):
    """torch.export.export with named dynamic dimensions; (program, {dim name: (min, max or None)}) where the
    ranges are the ones torch.export proved, not the ones asked for."""
    dims: dict[str, torch.export.Dim] = {}
    shapes = tuple({axis: dims.setdefault(dim, torch.export.Dim(dim, min=DIM_MIN))
                    for axis, dim in dynamic_axes.get(name, {}).items()} or None for name in input_names)
    try:
        with quiet():
            program = torch.export.export(module, example_inputs, dynamic_shapes=shapes)
    except Exception as exc:
        raise ExportError(f"{what} could not be captured by torch.export: {_first_line(exc)}{_user_line(exc)}; "
                          "ONNX or TorchScript may still work (--format onnx,torchscript)") from None
    return program, _dim_ranges(program, input_names, dynamic_axes, what)


def _dim_ranges(program, input_names: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]],
                what: str) -> dict[str, tuple[int, int | None]]:
    """Each named dynamic dimension's range in the program; an ExportError if torch.export fixed one."""
    from torch.utils._sympy.numbers import int_oo

    user_inputs = set(program.graph_signature.user_inputs)  # not the lifted parameters and buffers
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    ranges = {}
    for name, node in zip(input_names, placeholders):
        shape = node.meta["val"].shape
        for axis, dim in dynamic_axes.get(name, {}).items():
            if not isinstance(shape[axis], torch.SymInt):
                raise ExportError(f"{what}: torch.export fixed input '{name}' axis {axis} ('{dim}') to "
                                  f"{shape[axis]}; it must stay dynamic")
            vr = program.range_constraints[shape[axis].node.expr]
            ranges[dim] = (int(vr.lower), None if vr.upper in (int_oo, float("inf")) else int(vr.upper))
    return ranges


def _user_line(exc: BaseException) -> str:
    """' at FILE line N: CODE' for the user's line torch.export names as the cause, else ''."""
    match = re.search(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+), in \S+\n\s*(.+)',
                      str(exc))
    if not match:
        return ""
    return f" (at {Path(match[1]).name} line {match[2]}: {match[3].split('  #')[0].strip()})"


def export_pt2(program, path: Path) -> Path:
    """The exported program as a .pt2 file (torch.export.load in Python)."""
    torch.export.save(program, str(path))
    return Path(path)


def export_aoti(program, path: Path, what: str = "graph") -> Path:
    """An AOTInductor package compiled ahead of time for this machine (program's device); C++ loads it with
    torch::inductor::AOTIModelPackageLoader, Python with torch._inductor.aoti_load_package."""
    from torch._inductor import aoti_compile_and_package

    try:
        with quiet():
            aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:
        raise ExportError(f"{what} could not be compiled by AOTInductor: {_first_line(exc)}") from None
    return Path(path)


def aoti_target(device: str) -> dict[str, str]:
    """What an AOTInductor package built here is tied to: device, C++ compiler, CPU vector ISA, machine, torch."""
    import platform
    import subprocess

    from torch._inductor import cpp_builder, cpu_vec_isa

    compiler = cpp_builder.get_cpp_compiler()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        compiler = version.splitlines()[0].strip() if version.strip() else compiler
    except (OSError, subprocess.SubprocessError):
        pass
    isa = cpu_vec_isa.pick_vec_isa()
    return {"device": device, "compiler": compiler, "vec_isa": str(isa) if isa else "none",
            "machine": platform.machine(), "torch": torch.__version__}
