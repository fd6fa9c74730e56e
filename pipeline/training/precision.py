"""Which arithmetic a training step runs in: `--precision auto` picks bf16 autocast where the device
executes bf16 natively, fp32 elsewhere. Weights, optimizer state, checkpoints and exports stay fp32
in every case; the loss is computed in fp32 from the model's output."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    used: str  # "fp32" or "bf16"
    requested: str  # what --precision said
    reason: str  # one clause for the log and metrics.json

    def to_dict(self) -> dict:
        return {"used": self.used, "requested": self.requested, "reason": self.reason}


def native_bf16(device: torch.device) -> str | None:
    """What runs bf16 natively on `device` (for the log), or None when bf16 would be emulated."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} supports bf16" if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        features = [name for name, check in (("AMX", "_is_amx_tile_supported"),
                                             ("AVX-512 BF16", "_is_avx512_bf16_supported"))
                    if getattr(torch.cpu, check, lambda: False)()]
        return f"this CPU has {' and '.join(features)}" if features else None
    return None


def resolve(requested: str, device: torch.device, kernel: bool = False) -> Precision:
    """The precision a run uses on `device` for --precision `requested` (auto, fp32 or bf16). A kernel model
    (pipeline.models.kernels) always runs fp32: its features count comparisons of convolutions with fitted biases."""
    if kernel:
        return Precision("fp32", requested, "the kernel models count comparisons with biases fitted in fp32")
    if requested != "auto":
        return Precision(requested, requested, f"--precision {requested}")
    native = native_bf16(device)
    if native:
        return Precision("bf16", "auto", f"auto: {native}")
    what = "this GPU" if device.type == "cuda" else "this CPU (no AVX-512 BF16 or AMX)"
    return Precision("fp32", "auto", f"auto: {what} does not run bf16 natively")
