"""Runtime for exported bundles: numpy + onnxruntime only, never torch."""

from runtime.metrics import compute_metrics

__all__ = ["compute_metrics"]
