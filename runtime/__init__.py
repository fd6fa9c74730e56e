"""Runtime for exported bundles: numpy + onnxruntime only, never torch.

    import runtime
    bundle = runtime.load("artifacts/run/bundle")
    outputs = bundle.predict(x)                 # dict of named outputs, x (N, C, L) or (N, L)
    loss, per_sample = bundle.loss(outputs[bundle.outputs[0]], bundle.encode(y))
    metrics = bundle.evaluate(x, y)             # the trainer's metrics plus the loss
"""

from runtime.bundle import Bundle, load
from runtime.errors import BundleError, InputError, IntegrityError
from runtime.manifest import Manifest
from runtime.tasks import TASKS, compute_metrics

__all__ = ["Bundle", "BundleError", "InputError", "IntegrityError", "Manifest", "TASKS", "compute_metrics", "load"]
