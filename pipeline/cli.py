"""The `pipeline` command line: thin click commands over the library functions.

This module imports no torch at import time, so `pipeline --help` works in a runtime-only install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.config import (AUTO_VAL_FRACTION, AUTO_VAL_MIN_SERIES, COMPILE_CHOICES, COMPILE_MODES, DEFAULT_EPOCHS,
                             DEFAULT_EPOCHS_EMBEDDED, DEFAULT_PATIENCE, DEVICES, LOSS_PARAM_DEFAULTS, MODEL_NAMES,
                             NORMALIZE_MODES, OPTIMIZERS, PAPER_RECIPES, PRECISIONS, SCHEDULERS, DataConfig,
                             LossConfig, ModelConfig, TrainConfig, default_epochs, model_help, recipe)
from pipeline.errors import TRAIN_EXTRA_HINT, PipelineError
from runtime.manifest import MODEL_PRECISIONS, QUANTIZATIONS
from runtime.tasks import TASK_NAMES, TASKS


class UserError(click.ClickException):
    """Our own errors: one message, exit status 2, no traceback."""

    exit_code = 2


def user_errors(fn):
    """Turn PipelineError (and a missing torch) into a one-line click error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            raise UserError(str(exc)) from None
        except ModuleNotFoundError as exc:
            if exc.name in ("torch", "onnx", "onnxscript", "matplotlib", "tqdm"):
                raise UserError(f"this command needs {exc.name}, which the runtime-only install leaves out; "
                                f"{TRAIN_EXTRA_HINT}") from None
            raise

    return wrapper


@contextlib.contextmanager
def export_failures():
    """An export that fails its checks (verification, capture, --max-metric-drop): one line, exit status 1."""
    from export.exporters import ExportError
    from export.quantize import MetricDropError
    from export.verify import VerificationError

    try:
        yield
    except (VerificationError, ExportError, MetricDropError) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def main():
    """Train 1D CNNs on sequences with the right loss; export and score them anywhere.

    \b
    Example:
      pipeline train                      # the embedded waveform data, about a minute on 2 CPU cores
      pipeline train --data ECG_TRAIN.ts --test-data ECG_TEST.ts
    """


# Flags that may change when a run is resumed; every other flag is fixed by the saved run.
RESUMABLE_FLAGS = ("--epochs", "--patience", "--nproc", "--device", "--compile", "--compile-mode", "--precision",
                   "--progress", "--mlflow-optional")
RESUMABLE = {"resume", "compile_"} | {f[2:].replace("-", "_") for f in RESUMABLE_FLAGS}


@main.command()
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
        data=_str(opts["data"]), val_data=_str(opts["val_data"]), test_data=_str(opts["test_data"]),
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


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


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

@main.command(name="export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", default="all", show_default=True, metavar="FORMATS",
              help="Graph formats, comma-separated: onnx, torchscript, pt2 (torch.export program), aoti "
              "(AOTInductor package compiled for this machine, for C++ without Python), all (= onnx,torchscript).")
@click.option("--device", type=click.Choice(("cpu", "cuda")), default="cpu", show_default=True,
              help="What the AOTInductor packages are compiled for (cuda needs CUDA here).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Bundle folder [default: RUN_DIR/bundle].")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="Absolute tolerance against eager.")
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="Relative tolerance against eager.")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--mlflow", default=None, metavar="URI",
              help="Also log the verified bundle as an MLflow model (pyfunc on the numpy + onnxruntime runtime, "
              "signature and input example from the bundle), into the run's MLflow run when it was trained with "
              "--mlflow on the same store.")
@click.option("--register", default=None, metavar="NAME", help="Register the MLflow model under NAME (new version).")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None,
              help="Also write model.int8.onnx: onnxruntime static INT8 (QDQ, per-channel weights), calibrated on "
              "the run's calibration.npy; both graphs are measured on the run's test (else validation) data and "
              "the export fails when the main metric drops more than --max-metric-drop.")
@click.option("--calibration-data", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Series to calibrate the int8 graph on (any data file; labels not needed) [default: RUN_DIR/"
              "calibration.npy, a sample of the training series].")
@click.option("--max-metric-drop", type=float, default=None,
              help="Largest drop of the main metric allowed for the int8 graph [default: 1 point of accuracy "
              "(micro-F1 for multilabel); 2 percent of RMSE (MAE for counts)].")
@user_errors
def export_command(run_dir, fmt, device, opset, out, atol, rtol, force, mlflow, register, quantize,
                   calibration_data, max_metric_drop):
    """Export a run's model and loss graphs, verified against eager PyTorch, as a bundle.

    Fails (exit 1, nothing written) when any exported output differs from eager beyond the
    tolerances, listing every failing output.

    \b
    Examples:
      pipeline export RUN_DIR                       # ONNX and TorchScript into RUN_DIR/bundle
      pipeline export RUN_DIR --format onnx --opset 18 --out my_bundle --force
      pipeline export RUN_DIR --format onnx,pt2,aoti --out cpp_bundle   # + torch.export and AOTInductor (C++)
      pipeline export RUN_DIR --format aoti --device cuda --out cuda_bundle
      pipeline export artifacts/demo --quantize int8 --max-metric-drop 5 --out artifacts/demo/int8
      pipeline export artifacts/demo --format aoti --out artifacts/demo/aoti
      pipeline export artifacts/mlflow-demo --mlflow http://127.0.0.1:5000 --register waveforms
      pipeline export artifacts/inceptiontime        # an ensemble: one graph averaging its members
    """
    from export.bundle import ExportConfig, export_run

    config = ExportConfig(fmt=fmt, opset=opset, atol=atol, rtol=rtol, device=device, quantize=quantize,
                          calibration_data=None if calibration_data is None else str(calibration_data),
                          max_metric_drop=max_metric_drop)
    if mlflow is not None or register is not None:  # the store is checked before minutes of export
        from export.mlflow_model import check_target

        if mlflow is not None and "onnx" not in config.formats:
            raise PipelineError(f"--mlflow logs the bundle as a model that runs on the runtime (ONNX graphs), and "
                                f"--format {fmt} leaves out onnx; add it (e.g. --format onnx,{fmt})")
        mlflow = check_target(mlflow, register)

    with export_failures():
        bundle = export_run(run_dir, config, out=out, force=force, log=click.echo)
    click.echo(f"wrote {bundle}")
    if mlflow is not None:
        from export.mlflow_model import log_bundle

        log_bundle(bundle, run_dir, mlflow, register, log=click.echo)


# --- scoring with a bundle: numpy + onnxruntime only, so these work in a runtime-only install ------------

def _scoring_options(target_help: str):
    return lambda fn: _with_scoring_options(fn, target_help)


def _with_scoring_options(fn, target_help: str):
    fn = click.option("--precision", type=click.Choice(MODEL_PRECISIONS), default="fp32", show_default=True,
                      help="Model graph: fp32 (model.onnx), int8 (model.int8.onnx, from export --quantize int8), "
                      "auto (int8 when the bundle has it).")(fn)
    fn = click.option("--threads", type=click.IntRange(min=1), default=None,
                      help="onnxruntime intra-op threads [default: onnxruntime's choice].")(fn)
    fn = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                      help="Series per onnxruntime call [default: as many as fit 8 MiB, at most 256].")(fn)
    fn = click.option("--pad", is_flag=True, help="Right-pad unequal-length .ts series with their last value.")(fn)
    fn = click.option("--target-column", default=None, help=target_help)(fn)
    fn = click.option("--data", type=click.Path(dir_okay=False, path_type=Path), required=True,
                      help="Series file: .npz, .npy, .csv, UCR .tsv or UCR/UEA .ts.")(fn)
    return click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))(fn)


@main.command()
@_scoring_options("CSV label column(s), by name or 0-based index, to leave out of the series [default: the "
                  "training data's label column, where the file has it; 'none': every column is a series value].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="preds.csv, .jsonl (class names and probabilities), .npy (the score matrix) or .npz (every "
              "named output) [default: CSV on standard output].")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@user_errors
def predict(bundle, data, target_column, pad, batch_size, threads, precision, out, force):
    """Predict every series in a file with an exported bundle (onnxruntime; torch not needed).

    \b
    Examples:
      pipeline predict artifacts/demo/bundle --data new.npy --out preds.csv
      pipeline predict artifacts/demo/bundle --data test.ts --out test-preds.jsonl
      pipeline predict BUNDLE --data GunPoint_TEST.ts --out preds.jsonl
      pipeline predict BUNDLE --data readings.csv --target-column label > preds.csv
      pipeline predict artifacts/demo/int8 --data new.npy --precision int8 --out preds-int8.csv
    """
    from pipeline.scoring import predict_file

    predict_file(bundle, data, out, target_column=target_column, pad=pad, batch_size=batch_size,
                 threads=threads, force=force, log=lambda m: click.echo(m, err=True), precision=precision)


@main.command()
@_scoring_options("CSV label column(s), by name or 0-based index [default: the training data's label column, "
                  "where the file has it, else the last column].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@user_errors
def evaluate(bundle, data, target_column, pad, batch_size, threads, precision, as_json):
    """Loss and metrics of an exported bundle on a labelled file, as the trainer reports them.

    \b
    Examples:
      pipeline evaluate artifacts/demo/bundle --data test.ts
      pipeline evaluate BUNDLE --data test.npz --json
      pipeline evaluate BUNDLE --data test.npz --precision int8
    """
    import json

    from pipeline.scoring import evaluate_file

    result = evaluate_file(bundle, data, target_column=target_column, pad=pad, batch_size=batch_size,
                           threads=threads, log=lambda m: click.echo(m, err=True), precision=precision)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['data']}: {result['series']} series, task {result['task']}, {result['precision']} model graph")
    for key, value in result.items():
        if key not in ("data", "series", "task", "precision"):
            click.echo(f"  {key:<16} {'n/a' if value is None else f'{value:.6g}'}")


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder with the checkpoint, for the eager re-check [default: the one recorded at export].")
@click.option("--atol", type=float, default=None, help="[default: the tolerance used at export]")
@click.option("--rtol", type=float, default=None, help="[default: the tolerance used at export]")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime intra-op threads.")
@user_errors
def verify(bundle, run_dir, atol, rtol, threads):
    """Check a bundle: file sums, golden data through the graphs, and (with torch) eager PyTorch again.

    Prints the diff table; exits 1 when any output differs beyond the tolerances.

    \b
    Examples:
      pipeline verify artifacts/demo/bundle
      pipeline verify copied_bundle --run artifacts/demo
    """
    from pipeline.scoring import verify_bundle
    from runtime.compare import format_table, summary

    report = verify_bundle(bundle, run_dir, atol, rtol, threads)
    click.echo(f"sha256 of every file: ok\ngolden data:\n{format_table(report.golden)}")
    click.echo(report.note)
    if report.eager is not None:
        failing = [r for r in report.eager if r["problem"]]
        click.echo(format_table(failing) if failing else f"{summary(report.eager)}: ok")
    if not report.passed:
        click.echo("Error: the bundle's graphs disagree with the reference outputs (table above)", err=True)
        raise SystemExit(1)
    click.echo("verified")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="fcn", show_default=True,
              help="Model to benchmark when no RUN_DIR is given (trained briefly on random series).")
@click.option("--width", type=float, default=1.0, show_default=True)
@click.option("--channels", type=int, default=1, show_default=True)
@click.option("--length", type=int, default=128, show_default=True)
@click.option("--classes", type=int, default=3, show_default=True)
@click.option("--batch", type=int, default=256, show_default=True, help="Batch of the throughput rows.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for every engine (torch and onnxruntime) [default: the CPUs this process may use].")
@click.option("--device", type=click.Choice(("cpu", "cuda")), default="cpu", show_default=True)
@click.option("--train-model", "train_models", multiple=True, type=click.Choice(MODEL_NAMES),
              help="Model(s) for the training rows [default: the benchmarked model and simple-cnn].")
@click.option("--train-batch", type=int, default=None, help="Training batch size [default: 64 on CPU, 256 on CUDA].")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default="default", show_default=True)
@click.option("--no-memory", is_flag=True, help="Skip the memory-mapped predict rows.")
@click.option("--quick", is_flag=True, help="Few iterations and small files: checks the bench runs, not for figures.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as one JSON object.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report to this file.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.pass_context
@user_errors
def bench(ctx, run_dir, model_name, width, channels, length, classes, batch, threads, device, train_models, train_batch,
          compile_mode, no_memory, quick, as_json, out, force):
    """Speed side by side in one run: eager, torch.compile, TorchScript, runtime; training loops; export.

    Prints a table with a ratio column against eager PyTorch and the product's speed targets.

    \b
    Examples:
      pipeline bench                          # fcn, length 128, 1 channel, 3 classes; about 10 minutes on 2 cores
      pipeline bench artifacts/demo --json --out bench.json
      pipeline bench --model resnet --length 512 --threads 4 --quick
      pipeline bench --model lite                    # + lite against fcn: FLOPs, runtime throughput
      pipeline bench --device cuda
    """
    import json

    from pipeline.bench.report import format_report
    from pipeline.bench.run import BenchConfig, run_bench
    from pipeline.files import check_output_file, write_text

    check_output_file(out, force)
    shape_flags = [f"--{name.replace('_name', '')}" for name in ("model_name", "width", "channels", "length", "classes")
                   if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if run_dir is not None and shape_flags:
        verb = "applies" if len(shape_flags) == 1 else "apply"
        raise UserError(f"{run_dir} fixes the model to benchmark; {', '.join(shape_flags)} only {verb} without RUN_DIR")
    cfg = BenchConfig(run_dir=_str(run_dir), model=model_name, width=width, channels=channels, length=length,
                      classes=classes, batch=batch, threads=threads, device=device,
                      train_models=tuple(train_models) or None, train_batch=train_batch, memory=not no_memory,
                      quick=quick, compile_mode=compile_mode)
    with export_failures():  # the bench exports and compiles as export does
        report = run_bench(cfg, log=lambda m: click.echo(m, err=True))
    text = json.dumps(report, indent=1)
    if out is not None:
        write_text(out, text + "\n")
    click.echo(text if as_json else format_report(report))


if __name__ == "__main__":  # torchrun -m pipeline.cli train ...
    main()
