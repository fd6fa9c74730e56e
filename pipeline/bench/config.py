"""What `pipeline bench` measures, one field per setting with its flag (see pipeline/settings/fields.py); the
command's options are generated from it. No torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.settings.config import COMPILE_MODES, MODEL_NAMES
from pipeline.training.device import check_device
from pipeline.errors import PipelineError
from pipeline.settings.fields import setting

QUICK = {"latency_calls": 30, "throughput_calls": 3, "rounds": 1, "warmup": 3, "train_series": 256,
         "train_epochs": 2, "train_min_seconds": 0.0, "memory_mib": (16, 32), "peak_sizes": (512,)}
FULL = {"latency_calls": 150, "throughput_calls": 8, "rounds": 3, "warmup": 10, "train_series": 1024,
        "train_epochs": 5, "train_min_seconds": 10.0, "memory_mib": (256, 512, 1024), "peak_sizes": (512, 1024, 2048)}
SHAPE_FIELDS = ("model", "width", "channels", "length", "classes")  # what a RUN_DIR fixes


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark: a trained run, or a fresh model of the given shape; how hard to measure."""

    run_dir: str | None = None  # the command's RUN_DIR argument
    model: str = setting("fcn", dest="model_name", choices=MODEL_NAMES,
                         help="Model to benchmark when no RUN_DIR is given (trained briefly on random series).")
    width: float = setting(1.0)
    channels: int = setting(1)
    length: int = setting(128)
    classes: int = setting(3)
    batch: int = setting(256, help="Batch of the throughput rows.")
    threads: int | None = setting(None, kind="count", help="Threads for every engine (torch and onnxruntime) "
                                  "[default: the CPUs this process may use].")
    device: str = setting("cpu", choices=("cpu", "cuda"))
    train_models: tuple[str, ...] | None = setting(
        None, name="--train-model", kind="many", choices=MODEL_NAMES, parse=lambda names: tuple(names) or None,
        help="Model(s) for the training rows [default: the benchmarked model and simple-cnn].")
    train_batch: int | None = setting(None, type=int, help="Training batch size [default: 64 on CPU, 256 on CUDA].")
    compile_mode: str = setting("default", choices=COMPILE_MODES)
    peer_python: str | None = setting(None, type=str, metavar="PYTHON", help="Kernel models (minirocket, hydra, "
                                      "multirocket-hydra): the Python of a virtualenv with aeon for the rows against "
                                      "aeon's classifiers [default: this one; pip install 'pipeline[aeon]'].")
    memory: bool = setting(True, name="--no-memory", kind="switch", help="Skip the memory-mapped predict rows.")
    quick: bool = setting(False, kind="switch",
                          help="Few iterations and small files: checks the bench runs, not for figures.")

    def __post_init__(self):
        for name in (self.model, *(self.train_models or ())):
            if name not in MODEL_NAMES:
                raise PipelineError(f"--model '{name}' is not valid; choose one of {', '.join(MODEL_NAMES)}")
        for flag, value in (("--channels", self.channels), ("--length", self.length), ("--batch", self.batch),
                            ("--threads", 1 if self.threads is None else self.threads),
                            ("--train-batch", 2 if self.train_batch is None else self.train_batch)):  # 0 is no default
            if value < 1:
                raise PipelineError(f"{flag} must be at least 1; got {value}")
        if self.peer_python is not None and not (os.path.isfile(self.peer_python)
                                                 and os.access(self.peer_python, os.X_OK)):
            raise PipelineError(f"--peer-python {self.peer_python}: not an executable file; pass the python of a "
                                "virtualenv that has aeon (e.g. aeon-venv/bin/python)")
        if self.classes < 2:
            raise PipelineError(f"--classes must be at least 2; got {self.classes}")
        if self.width <= 0:
            raise PipelineError(f"--width must be > 0; got {self.width}")
        check_device(self.device, ("cpu", "cuda"))
        if self.compile_mode not in COMPILE_MODES:
            raise PipelineError(f"--compile-mode '{self.compile_mode}' is not valid; choose one of "
                                f"{', '.join(COMPILE_MODES)}")

    @property
    def settings(self) -> dict:
        return QUICK if self.quick else FULL
