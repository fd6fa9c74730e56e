"""One run's training: the Trainer (model, loss, optimizer and schedule, the epoch loop, checkpoints, history,
trackers and the end-of-run report)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.training import distributed, precision
from pipeline.training.base_rate import OUTPUT_BASE, OutputBase, fit_output_base
from pipeline.training.base_rate import rule as base_rule
from pipeline.training.batching import BatchSource, batch_bounds, evaluate, predict_raw
from pipeline.training.checkpoint import load_checkpoint
from pipeline.settings.config import MODELS, auto_batch_size
from pipeline.data.load import Datasets
from pipeline.data.prepare import LabelEncoding
from pipeline.errors import PipelineError
from pipeline.losses import (TargetBalancedLoss, WindowScaledLoss, build_loss, check_custom_loss, resolve_loss_name,
                             resolve_loss_params, target_loss_scales, user_loss)
from pipeline.models.build import SequenceModel, build_model
from pipeline.training.optim import make_optimizer, make_scheduler, pick_device
from pipeline.models.ridge import fit_head, fit_transform, kernel_head
from pipeline.training.run_config import LossChoice, ModelRecord, RunConfig, RunSettings
from pipeline.training.run_folder import MEMBERS_DIR, RunFolder
from pipeline.training.tracking import RunEnd
from runtime import forecast, segments
from runtime.segments import step_rows
from runtime.windows import window_view
from runtime.inputs import plural
from runtime.tasks import TASKS

# Progress bars: None shows them on a terminal when --progress (the CLI); the Python API's progress= sets it
SHOW_BARS: contextvars.ContextVar[bool | None] = contextvars.ContextVar("show_bars", default=None)
# Steps between reads of the loss (a device sync): a non-finite loss is still reported with its exact batch.
CHECK_EVERY = 20


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    history: list[dict]


@dataclass(frozen=True)
class StepModules:
    """What each training step calls, and the epoch's fixed batch layout."""

    model: Callable
    loss: Callable
    autocast: Callable[[], contextlib.AbstractContextManager]
    bounds: list[tuple[int, int]]
    batch_sizes: Tensor  # (n_batches,) float


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def forecast_model(cfg, window: dict, loss_params: dict):
    """--task forecast: the model's forecast shape (targets, horizon, quantiles) and raw width T * H * Q; the
    window record gains the quantiles (the manifest's `window`)."""
    quantiles = loss_params.get("quantiles")
    if quantiles and cfg.head == "ridge":
        raise PipelineError(f"--loss quantile: --model {cfg.name}'s ridge head is fitted in closed form to the mean, "
                            "not to quantiles; pass --head linear (trained by gradient descent on the pinball loss), "
                            "or a point loss")
    if quantiles:
        window["quantiles"] = list(quantiles)
    q = len(quantiles) if quantiles else 1
    return replace(cfg, n_outputs=cfg.n_outputs * q, horizon=window["horizon"], targets=tuple(window["targets"]),
                   quantiles=q)


class Trainer:
    """One run: built from configs (new run) or from a run folder (resume)."""

    def __init__(self, run_dir: Path, settings: RunSettings, datasets: Datasets, log: Callable[[str], None],
                 preflight: Callable | None = None, saved: ModelRecord | None = None):
        """`saved`: a resumed run's record, whose loss and output layer are kept as recorded."""
        data_cfg, loss_cfg, model_cfg, train_cfg = settings.data, settings.loss, settings.model, settings.train
        self.run_dir, self.settings, self.data_cfg, self.loss_cfg, self.cfg = run_dir, settings, data_cfg, loss_cfg, \
            train_cfg
        # what trackers call the run: its folder's name, an ensemble member's with the ensemble's before it
        self.name = f"{run_dir.parent.parent.name}/{run_dir.name}" if run_dir.parent.name == MEMBERS_DIR \
            else run_dir.name
        self.ranks = distributed.from_env()
        if train_cfg.threads is not None:  # one rule for the whole run: every op and the kernel models' fit
            torch.set_num_threads(train_cfg.threads)
        self.folder = RunFolder(run_dir, writes=self.ranks.main)  # every file of the run is written through it
        self.log = log if self.ranks.main else (lambda _: None)  # one voice, not one per process
        self.datasets = datasets
        enc: LabelEncoding = datasets.encoding
        self.task = TASKS[enc.task]
        if saved is not None:  # a resumed run keeps the loss it was trained with, as recorded
            self.loss_name, self.loss_params = saved.loss.name, saved.loss.params
        else:
            self.loss_name = resolve_loss_name(enc.task, loss_cfg.name)
            per_step_targets = datasets.window is not None and datasets.window["label"] == "each"
            self.loss_params = resolve_loss_params(loss_cfg, self.loss_name, enc, step_rows(datasets.train.targets)
                                                   if per_step_targets else datasets.train.targets)
        self.device = distributed.start(self.ranks, pick_device(train_cfg.device))
        self.kernel = MODELS[model_cfg.name].kernel
        self.precision = precision.resolve(train_cfg.precision, self.device, self.kernel)
        torch.manual_seed(train_cfg.seed + train_cfg.member)
        self.model_cfg = replace(model_cfg, in_channels=datasets.channels, length=datasets.length,
                                 n_outputs=enc.n_outputs, normalize=data_cfg.normalize, combine=self.task.scores,
                                 head=kernel_head(model_cfg, len(datasets.train)))
        if self.task.scores == "forecast":
            self.model_cfg = forecast_model(self.model_cfg, datasets.window, self.loss_params)
        if datasets.window is not None and datasets.window["label"] == "each":  # a score at every time step
            self.model_cfg = replace(self.model_cfg, per_step=True)
        self.model: SequenceModel = build_model(self.model_cfg).to(self.device)
        self.loss_fn = build_loss(self.loss_name, self.loss_params, self.model_cfg.per_step).to(self.device)
        self.train_src = BatchSource(datasets.train, self.device)
        self.val_src = BatchSource(datasets.val, self.device) if datasets.val else None
        if data_cfg.normalize == "channel":
            self.model.normalize.fit(*self.train_src.channel_stats())
        features = fit_transform(self.model, self.train_src, self.cfg.seed + self.cfg.member, self.log) \
            if self.kernel and saved is None else None
        if user_loss(self.loss_fn) is not None:  # checked before anything else runs it (the output base does)
            x, y = self.train_src.batch(torch.arange(min(4, self.train_src.n)))
            with torch.no_grad():
                prediction = self.model.eval()(x)
            check_custom_loss(self.loss_fn, prediction, y, self.loss_name)
        self._setup_output_layer(saved)
        if user_loss(self.loss_fn) is not None and preflight is not None:
            with torch.no_grad():
                prediction = self.model.eval()(x)
            preflight(self.loss_fn.eval(), prediction, y, self.loss_name, self.log)  # e.g. a dry export of the loss:
            self.loss_fn.train()  # fail in seconds, not after training
        if features is not None and self.model_cfg.head == "ridge":
            y = self.train_src.y
            if self.model.reversible is not None:  # a forecaster's network answers in each window's units
                with torch.no_grad():
                    y = self.model.normalised_targets(self.train_src.batch(torch.arange(self.train_src.n))[0], y)
            self.output_base = fit_head(self.model, features, y, self.task.scores, self.output_base,
                                        self.loss_fn, self.loss_name, self.log)
        # a ridge head is solved in closed form: no optimizer (building one imports torch._dynamo, 1.5 s)
        self.optimizer = None if self.model_cfg.head == "ridge" else make_optimizer(train_cfg, self.model)
        self.scheduler = make_scheduler(train_cfg, self.optimizer) if self.optimizer is not None else None
        self.shuffle = torch.Generator().manual_seed(train_cfg.seed + train_cfg.member)
        self.history: list[dict] = []
        self.epoch = 0
        self.best = {"loss": math.inf, "epoch": 0}
        self.bad_epochs = 0
        self.batch_size = train_cfg.batch_size or auto_batch_size(self.train_src.n)
        if self.ranks.enabled and self.batch_size < 2 * self.ranks.world:
            raise PipelineError(f"--batch-size {self.batch_size} is the global batch, split over {self.ranks.world} "
                                f"processes; it must be at least {2 * self.ranks.world} (2 rows per process)")
        self.parallel = self.model
        if self.ranks.enabled:  # gradients averaged over processes; BatchNorm buffers follow rank 0
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.parallel = DistributedDataParallel(self.model, device_ids=ids)
        self.best_model: dict | None = None  # the best weights, kept by every process (rank 0 also writes them)
        self.use_compile = train_cfg.compile == "on" or (train_cfg.compile == "auto" and self.device.type == "cuda")

    @property
    def epochs(self) -> int:
        """The epochs this run trains: a closed-form ridge head has one, which only measures it."""
        return 1 if self.model_cfg.head == "ridge" else self.cfg.epochs

    def _setup_output_layer(self, saved: ModelRecord | None) -> None:
        """The output layer at the data's base rate (a resumed run's as recorded; a run saved before the layer
        existed has none recorded and resumes as it was trained), and the loss scale that goes with it."""
        self.output_base = saved.output_base if saved is not None else self._fit_output_base()
        if self.output_base is not None:
            self.model.output.fit(torch.tensor(self.output_base.scale), torch.tensor(self.output_base.shift))
        self.loss_scale = self.output_base.loss_scale if self.output_base is not None else 1.0
        self.balanced_loss = None  # regression, built-in loss: each target's loss over its own baseline
        if self.model.reversible is not None:  # forecasts: each window's loss in its own scale
            self.balanced_loss = WindowScaledLoss(self.loss_fn, len(self.model_cfg.targets)).to(self.device)
            self.loss_scale = 1.0
            return
        if self.output_base is not None and self.output_base.target_loss_scales is not None:
            self.balanced_loss = TargetBalancedLoss(self.loss_fn, torch.tensor(self.output_base.target_loss_scales))
            self.balanced_loss.to(self.device)
            self.loss_scale = 1.0  # the balance already gives the mean predictor a loss of 1

    def _fit_output_base(self) -> OutputBase:
        """The output layer at the training targets' base rate; for a loss in the targets' units, the
        loss scale: the mean predictor's loss on them (1 where that is not a positive number), and for a
        built-in loss each target's own."""
        enc = self.datasets.encoding
        targets = self.datasets.train.targets
        base = fit_output_base(enc.task, step_rows(targets) if self.model_cfg.per_step else targets, enc.n_outputs,
                               self.loss_params)
        if not base_rule(enc.task).scales_loss:
            return base
        y = self.train_src.y
        mean_predictor = torch.tensor(base.shift, dtype=torch.float32, device=y.device).expand_as(y).contiguous()
        try:
            with torch.no_grad():
                baseline = float(self.loss_fn(mean_predictor, y)[0])
        except Exception as exc:  # a user loss that passed its check on one batch, failing on all the targets
            raise PipelineError(f"--loss '{self.loss_name}' failed on the mean predictor of all "
                                f"{len(y):,} training targets {tuple(y.shape)}: {type(exc).__name__}: {exc}") from None
        return replace(base, loss_scale=baseline if math.isfinite(baseline) and baseline > 0 else 1.0,
                       target_loss_scales=target_loss_scales(self.loss_fn, mean_predictor, y))

    # --- state -------------------------------------------------------------------------------
    def describe(self) -> ModelRecord:
        """Everything needed to rebuild the model and the loss; stored in config.json and checkpoints."""
        return ModelRecord(self.model_cfg, self.datasets.encoding, LossChoice(self.loss_name, self.loss_params),
                           self.output_base, self.datasets.csv_labels, self.datasets.window)

    def run_config(self) -> RunConfig:
        """The run's config.json (an ensemble's member's own)."""
        return RunConfig(self.settings, self.describe(), torch_version=torch.__version__)

    def _state(self, full: bool) -> dict:
        state = {**self.describe().to_dict(), "model": self.model.state_dict(), "epoch": self.epoch,
                 "best": dict(self.best)}
        if full:
            state.update(
                optimizer=self.optimizer.state_dict() if self.optimizer is not None else None,
                scheduler=self.scheduler.state_dict() if self.scheduler else None,
                rng={"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()},
                history=list(self.history), bad_epochs=self.bad_epochs,
            )
        return state

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None and state["optimizer"]:  # ridge runs have none (older ones saved an unstepped one)
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.history = list(state["history"])
        self.epoch, self.best, self.bad_epochs = state["epoch"], dict(state["best"]), state["bad_epochs"]

    # --- loop --------------------------------------------------------------------------------
    def step_modules(self) -> StepModules:
        """What one training step calls: the model and loss, compiled separately when asked (the eager
        modules stay for saving and evaluation), under bf16 autocast when asked."""
        step_model = self.parallel
        step_loss = self.balanced_loss if self.balanced_loss is not None else self.loss_fn
        if self.use_compile:
            step_model = torch.compile(self.parallel, mode=self.cfg.compile_mode)
            step_loss = torch.compile(step_loss, mode=self.cfg.compile_mode)
        autocast = ((lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if self.precision.used == "bf16"
                    else contextlib.nullcontext)
        bounds = batch_bounds(self.train_src.n, self.batch_size, min_last=2 * self.ranks.world)
        sizes = torch.tensor([e - s for s, e in bounds], dtype=torch.float32, device=self.device)
        return StepModules(step_model, step_loss, autocast, bounds, sizes)

    def train_epoch(self, epoch: int, steps: StepModules, show_bars: bool = False) -> float:
        """One pass over the shuffled training rows; returns the mean training loss."""
        from tqdm.auto import tqdm

        if self.model_cfg.head == "ridge":  # fitted in closed form: the epoch measures it
            return evaluate(self.model, self.loss_fn, self.train_src, self.task.name)["loss"]
        self.model.train()
        perm = torch.randperm(self.train_src.n, generator=self.shuffle)  # the same on every process
        local_sums = torch.empty(len(steps.bounds), device=self.device)  # this process's loss x rows, per batch
        global_sums = torch.empty(len(steps.bounds), device=self.device)  # read every CHECK_EVERY steps
        world = self.ranks.world
        batch_bar = tqdm(steps.bounds, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not show_bars,
                         dynamic_ncols=True)
        for i, (s, e) in enumerate(batch_bar):
            a, b = distributed.shard(s, e, self.ranks)  # this process's rows of the global batch
            xb, yb = self.train_src.batch(perm[a:b])
            if self.use_compile:
                torch._dynamo.mark_dynamic(xb, 0)
            with steps.autocast():
                out = steps.model(xb)
            # the loss in fp32 whatever the forward pass ran in; balanced over targets for regression, whose
            # reported loss stays the user's
            spread = (self.model.target_spread(xb),) if self.model.reversible is not None else ()
            loss, reported = steps.loss(out.float(), yb, *spread)
            reported = reported.detach() if self.balanced_loss is not None else loss.detach()
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes; weighting each mean by its share of the rows makes the
            # update the global batch mean even when shares differ by one row
            # and dividing by the loss scale gives a loss in the targets' units the gradients of standardised ones
            share = (b - a) * world / (e - s) if world > 1 else 1.0
            (loss * (share / self.loss_scale)).backward()
            self.optimizer.step()
            local_sums[i] = reported * (b - a)
            if (i + 1) % CHECK_EVERY == 0 or i + 1 == len(steps.bounds):
                start = i - i % CHECK_EVERY
                global_sums[start:i + 1] = distributed.sum_across(local_sums[start:i + 1], self.ranks)
                self._check_finite(global_sums[start:i + 1] / steps.batch_sizes[start:i + 1], start, epoch)
                if show_bars:
                    batch_bar.set_postfix(loss=f"{float(global_sums[:i + 1].sum()) / e:.4g}")
        distributed.average_buffers(self.model, self.ranks)  # one model to evaluate and save, on every process
        return float(global_sums.sum()) / self.train_src.n

    def fit(self) -> RunResult:
        cfg = self.cfg
        started = time.perf_counter()
        steps = self.step_modules()
        self.log(f"precision: {self.precision.used} ({self.precision.reason})"
                 + ("; weights, checkpoints, exports and the loss stay fp32" if self.precision.used == "bf16" else ""))
        from tqdm.auto import tqdm

        shown = SHOW_BARS.get()
        show_bars = (cfg.progress and sys.stderr.isatty()) if shown is None else shown
        epochs_bar = tqdm(range(self.epoch + 1, self.epochs + 1), desc="epochs", unit="ep",
                          initial=self.epoch, total=self.epochs, disable=not show_bars, dynamic_ncols=True)
        trackers = self._trackers()
        try:
            result = self._epochs(steps, epochs_bar, show_bars, trackers, started)
        except BaseException as exc:
            for tracker in trackers:
                tracker.fail(interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        end = RunEnd(self.hparams(), result.metrics, self.folder.files(), self.epoch)
        for tracker in trackers:
            tracker.finish(end)
        return result

    def _epochs(self, steps, epochs_bar, show_bars: bool, trackers: list, started: float) -> RunResult:
        """The epoch loop and the end-of-run report."""
        cfg = self.cfg
        metric = self.task.metrics[0]
        graphs_start = _graph_count() if self.use_compile else 0
        graphs_after_first = None
        stopped_early = False
        for epoch in epochs_bar:
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch, steps, show_bars)
            val = (evaluate(self.model, self.loss_fn, self.val_src, self.task.name, self.balanced_loss)
                   if self.val_src else None)
            # the scheduler and the best epoch follow the loss training minimises (regression: balanced over
            # targets, so a large target does not choose the epoch alone); the history reports the user's
            monitored = val.pop("balanced_loss", val["loss"]) if val else train_loss
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(monitored)
            elif self.scheduler is not None:
                self.scheduler.step()
            self.epoch = epoch
            if epoch == 1 and self.use_compile:
                graphs_after_first = _graph_count()
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"] if val else None,
                "val_metric": val[metric] if val else None, "lr": self._lr(),
                "seconds": round(time.perf_counter() - t0, 4),
            })
            if monitored < self.best["loss"]:
                self.best, self.bad_epochs = {"loss": monitored, "epoch": epoch}, 0
                self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.folder.save_best(self._state(full=False))
            else:
                self.bad_epochs += 1
            self.folder.save_epoch(self._state(full=True), self.history, metric)
            for tracker in trackers:  # after the checkpoint: a resumed run never sends an epoch twice
                tracker.epoch(self.history[-1], val)
            self._report_epoch(epochs_bar, show_bars, val, metric)
            if cfg.patience and self.bad_epochs >= cfg.patience:
                stopped_early = True
                self.log(f"early stop: no improvement for {cfg.patience} epochs (best epoch {self.best['epoch']})")
                break
        epochs_bar.close()
        compile_info = None
        if self.use_compile:
            total_graphs = _graph_count() - graphs_start
            after_first = (graphs_after_first - graphs_start) if graphs_after_first is not None else total_graphs
            compile_info = {"mode": cfg.compile_mode, "graphs": total_graphs,
                            "recompiles_after_epoch_1": total_graphs - after_first}
            self.log(f"compile: {plural(total_graphs, 'graph')} compiled, {total_graphs - after_first} after epoch 1")
        return self._finish(time.perf_counter() - started, stopped_early, compile_info)

    def _trackers(self) -> list:
        """TensorBoard and MLflow as asked for, on the main process only."""
        if not self.folder.writes:
            return []
        trackers = [self._tensorboard()] if self.cfg.tensorboard is not None else []
        return trackers + ([self._mlflow()] if self.cfg.mlflow is not None else [])

    def _mlflow(self):
        """A new MLflow run (its id saved in config.json, so --resume continues it), or the run's own again."""
        from pipeline.training.tracking import MLflowRun

        config = self.folder.read_config()
        if config.mlflow_run_id:
            tracker = MLflowRun.resume(self.cfg.mlflow, config.mlflow_run_id, self.epoch, self.cfg.epochs, self.log)
        else:
            tags = {"task": self.task.name, "loss": self.loss_name, "model": self.model_cfg.name,
                    "run_dir": str(self.run_dir.resolve())}
            tracker = MLflowRun.start(self.cfg.mlflow, config.to_dict(), self.name, tags, self.log)
            self.folder.update_config(replace(config, mlflow_run_id=tracker.run_id))
        self.log(f"mlflow: run {tracker.run_id} at {self.cfg.mlflow}")
        return tracker

    def _tensorboard(self):
        """The TensorBoard writer when --tensorboard was given (main process only), with the graph on a new run."""
        if self.cfg.tensorboard is None or not self.folder.writes:
            return None
        from pipeline.training.tracking import TensorBoard

        tensorboard = TensorBoard(Path(self.cfg.tensorboard), first_epoch=self.epoch + 1)
        if self.epoch == 0:
            x, _ = self.train_src.batch(torch.arange(min(2, self.train_src.n)))
            tensorboard.graph(self.model.eval(), x)
        self.log(f"tensorboard: {self.cfg.tensorboard} (tensorboard --logdir {self.cfg.tensorboard})")
        return tensorboard

    def hparams(self) -> dict:
        """The run's settings as flat values, for trackers."""
        return {"task": self.task.name, "loss": self.loss_name, "model": self.model_cfg.name,
                "width": self.model_cfg.width, "lr": self.cfg.lr, "batch_size": self.batch_size,
                "epochs": self.cfg.epochs, "optimizer": self.cfg.optimizer, "scheduler": self.cfg.scheduler,
                "seed": self.cfg.seed, "precision": self.precision.used, "processes": self.ranks.world}

    def _check_finite(self, batch_means: Tensor, start: int, epoch: int) -> None:
        """One sync per CHECK_EVERY steps: the first non-finite mean loss of batches start.. stops training."""
        finite = torch.isfinite(batch_means)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0, 0])
        raise PipelineError(f"training diverged: loss is {float(batch_means[bad])} at epoch {epoch}, batch "
                            f"{start + bad + 1}; lower --lr or check the data. The last good checkpoint is "
                            f"{self.folder.last}")

    def _lr(self) -> float:
        """The learning rate of the epoch just run; a ridge run records --lr as given (it steps no optimizer)."""
        return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.cfg.lr

    def _report_epoch(self, bar, show_bars: bool, val: dict | None, metric: str) -> None:
        row = self.history[-1]
        text = f"train_loss={row['train_loss']:.4g}"
        if val:
            text += f" val_loss={val['loss']:.4g} val_{metric}={_fmt(val[metric])}"
        if show_bars:
            bar.set_postfix_str(text)
            return
        every = max(1, self.epochs // 10)
        if row["epoch"] % every == 0 or row["epoch"] == self.epochs or row["epoch"] == 1:
            self.log(f"epoch {row['epoch']:>4}/{self.epochs} {text} lr={row['lr']:.3g}")

    def _finish(self, seconds: float, stopped_early: bool, compile_info: dict | None) -> RunResult:
        """The end-of-run report: the best weights evaluated on every split, metrics.json and the curve."""
        distributed.check_in_step(self.model, self.ranks)
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        else:  # resumed after the best epoch: the best weights are only on disk
            self.model.load_state_dict(load_checkpoint(self.folder.best)["model"])
        metrics = {
            "task": self.task.name, "loss": self.loss_name, "model": self.model_cfg.name,
            "best_epoch": self.best["epoch"], "epochs_run": self.epoch, "stopped_early": stopped_early,
            **self.final_metrics(), **self.run_report(), "compile": compile_info,
            "train_seconds": round(seconds, 3),
        }
        self.folder.save_report(metrics, [self.history], f"{self.model_cfg.name} · {self.task.name} · {self.loss_name}")
        return RunResult(self.run_dir, metrics, self.history)

    def final_metrics(self, model: nn.Module | None = None) -> dict[str, dict]:
        """Loss and task metrics of the current weights (or of `model`, e.g. an ensemble) on train,
        validation and test data."""
        sources = {"train": self.train_src, "val": self.val_src,
                   "test": BatchSource(self.datasets.test, self.device) if self.datasets.test else None}
        found = {split: evaluate(model or self.model, self.loss_fn, source, self.task.name)
                 for split, source in sources.items() if source is not None}
        if self.task.scores == "forecast":  # the model beside the naive forecasts, on the same windows
            found["forecast"] = {split: self.forecast_report(model or self.model, source)
                                 for split, source in sources.items() if source is not None and split != "train"}
        if self.model_cfg.per_step:  # every sample's stitched label and the events they make, per recording
            splits = {"val": self.datasets.val, "test": self.datasets.test}
            found["segments"] = {split: self.segment_report(model or self.model, sources[split], data)
                                 for split, data in splits.items() if data is not None}
        return found

    def segment_report(self, model: nn.Module, source: BatchSource, split) -> dict:
        """runtime.segments' report of `model` on a split's recordings, stitched as `pipeline evaluate` stitches
        them: the split's windows of each recording and, where they reach its end, its tail window (split.X is the
        recordings' WindowedSeries; split.sample_targets every sample's label)."""
        windows = split.X
        recs, length, stride = windows.recordings, windows.length, self.datasets.window["stride"]
        probs = segments.probabilities_of(predict_raw(model, source).cpu().numpy(), self.task.scores)
        recording, starts = windows.recording[split.rows], windows.starts[split.rows]
        true, predicted = [], []
        for r in np.unique(recording):
            mine = np.flatnonzero(recording == r)
            samples = int(recs.lengths()[r])
            end = segments.tail(samples, length, stride)
            last = None
            if end is not None and starts[mine].max() + length + stride > samples:  # the split holds its end
                x = torch.from_numpy(window_view(recs.samples, np.array([recs.offsets[r] + end[0]]), length))
                with torch.inference_mode():
                    last = segments.probabilities_of(model.eval()(x.to(self.device)).float().cpu().numpy(),
                                                     self.task.scores)[0]
            found = segments.stitched(probs[mine], starts[mine], samples, self.task.scores, last, stride)
            true.append(split.sample_targets[recs.offsets[r]:recs.offsets[r + 1]][found["sample"]])
            predicted.append(found["label"])
        return segments.segment_report(true, predicted, self.task.scores)

    def forecast_report(self, model: nn.Module, source: BatchSource) -> dict:
        """runtime.forecast.report of `model` on a split's windows (its history of the target channels)."""
        targets = list(self.model_cfg.targets)
        bounds = batch_bounds(source.n, 1024)
        history = np.concatenate([source.batch(torch.arange(s, e))[0][:, targets].cpu().numpy() for s, e in bounds])
        raw = predict_raw(model, source).cpu().numpy()
        window = self.datasets.window
        return forecast.report(history, raw, source.y.cpu().numpy(), window["horizon"], window["season"],
                               window.get("quantiles", ()))

    def run_report(self) -> dict:
        """The run-wide keys of metrics.json."""
        return {"selected_by": "val_loss" if self.val_src else "train_loss", "batch_size": self.batch_size,
                "device": str(self.device), "processes": self.ranks.world, "precision": self.precision.to_dict(),
                OUTPUT_BASE: self.output_base.to_dict() if self.output_base is not None else None,
                **({"window": self.datasets.window} if self.datasets.window else {})}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
