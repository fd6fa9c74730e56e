"""The run folder, written from one place: config.json, the checkpoints, history.csv, metrics.json and the
loss curve. Only what `pipeline train` wrote is ever replaced (see `check_new`)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

from pipeline.training.checkpoint import BEST, LAST, save_checkpoint
from pipeline.errors import PipelineError
from pipeline.files import json_object_with, write_atomic, write_json
from pipeline.training.report import plot_loss_curve, write_history
from pipeline.training.run_config import RunConfig
from pipeline.training.tracking import EVENT_PREFIX, TENSORBOARD_DIR

CONFIG, HISTORY, CURVE, METRICS = "config.json", "history.csv", "loss_curve.png", "metrics.json"
CALIBRATION = "calibration.npy"  # a sample of the training series, raw: what `export --quantize int8` calibrates on
# a run trained on arrays (the Python API) keeps them, so it resumes, quantises and is measured like a file's run
ARRAY_FILES = {"train": "data.npz", "val": "val_data.npz", "test": "test_data.npz"}
TRAINING_FILES = (CONFIG, BEST, LAST, HISTORY, CURVE, METRICS, CALIBRATION)  # what every finished run holds
RUN_FILES = (*TRAINING_FILES, *ARRAY_FILES.values())  # every file a run may write: what --force replaces
CALIBRATION_SERIES = 256
CALIBRATION_BYTES = 8 << 20  # fewer series when they are long or have many channels
CONFIG_KEYS = {"pipeline_version", "model_config", "encoding"}  # how a run folder is recognised
MEMBERS_DIR = "members"  # an ensemble's member run folders: members/member-0, members/member-1, ...


class RunFolder:
    """Every write into one run's folder. `writes=False` (every process but rank 0 under DDP, or a bench)
    makes each write a no-op, so callers never ask who they are."""

    def __init__(self, path: Path, writes: bool = True):
        self.path, self.writes = Path(path), writes

    def __str__(self) -> str:
        return str(self.path)

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def create(self, config: RunConfig) -> None:
        """A new run: remove what an earlier run wrote here (--force; anything else stays), write config.json."""
        if not self.writes:
            return
        if self.path.exists():
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / CONFIG, config.to_dict())

    def clear(self) -> None:
        """Remove the files a run writes (an ensemble's member folders too, each a run folder of its own, and
        the folders they leave empty); anything else stays."""
        members = self.path / MEMBERS_DIR
        if is_run_dir(self.path) and members.is_dir():
            for member in sorted(members.glob("member-*")):
                if is_run_dir(member):
                    RunFolder(member).clear()
                    _remove_if_empty(member)
            _remove_if_empty(members)
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        events = self.path / TENSORBOARD_DIR
        for path in events.glob(f"**/{EVENT_PREFIX}*") if events.is_dir() else ():
            path.unlink()  # an earlier run's event files; anything else in the folder stays

    def save_calibration(self, X: np.ndarray, rows: np.ndarray, seed: int) -> None:
        """A random sample of the training series `X[rows]` (at most CALIBRATION_SERIES, CALIBRATION_BYTES)."""
        if not self.writes:
            return
        per_series = max(1, X.shape[1] * X.shape[2] * 4)
        n = max(1, min(CALIBRATION_SERIES, len(rows), CALIBRATION_BYTES // per_series))
        picked = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
        tmp = self.path / f".{CALIBRATION}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(X[picked], dtype=np.float32))
        tmp.replace(self.path / CALIBRATION)

    def save_arrays(self, arrays: dict) -> None:
        """The series and labels of each split given as arrays (SeriesData), as .npz files its config names."""
        if not self.writes:
            return
        for split, data in arrays.items():
            def save(tmp, data=data):
                with open(tmp, "wb") as f:
                    np.savez(f, X=data.X, y=data.y)
            write_atomic(self.path / ARRAY_FILES[split], save)

    def array_paths(self, arrays: dict) -> dict[str, str]:
        """The DataConfig fields that name the saved arrays of `arrays`' splits."""
        field = {"train": "data", "val": "val_data", "test": "test_data"}
        return {field[split]: str((self.path / ARRAY_FILES[split]).resolve()) for split in arrays}

    def read_config(self) -> RunConfig:
        path = self.path / CONFIG
        if not path.is_file():
            raise PipelineError(f"--resume {self.path}: no {CONFIG} there; pass a folder written by `pipeline train`")
        return RunConfig.from_dict(json.loads(path.read_text()))

    def update_config(self, config: RunConfig) -> None:
        if self.writes:
            write_json(self.path / CONFIG, config.to_dict())

    def files(self) -> list[Path]:
        """The run's own files that exist, and its TensorBoard folder: what trackers keep as artifacts."""
        found = [self.path / name for name in TRAINING_FILES if (self.path / name).is_file()]
        return found + [p for p in (self.path / TENSORBOARD_DIR,) if p.is_dir()]

    def save_best(self, state: dict) -> None:
        if self.writes:
            save_checkpoint(self.best, state)

    def save_epoch(self, state: dict, history: list[dict], metric: str) -> None:
        """After every epoch: the resumable checkpoint and the history so far."""
        if self.writes:
            save_checkpoint(self.last, state)
            write_history(self.path / HISTORY, history, metric)

    def save_report(self, metrics: dict, histories: list[list[dict]], title: str) -> None:
        """At the end: metrics.json and the loss curve (one history, or an ensemble's members')."""
        if self.writes:
            write_json(self.path / METRICS, metrics)
            plot_loss_curve(self.path / CURVE, histories, title)


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def default_run_dir(model: str, task: str | None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("artifacts") / f"{stamp}-{model}" if task is None else Path("artifacts") / f"{stamp}-{model}-{task}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def check_new(out: Path | None, force: bool, model: str, task: str) -> Path:
    """The folder a new run goes to: --out (new, empty, or with --force an earlier run), else a new one."""
    run_dir = Path(out) if out else default_run_dir(model, task)
    if run_dir.exists() and not run_dir.is_dir():
        raise PipelineError(f"--out {run_dir} is a file; pass a folder")
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise PipelineError(f"{run_dir} already exists and is not empty; pass --force to overwrite it "
                            "or choose another --out")
    clashing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if clashing and not is_run_dir(run_dir):
        raise PipelineError(f"--out {run_dir} holds {', '.join(clashing)} but is not a run folder (no config.json "
                            "written by pipeline train); --force replaces only a run's own files, so choose "
                            "another --out")
    return run_dir


def is_run_dir(folder: Path) -> bool:
    """A folder `pipeline train` wrote: its config.json has the run keys."""
    return json_object_with(Path(folder) / CONFIG, CONFIG_KEYS)
