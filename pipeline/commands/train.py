"""`pipeline train`: the options, their configs, resume and several processes."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from pipeline.commands.common import UserError, path_text, user_errors
from pipeline.config import (AUTO_VAL_FRACTION, AUTO_VAL_MIN_SERIES, COMPILE_CHOICES, COMPILE_MODES, DEFAULT_EPOCHS,
                             DEFAULT_EPOCHS_EMBEDDED, DEFAULT_PATIENCE, DEVICES, LOSS_PARAM_DEFAULTS, MODEL_NAMES,
                             NORMALIZE_MODES, OPTIMIZERS, PAPER_RECIPES, PRECISIONS, SCHEDULERS, DataConfig,
                             LossConfig, ModelConfig, TrainConfig, default_epochs, model_help, recipe)
from pipeline.errors import PipelineError
from runtime.tasks import TASK_NAMES, TASKS


def _loss_help() -> str:
    rows = "; ".join(f"{name}: {', '.join(spec.loss_names)}" for name, spec in TASKS.items())
    return f"Loss (first per task is the default) - {rows}; or your own as package.module:ClassName."


# the models trained with their papers' recipe (one recipe, the same for each), named in the help texts
PAPER_MODELS = " and ".join(PAPER_RECIPES)
PAPER_RECIPE = next(iter(PAPER_RECIPES.values()))


def _small_set_val_splits() -> str:
    """'0 for binary, multiclass, multilabel; 0.3 for regression, count': each task's small-set hold-out."""
    by_split: dict[float, list[str]] = {}
    for name, task in TASKS.items():
        by_split.setdefault(task.small_set_val_split, []).append(name)
    return "; ".join(f"{split:g} for {', '.join(names)}" for split, names in by_split.items())


def _floats(flag: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} '{text}' must be a number or comma-separated numbers like 1,2.5") from None


def _loss_params(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--loss-param '{item}' must look like NAME=VALUE (VALUE is read as JSON if it can be)")
        pairs.append((key, value))
    return tuple(pairs)


# Flags that may change when a run is resumed; every other flag is fixed by the saved run.
RESUMABLE_FLAGS = ("--epochs", "--patience", "--nproc", "--device", "--compile", "--compile-mode", "--precision",
                   "--progress", "--mlflow-optional")
RESUMABLE = {"resume", "compile_"} | {f[2:].replace("-", "_") for f in RESUMABLE_FLAGS}


@click.command()
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Training series: .npz (X, y), .csv, UCR .tsv or UCR/UEA .ts. Default: embedded waveforms.")
@click.option("--val-data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Validation file (same format rules); replaces --val-split.")
@click.option("--test-data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Test file, scored with the best checkpoint at the end.")
@click.option("--val-split", type=float, default=None,
              help="Fraction of training series held out (stratified for classes); 0 selects by training loss. "
              f"[default: {AUTO_VAL_FRACTION:g} with {AUTO_VAL_MIN_SERIES} or more training series; below that "
              f"{_small_set_val_splits()}]")
@click.option("--target-column", default=None, help="CSV label column name or 0-based index (default: last); "
              "several comma-separated for multi-target.")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None, help="Task; inferred from the labels if omitted.")
@click.option("--normalize", type=click.Choice(NORMALIZE_MODES), default="channel", show_default=True,
              help="channel: z-score per channel fitted on training data; series: per series; none.")
@click.option("--pad", is_flag=True, help="Right-pad unequal-length .ts series with their last value.")
@click.option("--loss", "loss_name", default=None, metavar="NAME", help=_loss_help())
@click.option("--huber-delta", type=float, default=None,
              help=f"Delta of --loss huber. [default: {LOSS_PARAM_DEFAULTS['huber_delta']}]")
@click.option("--beta", type=float, default=None,
              help=f"Beta of --loss smooth_l1. [default: {LOSS_PARAM_DEFAULTS['beta']}]")
@click.option("--pos-weight", default=None, metavar="W[,W..]",
              help="Positive-class weight for bce_with_logits: one number or one per label.")
@click.option("--class-weights", default=None, metavar="balanced|W1,W2,..",
              help="Class weights for cross_entropy/nll/multi_margin; 'balanced' computes them from the labels.")
@click.option("--label-smoothing", type=float, default=None,
              help=f"For cross_entropy. [default: {LOSS_PARAM_DEFAULTS['label_smoothing']}]")
@click.option("--loss-param", multiple=True, metavar="NAME=VALUE", help="Constructor argument of a custom loss.")
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="fcn", show_default=True,
              help=model_help())
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Train N members (seeds SEED..SEED+N-1) in one run folder; export one graph that averages their "
              "probabilities (classification) or predictions. --model inception --ensemble 5 is InceptionTime, "
              "--model lite --ensemble 5 is LITETime.")
@click.option("--width", type=float, default=1.0, show_default=True, help="Multiplies the model's channel sizes.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate.")
@click.option("--epochs", type=int, default=None,
              help=f"Epochs [default: {DEFAULT_EPOCHS}, {PAPER_RECIPE.epochs} for {PAPER_MODELS}; "
              f"{DEFAULT_EPOCHS_EMBEDDED} on the embedded data].")
@click.option("--batch-size", type=int, default=None,
              help="[default: training series / 10, between 2 and 32, as Wang et al. for small sets; "
              f"{PAPER_RECIPE.batch_size} for {PAPER_MODELS}]")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="For --optimizer sgd.")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="plateau", show_default=True,
              help="plateau halves the rate when the monitored loss stalls; cosine anneals over --epochs.")
@click.option("--patience", type=int, default=None,
              help=f"Early stopping after this many epochs without improvement; 0 turns it off. [default: "
              f"{DEFAULT_PATIENCE}; 0 for {PAPER_MODELS}]")
@click.option("--lr-patience", type=int, default=None,
              help="Epochs without improvement before --scheduler plateau halves the rate. [default: a third of "
              f"--patience, at least 3 (10 without early stopping); {PAPER_RECIPE.lr_patience} for "
              f"{PAPER_MODELS}]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compile", "compile_", type=click.Choice(COMPILE_CHOICES), default="auto", show_default=True,
              help="torch.compile the model and the loss; auto compiles on CUDA only (slower on CPU).")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default="default", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="bf16 runs the model's forward pass under bf16 autocast; weights, checkpoints, exports and "
              "the loss stay fp32. auto: bf16 where the device runs it natively (CUDA with bf16; CPUs with "
              "AVX-512 BF16 or AMX), fp32 elsewhere.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: a new folder under artifacts/].")
@click.option("--force", is_flag=True, help="Overwrite an existing, non-empty --out folder.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="RUN_DIR",
              help="Continue a run from its last checkpoint (raise --epochs to train longer).")
@click.option("--progress/--no-progress", default=True, help="Progress bars (shown on a terminal).")
@click.option("--tensorboard", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Write TensorBoard event files (losses, metrics, lr per epoch; hparams; the model graph) to DIR "
              "[default DIR: RUN_DIR/tensorboard]; a resumed run continues them.")
@click.option("--mlflow", default=None, metavar="URI",
              help="Log the run to MLflow: a tracking server (http://HOST:PORT) or a local database store "
              "(sqlite:///mlflow.db): the config as parameters, per-epoch metrics, tags, the run's files as artifacts. "
              "Experiment: $MLFLOW_EXPERIMENT_NAME [default: pipeline]. A resumed run continues its MLflow run.")
@click.option("--mlflow-optional", is_flag=True,
              help="Train without MLflow (one warning line) when the --mlflow store cannot be reached.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes on this machine: runs this command under torchrun (DDP, gloo on CPU, "
              "NCCL on CUDA); --batch-size stays the global batch. For several machines run `torchrun ... -m "
              "pipeline.cli train ...` yourself.")
@click.pass_context
@user_errors
def train(ctx, **opts):
    """Train a model and write a run folder (checkpoints, history, loss curve, metrics).

    \b
    Examples:
      pipeline train
      pipeline train --data GunPoint_TRAIN.ts --test-data GunPoint_TEST.ts
      pipeline train --data prices.csv --target-column close --task regression --loss huber --huber-delta 0.5
      pipeline train --data ecg.npz --class-weights balanced --label-smoothing 0.1 --model resnet
      pipeline train --data x.npz --loss mylosses:FocalLoss --loss-param gamma=2
      pipeline train --resume artifacts/20261121-101500-fcn-multiclass --epochs 600
      pipeline train --tensorboard --out artifacts/tb-demo
      pipeline train --mlflow http://127.0.0.1:5000 --out artifacts/mlflow-demo
      pipeline train --model lite --data GunPoint_TRAIN.ts --test-data GunPoint_TEST.ts
      pipeline train --model inception --ensemble 5 --data GunPoint_TRAIN.ts --test-data GunPoint_TEST.ts --out artifacts/inceptiontime
      pipeline train --data big.npz --nproc 2 --batch-size 64
      torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --rdzv-endpoint host0:29500 -m pipeline.cli train ...
    """
    # every flag is checked before torch is imported (seconds), so a typo fails at once
    if opts["resume"] is not None:
        fixed = sorted(k for k in opts if k not in RESUMABLE and
                       ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE)
        if fixed:
            flags = ", ".join("--" + k.rstrip("_").replace("_", "-") for k in fixed)
            raise UserError(f"--resume continues a run with its saved settings; {flags} cannot be changed "
                            f"(allowed with --resume: {', '.join(RESUMABLE_FLAGS)})")
        overrides = {k: opts[k] for k in ("device", "compile_mode", "precision", "progress", "patience")
                     if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
        if ctx.get_parameter_source("compile_") == click.core.ParameterSource.COMMANDLINE:
            overrides["compile"] = opts["compile_"]
    else:
        configs = _train_configs(opts)

    from pipeline import distributed
    from pipeline import train as training

    if distributed.from_env().main:  # before any process starts: a store that is down is one line, not a traceback
        uri = configs[3].mlflow if opts["resume"] is None else _saved_mlflow(opts["resume"])
        if uri is not None and not _mlflow_reachable(uri, opts["mlflow_optional"]):
            if opts["resume"] is None:
                configs = (*configs[:3], dataclasses.replace(configs[3], mlflow=None))
            else:
                overrides["mlflow"] = None
    if opts["nproc"] > 1 and not distributed.from_env().enabled:
        raise SystemExit(distributed.launch(opts["nproc"], _without_nproc(sys.argv[1:])))
    if opts["resume"] is not None:
        result = training.resume(opts["resume"], epochs=opts["epochs"], overrides=overrides, log=click.echo,
                                 preflight=_dry_export)
    else:
        result = training.train(*configs, out=opts["out"], force=opts["force"], log=click.echo,
                                preflight=_dry_export)
    if distributed.from_env().main:
        _summarise(result)


def _saved_mlflow(run_dir: Path) -> str | None:
    from pipeline.run_folder import RunFolder

    return RunFolder(run_dir).read_config().get("train", {}).get("mlflow")


def _mlflow_reachable(uri: str, optional: bool) -> bool:
    """True when the store answers; else one error line, or with --mlflow-optional one warning and False."""
    from pipeline.tracking import check_mlflow

    try:
        check_mlflow(uri)
    except PipelineError as exc:
        if not optional:
            raise PipelineError(f"{exc}; --mlflow-optional trains without it") from None
        click.echo(f"warning: {exc}; training without MLflow (--mlflow-optional)", err=True)
        return False
    return True


def _dry_export(*args) -> None:
    """A custom loss is exported on a few series before training (export.dry_run), imported only then."""
    from export.dry_run import check_loss_exports

    check_loss_exports(*args)


def _train_configs(opts: dict) -> tuple[DataConfig, LossConfig, ModelConfig, TrainConfig]:
    """The four validated configs of a new run, from the command line's options."""
    data_cfg = DataConfig(
        data=path_text(opts["data"]), val_data=path_text(opts["val_data"]), test_data=path_text(opts["test_data"]),
        val_split=opts["val_split"],
        target_column=opts["target_column"], task=opts["task"], normalize=opts["normalize"], pad=opts["pad"])
    class_weights = opts["class_weights"]
    loss_cfg = LossConfig(
        name=opts["loss_name"], huber_delta=opts["huber_delta"], beta=opts["beta"],
        pos_weight=_floats("--pos-weight", opts["pos_weight"]),
        class_weights=class_weights if class_weights in (None, "balanced")
        else _floats("--class-weights", class_weights),
        label_smoothing=opts["label_smoothing"], loss_params=_loss_params(opts["loss_param"]))
    model_cfg = ModelConfig(name=opts["model_name"], width=opts["width"], ensemble=opts["ensemble"])
    plan = recipe(opts["model_name"])  # the model's defaults; a flag given wins
    epochs = opts["epochs"] if opts["epochs"] is not None else default_epochs(opts["data"] is None, opts["model_name"])
    train_cfg = TrainConfig(
        epochs=epochs, batch_size=_given(opts["batch_size"], plan.batch_size), lr=opts["lr"],
        optimizer=opts["optimizer"], momentum=opts["momentum"], weight_decay=opts["weight_decay"],
        scheduler=opts["scheduler"], patience=_given(opts["patience"], plan.patience),
        lr_patience=_given(opts["lr_patience"], plan.lr_patience), seed=opts["seed"], compile=opts["compile_"],
        compile_mode=opts["compile_mode"], device=opts["device"], precision=opts["precision"],
        progress=opts["progress"], tensorboard=opts["tensorboard"], mlflow=opts["mlflow"])
    return data_cfg, loss_cfg, model_cfg, train_cfg


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line again without --nproc (the processes torchrun starts must not launch again)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _given(value, default):
    return default if value is None else value


def _summarise(result) -> None:
    m = result.metrics
    for split in ("train", "val", "test"):
        if split in m:
            shown = ", ".join(f"{k}={'n/a' if v is None else f'{v:.4g}'}" for k, v in m[split].items())
            click.echo(f"{split:>5}: {shown}")
    if "members" in m:
        for member in m["members"]:
            shown = ", ".join(f"{split} {k}={v:.4g}" for split in ("val", "test") if split in member
                              for k, v in list(member[split].items())[:2] if v is not None)
            click.echo(f"member {member['member']} (seed {member['seed']}): best epoch {member['best_epoch']} of "
                       f"{member['epochs_run']}{': ' + shown if shown else ''}")
        click.echo(f"the lines above the members are the ensemble's (the average of {len(m['members'])} members; "
                   f"each selected by {m['selected_by']})")
    else:
        click.echo(f"best epoch {m['best_epoch']} of {m['epochs_run']} (selected by {m['selected_by']})")
    click.echo(f"wrote {result.run_dir}")
    click.echo(f"next: pipeline export {result.run_dir} --format all")
