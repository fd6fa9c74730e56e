"""The one check of a device flag that every command shares: a choice, and CUDA only where CUDA is."""

from __future__ import annotations

from pipeline.errors import PipelineError


def check_device(device: str, choices: tuple[str, ...]) -> None:
    """--device DEVICE is one of `choices`, and is not cuda on a machine without CUDA."""
    if device not in choices:
        raise PipelineError(f"--device '{device}' is not valid; choose one of {', '.join(choices)}")
    if device == "cuda" and not _cuda():
        raise PipelineError("--device cuda was asked for but CUDA is not available here; use --device cpu")


def _cuda() -> bool:
    import torch  # only when CUDA is asked for: the command line checks its flags before torch loads

    return torch.cuda.is_available()
