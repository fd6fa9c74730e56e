"""The engines that run each graph format at verification: onnxruntime, TorchScript, torch.export and AOTInductor."""

from __future__ import annotations

import contextlib
from pathlib import Path

import onnxruntime as ort
import torch

from export.exporters import quiet
from export.graphs import as_tuple


ENGINES = {"onnx": "onnxruntime", "torchscript": "torchscript", "pt2": "torch.export", "aoti": "aotinductor"}


def engines(paths: dict[str, Path], input_names: tuple[str, ...], device: str = "cpu") -> dict:
    """{engine name: run(inputs) -> numpy outputs} for each graph file in `paths` (keyed by format)."""
    engines = {}
    if "onnx" in paths:
        session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        engines["onnxruntime"] = lambda inputs: session.run(
            None, {n: t.numpy() for n, t in zip(input_names, inputs)})
    for fmt in ("torchscript", "pt2", "aoti"):
        if fmt in paths:
            engines[ENGINES[fmt]] = _torch_engine(fmt, paths[fmt], device if fmt == "aoti" else "cpu")
    return engines


def _torch_engine(fmt: str, path: Path, device: str):
    """Load a torch graph file: TorchScript, a torch.export program, or an AOTInductor package."""
    with quiet():  # torch.jit.load's deprecation notice is ours to handle, not the user's
        if fmt == "torchscript":
            module = torch.jit.load(str(path)).eval()
        elif fmt == "pt2":
            module = torch.export.load(str(path)).module()
        else:
            from torch._inductor import aoti_load_package

            module = aoti_load_package(str(path))

    def run(inputs):
        with torch.inference_mode(), full_float32(device):
            outputs = as_tuple(module(*[t.to(device) for t in inputs]))
        return [t.cpu().numpy() for t in outputs]

    return run


@contextlib.contextmanager
def full_float32(device: str):
    """CUDA convolutions and matmuls in full float32 (no TF32) while a CUDA package is checked against eager
    on the CPU; the C++ kit runs CUDA packages the same way."""
    if device != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
