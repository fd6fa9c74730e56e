"""Inference side by side: eager PyTorch, torch.compile, TorchScript, AOTInductor and the runtime (onnxruntime)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.bench.timing import Timing, sample, settle, warm_up
from runtime.manifest import GRAPH_FILES


@dataclass
class Engine:
    """One way to run the model: `prepare` turns a numpy batch into its input (outside the clock)."""

    name: str
    run: Callable[[object], object]
    prepare: Callable[[np.ndarray], object]
    sync: Callable[[], None] = lambda: None
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    note: str = ""
    warmup: dict[int, float] = field(default_factory=dict)  # batch size -> seconds of its warm-up calls


def torch_engines(graph: nn.Module, bundle: Path, device: torch.device, compile_mode: str) -> list[Engine]:
    """Eager (inference_mode), torch.compile of the same eager graph, and the bundle's TorchScript file."""
    from export.exporters import quiet

    graph = graph.to(device).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    to_tensor = lambda x: torch.from_numpy(x).to(device)  # noqa: E731
    engines = [Engine("eager PyTorch", graph, to_tensor, sync, torch.inference_mode, "torch.inference_mode")]
    compiled = torch.compile(graph, mode=compile_mode, dynamic=False)
    engines.append(Engine("torch.compile", compiled, to_tensor, sync, torch.inference_mode,
                          f"mode={compile_mode}, one static graph per batch size"))
    scripted_path = bundle / GRAPH_FILES["model", "torchscript"]
    if scripted_path.exists():
        with quiet():
            scripted = torch.jit.load(str(scripted_path), map_location=device).eval()
        engines.append(Engine("TorchScript", scripted, to_tensor, sync, torch.inference_mode, "bundle model.pt"))
    return engines


def aoti_engine(graph: nn.Module, channels: int, length: int, fixed_length: bool, work: Path,
                device: torch.device) -> tuple[Engine, float]:
    """The model compiled by AOTInductor exactly as `pipeline export --format aoti` compiles it (torch.export
    with dynamic batch and length, then the package), loaded as Python loads it: (engine, compile seconds)."""
    from torch._inductor import aoti_load_package

    from export.bundle import export_program_files

    axes = {"x": {0: "batch"} if fixed_length else {0: "batch", 2: "length"}}
    example = (torch.randn(64, channels, length),)  # batch 64, as export: no dimension is specialised
    start = time.perf_counter()
    files, _ = export_program_files([graph.eval()], example, axes, {"aoti": work / "bench-model.aoti.pt2"},
                                    device.type, "model", log=lambda _: None)
    seconds = time.perf_counter() - start
    runner = aoti_load_package(str(files["aoti"]))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return Engine("AOTInductor", runner, lambda x: torch.from_numpy(x).to(device), sync, torch.inference_mode,
                  f"model.aoti.pt2 ({device.type}), as a C++ host's AOTIModelPackageLoader runs it"), seconds


def runtime_engines(bundle: Path, threads: int, device: torch.device) -> list[Engine]:
    """The runtime as users call it (Bundle.predict: checks, batching) and its bare session.run."""
    import onnxruntime as ort

    import runtime

    providers = None
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    loaded = runtime.load(bundle, threads=threads, providers=providers)
    where = "CUDA provider" if providers else "CPU provider"
    layout = loaded.manifest.onnx_layout or "conv1d"
    session = loaded.model_session
    return [
        Engine("runtime Bundle.predict", loaded.predict, np.ascontiguousarray,
               note=f"onnxruntime {where}, {layout} graph, input checks included"),
        Engine("runtime session.run", lambda x: session.run(None, {"x": x}), np.ascontiguousarray,
               note="the same session without the runtime's checks"),
    ]


def int8_engines(bundle: Path, threads: int) -> list[Engine]:
    """The runtime running the bundle's model.int8.onnx (export --quantize int8), as `--precision int8` does."""
    import runtime

    loaded = runtime.load(bundle, threads=threads, precision="int8")
    return [Engine("runtime Bundle.predict int8", loaded.predict, np.ascontiguousarray,
                   note=f"onnxruntime CPU provider, model.int8.onnx (QDQ, {loaded.manifest.onnx_layout or 'conv1d'})")]


def measure(engines: list[Engine], batch: np.ndarray, calls: int, warmup: int, rounds: int) -> dict[str, Timing]:
    """Each engine in its own block per round (round-robin over rounds), samples pooled per engine."""
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    warm: dict[str, float] = {}
    inputs = {e.name: e.prepare(batch) for e in engines}
    for r in range(rounds):
        for engine in engines:
            settle()
            x = inputs[engine.name]
            call = lambda: engine.run(x)  # noqa: E731
            with engine.context():
                spent = warm_up(call, warmup if r == 0 else max(1, warmup // 4), engine.sync)
                warm.setdefault(engine.name, spent)
                samples[engine.name] += sample(call, calls, engine.sync)
    return {name: Timing.of(values, warm[name]) for name, values in samples.items()}


def model_flops(model: nn.Module, channels: int, length: int) -> int:
    """Floating-point operations per series: 2 x multiply-adds of every convolution and linear layer, and the
    kernel models' blocks as each counts itself (`operations`: convolution, comparisons, pooling)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if hasattr(module, "operations"):
            total += module.operations(inputs[0].shape[-1])
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            total += 2 * per_output * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) or hasattr(m, "operations")]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, channels, length))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _matmul_peak(threads: int, sizes: tuple[int, ...], int8: bool) -> dict:
    """Operations per second (2 n^3 per call) of onnxruntime's own square n x n matrix product, best over
    `sizes`: fp32 MatMul, or int8 MatMulInteger (uint8 x int8 -> int32, the u8s8 kernels QDQ graphs use)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    best = {"rate": 0.0, "n": None}
    rng = np.random.default_rng(0)
    for n in sizes:
        if int8:
            b = rng.integers(-128, 128, (n, n), dtype=np.int8)
            a = rng.integers(0, 256, (n, n), dtype=np.uint8)
            node, types = helper.make_node("MatMulInteger", ["a", "b"], ["c"]), (TensorProto.UINT8, TensorProto.INT32)
        else:
            b = rng.standard_normal((n, n), dtype=np.float32)
            a = rng.standard_normal((n, n), dtype=np.float32)
            node, types = helper.make_node("MatMul", ["a", "b"], ["c"]), (TensorProto.FLOAT, TensorProto.FLOAT)
        graph = helper.make_graph([node], "matmul", [helper.make_tensor_value_info("a", types[0], [n, n])],
                                  [helper.make_tensor_value_info("c", types[1], [n, n])],
                                  [numpy_helper.from_array(b, "b")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        onnx.checker.check_model(proto)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        call = lambda: session.run(None, {"a": a})  # noqa: E731
        warm_up(call, 2)
        seconds = float(np.median(sample(call, max(3, int(2e9 / n ** 3)))))
        rate = 2 * n ** 3 / seconds / 1e9
        if rate > best["rate"]:
            best = {"rate": rate, "n": n}
    return best


def onnxruntime_matmul_peak(threads: int, sizes: tuple[int, ...]) -> dict:
    """The fp32 GFLOP/s onnxruntime's own MatMul reaches here (square n x n), the best over `sizes`."""
    best = _matmul_peak(threads, sizes, int8=False)
    return {"gflops": best["rate"], "n": best["n"]}


def onnxruntime_int8_matmul_peak(threads: int, sizes: tuple[int, ...]) -> dict:
    """The int8 GOP/s onnxruntime's own MatMulInteger reaches here, the best over `sizes`."""
    best = _matmul_peak(threads, sizes, int8=True)
    return {"gops": best["rate"], "n": best["n"]}
