"""Experiment tracking: TensorBoard event files (torch.utils.tensorboard), written by the main process only,
and a run in an MLflow tracking server or local store (rank 0 only as well). Both take the same calls:
`epoch(row, val)` after each checkpointed epoch, `finish(end)` after the report, `fail(interrupted)`.
The tensorboard and mlflow packages are imported only when --tensorboard / --mlflow is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from torch import Tensor, nn

TENSORBOARD_DIR = "tensorboard"  # default folder, inside the run folder
EVENT_PREFIX = "events.out.tfevents."  # what TensorBoard writes; --force removes only these from a run's folder


@dataclass(frozen=True)
class RunEnd:
    """What trackers get when a run ends: its settings, the report's metrics, the run's files, the last epoch."""

    hparams: dict
    metrics: dict
    files: list[Path]
    epoch: int

    def final_metrics(self) -> dict[str, float]:
        return {f"final/{split}_{name}": value for split, values in self.metrics.items() if isinstance(values, dict)
                for name, value in values.items() if isinstance(value, float)}


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

    def finish(self, end: RunEnd) -> None:
        """The run's settings and final metrics as one hparams entry (TensorBoard's HPARAMS tab)."""
        self.writer.add_hparams({k: v for k, v in end.hparams.items() if isinstance(v, (int, float, str, bool))},
                                end.final_metrics(), run_name=".")
        self.writer.close()

    def fail(self, interrupted: bool) -> None:
        self.writer.close()


# --- MLflow: a tracking server (http://...) or a local database store (sqlite:///...) --------------------

MLFLOW_EXTRA_HINT = "pip install mlflow (or pip install -e '.[mlflow]' for the client alone)"
DEFAULT_EXPERIMENT = "pipeline"  # MLFLOW_EXPERIMENT_NAME, MLflow's own variable, overrides it
CHECK_TIMEOUT_S = 10  # the reachability check at start waits this long, once, instead of MLflow's 7 retries


def import_mlflow(flag: str):
    """The mlflow module, imported only when a command was asked to use it."""
    try:
        import mlflow
    except ImportError:
        raise PipelineError(f"{flag} needs the mlflow package: {MLFLOW_EXTRA_HINT}") from None
    return mlflow


def mlflow_uri(uri: str) -> str:
    """The URI with a local store made absolute, so a resumed run or a later export finds the same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri and not uri.startswith("file:"):
        return str(Path(uri).resolve())
    return uri


def check_mlflow(uri: str, flag: str = "--mlflow") -> None:
    """One quick request to the store; a server that is down or refuses is one PipelineError, not retries."""
    import_mlflow(flag)
    from mlflow.tracking import MlflowClient

    if uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        from importlib.util import find_spec

        if find_spec("sqlalchemy") is None:  # the database stores are in the full package, not the lean client
            raise PipelineError(f"{flag} {uri}: a database store needs the full mlflow package (the lean client "
                                "mlflow-skinny only talks to a server): pip install mlflow")

    try:
        with temporary_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(CHECK_TIMEOUT_S)):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every way the store can fail is reported the same way
        raise PipelineError(f"{flag} {uri}: {_why(exc, uri)}") from None


@contextlib.contextmanager
def temporary_env(**values: str):
    """MLflow reads its settings from the environment at each call: set some for a block, then put them back."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _why(exc: Exception, uri: str) -> str:
    text = str(exc)
    if "Connection refused" in text or "Failed to establish a new connection" in text:
        from urllib.parse import urlparse

        where = urlparse(uri)
        return ("cannot reach the MLflow tracking server (connection refused); start it (mlflow server --host "
                f"{where.hostname} --port {where.port or 5000}) or fix the address")
    if "timed out" in text.lower():
        return f"the MLflow tracking server did not answer within {CHECK_TIMEOUT_S} s; check the address"
    return f"the MLflow store refused: {first_line(exc)}"


def mlflow_experiment_id(client, flag: str = "--mlflow") -> str:
    """The experiment runs go to: $MLFLOW_EXPERIMENT_NAME, else 'pipeline'; created when missing."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        raise PipelineError(f"{flag}: the MLflow experiment '{name}' is deleted; restore it (mlflow experiments "
                            "restore) or set MLFLOW_EXPERIMENT_NAME to another name")
    return experiment.experiment_id


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    """config.json as MLflow parameters: nested keys joined with '.', values as text (MLflow's limit 6000)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = (value if isinstance(value, str) else json.dumps(value))[:6000]
    return flat


class MLflowRun:
    """One training run in MLflow: the config as parameters, per-epoch metrics (the TensorBoard names), the
    final metrics, the run folder's files as artifacts. Uses MlflowClient, so no global MLflow state is set.
    A store lost during training costs one warning, not the training: the run folder keeps everything."""

    def __init__(self, uri: str, run_id: str, log: Callable[[str], None] = print):
        from mlflow.tracking import MlflowClient

        self.client, self.uri, self.run_id, self.log, self.lost = MlflowClient(uri), uri, run_id, log, False

    @classmethod
    def start(cls, uri: str, config: dict, run_name: str, tags: dict[str, str], log=print) -> MLflowRun:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        with _store_errors(uri):  # a URI MLflow refuses (a retired file store, say) is one line too
            client = MlflowClient(uri)
            run = client.create_run(mlflow_experiment_id(client), run_name=run_name, tags=tags)
            items = [Param(k, v) for k, v in _flat(config).items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per request
                client.log_batch(run.info.run_id, params=items[i:i + 100])
        return cls(uri, run.info.run_id, log)

    @classmethod
    def resume(cls, uri: str, run_id: str, epoch: int, epochs: int, log=print) -> MLflowRun:
        """The same MLflow run again; epochs after the last checkpoint were never logged (see `epoch`)."""
        tracker = cls(uri, run_id, log)
        with _store_errors(uri):
            tracker.client.update_run(run_id, status="RUNNING")
            tracker.client.set_tag(run_id, "resumed_after_epoch", str(epoch))
            tracker.client.set_tag(run_id, "epochs", str(epochs))  # parameters cannot change; --epochs may have
        return tracker

    def _send(self, what: str, call: Callable[[], None]) -> None:
        if self.lost:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - any failure of the store is reported the same way
            self.lost = True
            self.log(f"warning: mlflow: {what} failed ({first_line(exc)}); MLflow logging stops for this run, "
                     "training goes on and the run folder keeps everything")

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def epoch(self, row: dict, val: dict | None) -> None:
        """Called after the epoch's checkpoint is saved, so a resumed run never logs an epoch twice."""
        values = {"loss/train": row["train_loss"], "lr": row["lr"], "seconds": row["seconds"]}
        if val:
            values["loss/val"] = val["loss"]
            values.update({f"val/{k}": v for k, v in val.items() if k != "loss" and v is not None})
        self._send(f"logging epoch {row['epoch']}", lambda: self._metrics(values, row["epoch"]))

    def finish(self, end: RunEnd) -> None:
        def send() -> None:
            self._metrics(end.final_metrics(), end.epoch)
            for path in end.files:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
                else:
                    self.client.log_artifact(self.run_id, str(path))
            self.client.set_terminated(self.run_id, "FINISHED")

        self._send("logging the final metrics and files", send)

    def fail(self, interrupted: bool) -> None:
        try:
            self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
        except Exception:  # noqa: BLE001 - the training error is the one to report
            pass


def first_line(exc: Exception) -> str:
    """An MLflow error's first line (its messages carry the whole request and response after it)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _store_errors(uri: str):
    """A store failing while the run is created is one line before training, like the check at start."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"--mlflow {uri}: the MLflow store refused: {first_line(exc)}") from None
