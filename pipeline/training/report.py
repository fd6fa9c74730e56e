"""Run outputs a person looks at: history.csv and loss_curve.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.files import write_atomic, write_text

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds")


def write_history(path: Path, history: list[dict], metric_name: str) -> Path:
    """One row per epoch; the metric column is named after the task's main metric."""
    buf = io.StringIO()
    header = [f"val_{metric_name}" if f == "val_metric" else f for f in HISTORY_FIELDS]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in history:
        writer.writerow(["" if row[f] is None else _fmt(row[f]) for f in HISTORY_FIELDS])
    return write_text(path, buf.getvalue())


def _fmt(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def plot_loss_curve(path: Path, histories: list[list[dict]], title: str) -> Path:
    """Train and validation loss per epoch as a PNG, drawn headless (Agg), never plt.show(); one pair of
    curves per history (an ensemble's members, in one colour each)."""
    fig = loss_figure(histories, title)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def loss_figure(histories: list[list[dict]], title: str):
    """The matplotlib Figure of plot_loss_curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    positive = True
    for i, history in enumerate(histories):
        name = "" if len(histories) == 1 else f"member {i} "
        colour = {} if len(histories) == 1 else {"color": f"C{i % 10}"}
        epochs = [row["epoch"] for row in history]
        marker = "." if len(epochs) < 30 else None
        ax.plot(epochs, [row["train_loss"] for row in history], label=f"{name}train", marker=marker, **colour)
        val = [(row["epoch"], row["val_loss"]) for row in history if row["val_loss"] is not None]
        if val:
            ax.plot([e for e, _ in val], [v for _, v in val], label=f"{name}validation", marker=marker,
                    **({"linestyle": "--", **colour} if colour else {}))
            if len(histories) == 1:
                best_epoch, best = min(val, key=lambda ev: ev[1])
                ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best (epoch {best_epoch})")
        positive = positive and all(row["train_loss"] > 0 for row in history) and all(v > 0 for _, v in val)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if positive:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small" if len(histories) > 1 else None)
    fig.tight_layout()
    return fig
