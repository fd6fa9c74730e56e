"""The one check of a device flag that every command shares: a choice, and CUDA only where CUDA is."""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError


def check_device(device: str, choices: tuple[str, ...]) -> None:
    """--device DEVICE is one of `choices`, and is not cuda on a machine without CUDA."""
    if device not in choices:
        raise PipelineError(f"--device '{device}' is not valid; choose one of {', '.join(choices)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda was asked for but CUDA is not available here; use --device cpu")
