"""`pipeline bench`: eager, torch.compile, TorchScript and the runtime side by side, training loops, export.

Nothing here is imported at package level, so `python -m pipeline.bench.memory` starts without torch.
"""
