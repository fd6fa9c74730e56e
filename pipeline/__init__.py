"""pipeline: train 1D CNNs on sequences with the right loss, then export and score them.

Importing this package does not import torch; the training modules do.
"""

__version__ = "0.1.0"
