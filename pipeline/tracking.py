"""Experiment tracking: TensorBoard event files (torch.utils.tensorboard), written by the main process only.

The tensorboard package is imported only when --tensorboard is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from torch import Tensor, nn

TENSORBOARD_DIR = "tensorboard"  # default folder, inside the run folder
EVENT_PREFIX = "events.out.tfevents."  # what TensorBoard writes; --force removes only these from a run's folder


class TensorBoard:
    """Per-epoch scalars, the model graph once, and the hyper-parameters with the final metrics at the end."""

    def __init__(self, log_dir: Path, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PipelineError("--tensorboard needs the tensorboard package: pip install tensorboard (or "
                                "pip install -e '.[tracking]')") from None
        # A resumed run continues the stream at its next epoch; points a crashed run wrote after its last
        # checkpoint (epoch >= first_epoch) are dropped, so no epoch appears twice.
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(log_dir), purge_step=first_epoch if first_epoch > 1 else None)

    def graph(self, model: nn.Module, example: Tensor) -> None:
        import warnings

        with warnings.catch_warnings():  # torch.jit.trace's deprecation notice is not the user's concern
            warnings.simplefilter("ignore", DeprecationWarning)
            self.writer.add_graph(model, example, use_strict_trace=False)

    def epoch(self, row: dict, val: dict | None) -> None:
        """One history.csv row (and every validation metric) at step = epoch."""
        step = row["epoch"]
        self.writer.add_scalar("loss/train", row["train_loss"], step)
        if val:
            self.writer.add_scalar("loss/val", val["loss"], step)
            for name, value in val.items():
                if name != "loss" and value is not None:
                    self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.add_scalar("lr", row["lr"], step)
        self.writer.add_scalar("seconds", row["seconds"], step)
        self.writer.flush()

    def finish(self, hparams: dict, metrics: dict) -> None:
        """The run's settings and final metrics as one hparams entry (TensorBoard's HPARAMS tab)."""
        final = {f"final/{split}_{name}": value for split, values in metrics.items() if isinstance(values, dict)
                 for name, value in values.items() if isinstance(value, float)}
        self.writer.add_hparams({k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))},
                                final, run_name=".")
        self.writer.close()
