"""Training throughput: `pipeline train`'s loop against a tutorial loop and a bare step loop.

All three train the same model (same seed, config and initial weights) with the same loss module,
data and batch size, and Adam at the same learning rate: the tutorial loop builds it as the
tutorials do (torch.optim.Adam(params, lr)); the bare loop uses the Trainer's own optimizer, so it
is exactly `pipeline train`'s step without the loop around it. The first epoch of each is warm-up
and reported separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.bench.timing import settle
from pipeline.settings.config import MODELS, DataConfig, LossConfig, ModelConfig, TrainConfig, recipe
from pipeline.training.run_config import RunSettings


@dataclass(frozen=True)
class TrainSpec:
    """One training measurement: model, data shape and loop settings."""

    model: str
    width: float
    channels: int
    length: int
    classes: int
    series: int
    batch_size: int
    epochs: int  # timed epochs at least; one more is run first as warm-up
    device: str = "cpu"
    compile: str = "off"
    compile_mode: str = "default"
    precision: str = "auto"  # pipeline train's default


@dataclass(frozen=True)
class EpochTimes:
    """Seconds of each timed epoch and of the warm-up epoch; samples/s from the median epoch."""

    seconds: list[float]
    warmup: float
    series: int
    extra: dict | None = None

    @property
    def samples_per_second(self) -> float:
        return self.series / float(np.median(self.seconds))

    @property
    def p90_samples_per_second(self) -> float:
        return self.series / float(np.percentile(self.seconds, 90))  # the slow end


@dataclass
class Loop:
    """One way to train: `epoch()` runs one full pass over the data."""

    name: str
    epoch: Callable[[], object]
    note: str
    after_warmup: Callable[[], None] = lambda: None
    info: Callable[[], dict | None] = lambda: None


def synthetic_file(folder: Path, spec: TrainSpec, seed: int = 0) -> Path:
    """Random series with random class labels: the loops' speed does not depend on what they learn."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((spec.series, spec.channels, spec.length), dtype=np.float32)
    y = np.arange(spec.series) % spec.classes
    rng.shuffle(y)
    path = folder / f"bench-{spec.model}-{spec.series}x{spec.channels}x{spec.length}.npz"
    np.savez(path, X=X, y=y)
    return path


def _train_config(spec: TrainSpec) -> TrainConfig:
    return TrainConfig(epochs=spec.epochs + 1, batch_size=spec.batch_size, scheduler="none", patience=0, seed=0,
                       compile=spec.compile, compile_mode=spec.compile_mode, device=spec.device,
                       precision=spec.precision, progress=False)


def trained_run(data: Path, spec: TrainSpec, run_dir: Path) -> Path:
    """A real `pipeline train` run folder (one epoch) for the export and inference rows."""
    from pipeline.training.train import train

    return train(RunSettings(DataConfig(data=str(data), task="multiclass", val_split=0.0), LossConfig(),
                 ModelConfig(name=spec.model, width=spec.width), replace(_train_config(spec), epochs=1)),
                 out=run_dir, force=True, log=lambda _: None).run_dir


def _trainer(data: Path, spec: TrainSpec, head: str | None = None):
    """A Trainer exactly as `pipeline train` builds it (same seed, fitted normalisation), writing nothing. A kernel
    model's epochs are its linear head's (`head` None), so that every loop times gradient steps."""
    from pipeline.data.load import load_datasets
    from pipeline.training.trainer import Trainer

    data_cfg = DataConfig(data=str(data), task="multiclass", val_split=0.0)
    datasets = load_datasets(data_cfg, spec.model, 0)
    head = head or ("linear" if MODELS[spec.model].kernel else "auto")
    return Trainer(Path("unused"), RunSettings(data_cfg, LossConfig(), ModelConfig(name=spec.model, width=spec.width,
                                                                                   head=head),
                   _train_config(spec)), datasets, lambda _: None)


def default_training(data: Path, spec: TrainSpec, epoch_seconds: float) -> tuple[float, str]:
    """Seconds of a whole training with the model's default recipe on `data`: a kernel model's fit and ridge head
    measured start to end; another model's recipe epochs times its measured median epoch (projected)."""
    if MODELS[spec.model].kernel:
        settle()
        started = time.perf_counter()
        trainer = _trainer(data, spec, head="auto")
        trainer.train_epoch(1, None)
        _sync(trainer.device)
        return time.perf_counter() - started, f"measured: transform fit and {trainer.model_cfg.head} head, start to end"
    epochs = recipe(spec.model).epochs
    return epochs * epoch_seconds, f"projected: the recipe's {epochs} epochs x the median epoch (early stopping " \
        "may end it sooner)"


def pipeline_loop(data: Path, spec: TrainSpec, name: str = "pipeline train") -> Loop:
    """`pipeline train`'s own epoch (Trainer.train_epoch), with compile/precision as in `spec`."""
    from pipeline.training.trainer import _graph_count

    trainer = _trainer(data, spec)
    steps = trainer.step_modules()
    counter = {"epoch": 0, "start": _graph_count(), "after_warmup": None}

    def epoch():
        counter["epoch"] += 1
        trainer.train_epoch(counter["epoch"], steps)
        _sync(trainer.device)

    def after_warmup():
        counter["after_warmup"] = _graph_count()

    def info():
        if not trainer.use_compile:
            return None
        graphs = _graph_count() - counter["start"]
        return {"mode": spec.compile_mode, "graphs": graphs,
                "recompiles_after_epoch_1": _graph_count() - counter["after_warmup"]}

    note = "Trainer.train_epoch, as pipeline train runs it"
    return Loop(name, epoch, note, after_warmup, info)


def _same_start(data: Path, spec: TrainSpec):
    """Model, loss and optimizer exactly as the Trainer builds them (same seed, fitted normalisation)."""
    trainer = _trainer(data, spec)
    X = torch.from_numpy(np.ascontiguousarray(trainer.datasets.train.X)).to(trainer.device)
    y = torch.from_numpy(trainer.datasets.train.targets).to(trainer.device)
    return trainer.model.train(), trainer.loss_fn, trainer.optimizer, X, y, trainer.device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tutorial_loop(data: Path, spec: TrainSpec) -> Loop:
    """The loop the tutorials teach: DataLoader(TensorDataset), shuffle, loss.item() every step."""
    from torch.utils.data import DataLoader, TensorDataset

    model, loss_fn, _, X, y, device = _same_start(data, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=_train_config(spec).lr)  # as the tutorials write it
    loader = DataLoader(TensorDataset(X.cpu(), y.cpu()), batch_size=spec.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))

    def epoch():
        model.train()
        running_loss = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss, _ = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(xb)
        return running_loss

    return Loop("tutorial loop", epoch, "DataLoader(TensorDataset), torch.optim.Adam(lr), loss.item() per step")


def bare_loop(data: Path, spec: TrainSpec) -> Loop:
    """Forward, loss, backward and step only, on batches cut beforehand: the compute the loop cannot avoid."""
    model, loss_fn, optimizer, X, y, device = _same_start(data, spec)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0)).to(device)
    X, y = X[order], y[order]
    batches = [(X[s:s + spec.batch_size], y[s:s + spec.batch_size]) for s in range(0, len(X), spec.batch_size)]
    if len(batches) > 1 and len(batches[-1][0]) == 1:  # as the Trainer does: BatchNorm cannot train on one
        batches[-2:] = [(X[-spec.batch_size - 1:], y[-spec.batch_size - 1:])]

    def epoch():
        model.train()
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
        _sync(device)

    return Loop("bare step loop", epoch, "forward+loss+backward+step on batches cut beforehand, the Trainer's "
                "optimizer")


def measure_loops(loops: list[Loop], series: int, rounds: int, min_seconds: float) -> dict[str, EpochTimes]:
    """One warm-up epoch each, then epochs round-robin (so drift hits every loop alike) until each loop
    has `rounds` epochs and at least `min_seconds` of timed epochs."""
    warm, times = {}, {loop.name: [] for loop in loops}
    for loop in loops:
        settle()
        start = time.perf_counter()
        loop.epoch()
        warm[loop.name] = time.perf_counter() - start
        loop.after_warmup()
    while any(len(t) < rounds or sum(t) < min_seconds for t in times.values()) and len(times[loops[0].name]) < 100:
        for loop in loops:
            settle()
            start = time.perf_counter()
            loop.epoch()
            times[loop.name].append(time.perf_counter() - start)
    return {loop.name: EpochTimes(times[loop.name], warm[loop.name], series, loop.info()) for loop in loops}
