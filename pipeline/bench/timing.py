"""Timing with warm-up kept apart, thread settings shared by every engine, and what machine this is."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SETTLE_SECONDS = 0.1  # between engines, so one engine's spinning worker threads go idle before the next


@dataclass(frozen=True)
class Timing:
    """Seconds per call after warm-up: median and 90th percentile, and the warm-up's own total."""

    median: float
    p90: float
    calls: int
    warmup: float

    @classmethod
    def of(cls, samples: list[float], warmup: float) -> "Timing":
        return cls(float(np.median(samples)), float(np.percentile(samples, 90)), len(samples), warmup)


def warm_up(fn: Callable[[], object], calls: int, sync: Callable[[], None] = lambda: None) -> float:
    """Seconds taken by `calls` untimed calls (compilation, allocator and cache warm-up happen here)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return time.perf_counter() - t0


def sample(fn: Callable[[], object], calls: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each of `calls` calls, each finished (synchronised) before the clock stops."""
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return samples


def settle() -> None:
    time.sleep(SETTLE_SECONDS)


def default_threads() -> int:
    """The CPUs this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, device: str) -> dict:
    """CPU/GPU names and library versions, printed with every result."""
    import onnxruntime as ort
    import torch

    info = {"cpu": cpu_name(), "cpus_available": default_threads(), "threads": threads,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "device": device, "gpu": None}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    from pipeline.training.precision import native_bf16

    info["native_bf16"] = native_bf16(torch.device(device))  # what `--precision auto` trains in
    return info
