"""Training: a run starts in `train.py` (train, resume, an ensemble's members) and runs in `trainer.py` (the
Trainer and its epoch loop), over batching, optimisers and schedules, checkpoints, distributed processes,
precision, the output layer's base rate, ensembles, the run folder and its config.json (`run_config.py`),
tracking and the loss-curve report."""
