"""Where a run starts: `train` (a new run, or an ensemble's members one after another) and `resume`. The
loop itself is pipeline/training/trainer.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from pipeline.training import distributed, ensemble
from pipeline.training.checkpoint import LAST, load_checkpoint
from pipeline.settings.config import TrainConfig
from pipeline.data.load import Datasets, load_datasets
from pipeline.data.series import SeriesData
from pipeline.errors import PipelineError
from pipeline.training.run_config import ModelRecord, RunConfig, RunSettings
from pipeline.training.run_folder import RunFolder, check_new
from pipeline.training.optim import pick_device
from pipeline.training.trainer import RunResult, Trainer
from pipeline.training.tracking import TENSORBOARD_DIR, mlflow_uri
from runtime.inputs import plural


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def train(settings: RunSettings, out: Path | None = None, force: bool = False, log: Callable[[str], None] = print,
          preflight: Callable | None = None, arrays: dict[str, SeriesData] | None = None) -> RunResult:
    """Validate all inputs, then train a new run into `out` (default: a new folder under artifacts/).
    `preflight(loss, prediction, target, name, log)` checks a custom loss on a real batch before training.
    `arrays`: the series of splits given in memory (train, val, test), kept in the run folder."""
    data_cfg, model_cfg, train_cfg = settings.data, settings.model, settings.train
    data_cfg = replace(data_cfg, data=_absolute(data_cfg.data), val_data=_absolute(data_cfg.val_data),
                       test_data=_absolute(data_cfg.test_data))
    ranks = distributed.from_env()
    distributed.start(ranks, pick_device(train_cfg.device))  # joins the process group (gloo or NCCL)
    try:
        datasets = load_datasets(data_cfg, model_cfg.name, train_cfg.seed, given=arrays)
        # every process checks the folder before any creates it, then all take rank 0's (timestamped) name
        run_dir = check_new(out, force, model_cfg.name, datasets.encoding.task)
        run_dir = Path(distributed.same_on_all(str(run_dir), ranks))
        if arrays:  # recorded as the files the run keeps, so it resumes and quantises as a file's run does
            data_cfg = replace(data_cfg, **RunFolder(run_dir).array_paths(arrays))
        if train_cfg.tensorboard is not None:  # recorded absolute, so --resume continues the same event files
            train_cfg = replace(train_cfg, tensorboard=str((Path(train_cfg.tensorboard) if train_cfg.tensorboard
                                                            else run_dir / TENSORBOARD_DIR).resolve()))
        if train_cfg.mlflow is not None:
            train_cfg = replace(train_cfg, mlflow=mlflow_uri(train_cfg.mlflow))
        settings = replace(settings, data=data_cfg, train=train_cfg)
        members = model_cfg.ensemble
        # one model, or the ensemble's first member (the one that validates the rest)
        trainer = _member(run_dir, 0, settings, datasets, log, preflight) if members > 1 \
            else Trainer(run_dir, settings, datasets, log, preflight)
        distributed.barrier(ranks)
        log = trainer.log
        for note in datasets.notes:
            log(note)
        folder = RunFolder(run_dir, writes=ranks.main)
        whole = trainer.describe()
        config = RunConfig(settings, replace(whole, model=replace(whole.model, ensemble=members)),
                           torch_version=torch.__version__)
        folder.create(config)
        folder.save_arrays(arrays or {})
        folder.save_calibration(datasets.train.X, datasets.train.rows, train_cfg.seed)
        if members > 1:  # after the ensemble's own folder: --force clears an earlier run's members there first
            trainer.folder.create(trainer.run_config())
        log(f"run folder: {run_dir}")
        where = f"{ranks.world} processes ({trainer.device.type})" if ranks.enabled else str(trainer.device)
        log(f"training {trainer.model_cfg.name}{f' x {members} (an ensemble)' if members > 1 else ''} for "
            f"{datasets.encoding.task} with loss {trainer.loss_name} on {where} ({len(datasets.train)} train / "
            f"{len(datasets.val) if datasets.val else 0} val series, batch size {trainer.batch_size})")
        if members == 1:
            return trainer.fit()
        return _fit_ensemble(run_dir, trainer, config, datasets, log, preflight, epochs=None)
    finally:
        distributed.stop(ranks)


def _member(run_dir: Path, i: int, settings: RunSettings, datasets: Datasets, log: Callable,
            preflight: Callable | None = None) -> Trainer:
    """Ensemble member I as a run of its own (the ensemble's data and split, seed + I); nothing written yet."""
    member = replace(settings, model=replace(settings.model, ensemble=1),
                     train=ensemble.member_train_config(settings.train, i))
    return Trainer(ensemble.member_dir(run_dir, i), member, datasets, log, preflight)


def _fit_ensemble(run_dir: Path, first: Trainer | None, config: RunConfig, datasets: Datasets, log: Callable,
                  preflight: Callable | None, epochs: int | None, overrides: dict | None = None) -> RunResult:
    """Train (or resume) every member not finished yet, in order, then join and measure the ensemble."""
    train_cfg = replace(TrainConfig.from_dict({**config.settings.train.to_dict(), **(overrides or {})}),
                        epochs=epochs or config.settings.train.epochs)
    settings = replace(config.settings, train=train_cfg)
    n = config.model.ensemble
    ranks = distributed.from_env()
    last = first
    for i in range(n):
        if ensemble.member_finished(run_dir, i, epochs):
            continue
        log(f"ensemble member {i + 1} of {n} (seed {train_cfg.seed + i})")
        if first is not None and i == 0:
            first.fit()
        elif (ensemble.member_dir(run_dir, i) / LAST).is_file():
            last = _resume_one(ensemble.member_dir(run_dir, i), epochs, overrides, log, preflight, datasets)
            last.fit()
        else:
            last = _member(run_dir, i, settings, datasets, log, preflight)
            last.folder.create(last.run_config())
            last.fit()
        distributed.barrier(ranks)  # every process reads the member's best weights once rank 0 wrote them
    if last is None:  # every member had finished before this resume: any member measures the ensemble
        last = _member(run_dir, 0, settings, datasets, log)
    metrics = ensemble.assemble(run_dir, config, last.final_metrics, last.device, last.run_report(), ranks.main, log)
    return RunResult(run_dir, metrics, [])


def resume(run_dir: Path, epochs: int | None = None, overrides: dict | None = None,
           log: Callable[[str], None] = print, preflight: Callable | None = None) -> RunResult:
    """Continue a run from its last checkpoint: model, optimizer, scheduler, RNG and epoch. An ensemble
    continues the member it was in, then trains the members not started yet."""
    run_dir = Path(run_dir)
    saved = RunFolder(run_dir).read_config()
    ranks = distributed.from_env()
    try:
        members = saved.model.ensemble
        if members == 1:
            return _resume_one(run_dir, epochs, overrides, log, preflight).fit()
        ensemble.check_resumable(run_dir, members, epochs)
        datasets = load_datasets(saved.settings.data, saved.model.name, saved.seed, encoding=saved.record.encoding)
        if epochs is not None:
            RunFolder(run_dir, writes=ranks.main).update_config(
                saved.with_train(replace(saved.settings.train, epochs=epochs)))
        log = log if ranks.main else (lambda _: None)  # one voice, as the Trainer's
        log(f"resuming the ensemble {run_dir}")
        return _fit_ensemble(run_dir, None, saved, datasets, log, preflight, epochs, overrides)
    finally:
        distributed.stop(ranks)


def _resume_one(run_dir: Path, epochs: int | None, overrides: dict | None, log: Callable[[str], None],
                preflight: Callable | None, datasets: Datasets | None = None) -> Trainer:
    """A run (or an ensemble's member) restored from its last checkpoint, ready to fit."""
    saved = RunFolder(run_dir).read_config()
    state = load_checkpoint(RunFolder(run_dir).last)
    train_cfg = TrainConfig.from_dict({**saved.settings.train.to_dict(), **(overrides or {})})
    if epochs is not None:
        train_cfg = replace(train_cfg, epochs=epochs)
    if state["epoch"] >= train_cfg.epochs:
        raise PipelineError(f"--resume {run_dir}: the run already finished {plural(state['epoch'], 'epoch')}; pass "
                            f"--epochs larger than {state['epoch']} to train further")
    if datasets is None:
        datasets = load_datasets(saved.settings.data, saved.model.name, train_cfg.seed, encoding=saved.record.encoding)
    trainer = Trainer(run_dir, saved.with_train(train_cfg).settings, datasets, log, preflight,
                      saved=ModelRecord.from_dict(state))
    trainer.restore(state)
    trainer.log(f"resuming {run_dir} at epoch {state['epoch'] + 1} of {train_cfg.epochs}")
    distributed.barrier(trainer.ranks)  # every process has read the run before rank 0 rewrites its config
    # --mlflow-optional with the store down skips MLflow this time only; the run keeps its URI for later
    trainer.folder.update_config(saved.with_train(replace(train_cfg, mlflow=saved.settings.train.mlflow)))
    return trainer
