"""Checkpoints: plain dicts of tensors and JSON-like values, loadable with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.files import write_atomic

CHECKPOINT_FORMAT = 1
BEST, LAST = "best.pt", "last.pt"


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write atomically; `state['model']` must be the eager module's state dict."""
    bad = [k for k in state["model"] if k.startswith("_orig_mod.")]
    if bad:  # a compiled wrapper's state dict leaked in: refuse rather than write unloadable weights
        raise RuntimeError(f"checkpoint state has compiled-wrapper keys such as {bad[0]}")
    return write_atomic(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def load_checkpoint(path: Path) -> dict:
    """Load with weights_only=True: a checkpoint that needs arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found; pass the folder written by `pipeline train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a loadable pipeline checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"{path}: unknown checkpoint format; it was not written by this pipeline version")
    return state
