"""One ExecuTorch program (the `executorch` extra): a module lowered to a .pte file with one method, its inputs'
largest shapes and dynamic axes (the example is cut to the bounds: ExecuTorch plans memory for the largest
shape, and a dimension without a bound would be fixed at the example's size), optionally quantised to int8 by
XNNPACK's quantizer first; and `PteRunner`, which runs a program in executorch.runtime after runtime.pte's shape
check. export/pte.py (model.pte, loss.pte), export/pte_int8.py (model.int8.pte) and export/pte_train.py (the
fine-tuning programs) build on it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from export.exporters import ExportError, _first_line, quiet
from export.executorch_setup import require, silent_fd2
from runtime.manifest import PteInput, PteProgram
from runtime.pte import check_inputs

METHOD = "forward"
AXIS_NAMES = {"x": ("batch", "channels", "length")}


def _input_spec(name: str, example: torch.Tensor, dynamic: dict[int, int], axes: tuple[str, ...]) -> PteInput:
    shape = [dynamic.get(i, n) for i, n in enumerate(example.shape)]
    dtype = "int64" if example.dtype == torch.int64 else "float32"
    return PteInput(name, dtype, shape, list(axes[:example.dim()]), sorted(dynamic))


def lower(candidates: list, example: tuple, names: tuple[str, ...], dynamic: dict[str, dict[int, tuple[str, int]]],
          path: Path, xnnpack: bool, what: str, calibration: np.ndarray | None = None) -> PteProgram:
    """The first candidate module that lowers, as an ExecuTorch program at `path`. `dynamic`: per input, its
    dynamic axes as (dim name, bound); the example is cut to the bounds first. With `calibration` (series of the
    one input), the program is quantised to int8 first (`quantized`)."""
    require()
    dims: dict[str, torch.export.Dim] = {}
    shapes = tuple({axis: dims.setdefault(dim, torch.export.Dim(dim, min=1, max=bound))
                    for axis, (dim, bound) in dynamic.get(name, {}).items()} or None for name in names)
    example = tuple(_cut(t, dynamic.get(name, {})) for name, t in zip(names, example))
    first_error = None
    for candidate in candidates:
        try:
            with quiet(), silent_fd2():
                buffer = _lowered(candidate, example, shapes, xnnpack, calibration)
            break
        except Exception as exc:
            first_error = first_error or exc
    else:
        raise ExportError(f"{what} could not be lowered to ExecuTorch: {_first_line(first_error)}") from None
    Path(path).write_bytes(buffer)
    axes = {name: AXIS_NAMES.get(name) or tuple(dynamic.get(name, {}).get(i, ("outputs",))[0] for i in range(t.dim()))
            for name, t in zip(names, example)}
    inputs = [_input_spec(name, t, {a: bound for a, (_, bound) in dynamic.get(name, {}).items()}, axes[name])
              for name, t in zip(names, example)]
    return PteProgram(Path(path).name, METHOD, inputs, "xnnpack" if xnnpack else "portable")


def _cut(t: torch.Tensor, axes: dict[int, tuple[str, int]]) -> torch.Tensor:
    for axis, (_, bound) in axes.items():
        t = t.narrow(axis, 0, min(t.shape[axis], bound))
    return t


def _without_empty_buffers(module: torch.nn.Module) -> torch.nn.Module:
    """A copy whose empty buffers (a loss's `no class weights`, torch.ones(0)) hold one element: ExecuTorch
    1.4 serialises an empty constant where its runtime refuses to read it (error 0x23). The losses read those
    buffers only when they are set; a module that reads one would disagree with eager and fail verification."""
    module = copy.deepcopy(module)
    for owner in module.modules():
        for name, buffer in list(owner.named_buffers(recurse=False)):
            if buffer is not None and buffer.numel() == 0:
                setattr(owner, name, torch.ones(1, dtype=buffer.dtype))
    return module


def _lowered(module, example: tuple, shapes: tuple, xnnpack: bool, calibration: np.ndarray | None = None) -> bytes:
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(_without_empty_buffers(module), example, dynamic_shapes=shapes)
    if calibration is not None:
        program = quantized(program, example, shapes, calibration)
    partitioner = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = [XnnpackPartitioner()]
    return to_edge_transform_and_lower({METHOD: program}, partitioner=partitioner).to_executorch().buffer


class PteRunner:
    """One .pte program in executorch.runtime; every call's inputs are checked first (runtime.pte)."""

    def __init__(self, path: Path, program: PteProgram):
        require()
        with quiet(), silent_fd2():
            from executorch.runtime import Runtime

            self.method = Runtime.get().load_program(str(path)).load_method(program.method)
        self.program = program

    def __call__(self, inputs) -> list[np.ndarray]:
        arrays = [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in inputs]
        check_inputs(self.program, arrays)
        with silent_fd2():
            outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [o.detach().numpy().copy() for o in outputs]


def quantized(program: torch.export.ExportedProgram, example: tuple, shapes: tuple, calibration: np.ndarray):
    """The exported model with XNNPACK's int8 quantisation, calibrated on `calibration` in calls of at most the
    example's batch (the program's bound)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    bound = len(example[0])
    for start in range(0, len(calibration), bound):
        prepared(torch.from_numpy(np.ascontiguousarray(calibration[start:start + bound], dtype=np.float32)))
    return torch.export.export(convert_pt2e(prepared), example, dynamic_shapes=shapes)
