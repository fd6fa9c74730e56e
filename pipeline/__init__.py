"""pipeline: train 1D CNNs on sequences with the right loss, then export and score them.

Importing this package does not import torch; the training modules do.
"""

from pipeline.version import __version__


def __getattr__(name: str):
    """`pipeline.fit`, `pipeline.load_run` and `pipeline.Run` (pipeline/api.py), imported on first use so that
    importing the package stays light."""
    if name in ("fit", "load_run", "Run"):
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
