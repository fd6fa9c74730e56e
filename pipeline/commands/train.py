"""`pipeline train`: its options come from the config fields (pipeline/settings/config.py), plus the run's own: --out,
--force, --resume, --mlflow-optional, --nproc."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from pipeline.commands.common import UserError, user_errors
from pipeline.commands.options import NamedPath, config_options, resumable_flags
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.errors import PipelineError
from pipeline.training.run_config import RunSettings, new_run_settings
from runtime import forecast, segments
from pipeline.settings.fields import flagged, values


# Flags that may change when a run is resumed; every other flag is fixed by the saved run.
RESUMABLE_FLAGS = (*resumable_flags(DataConfig, LossConfig, ModelConfig, TrainConfig), "--nproc", "--mlflow-optional")
RESUMABLE = {"resume", "nproc", "mlflow_optional"} | {flag.option_dest(f) for f, flag in flagged(TrainConfig)
                                                       if flag.resumable}


@click.command()
@config_options(DataConfig, LossConfig, ModelConfig, TrainConfig)
@click.option("--out", type=NamedPath(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: a new folder under artifacts/].")
@click.option("--force", is_flag=True, help="Overwrite an existing, non-empty --out folder.")
@click.option("--resume", type=NamedPath(file_okay=False, path_type=Path), default=None, metavar="RUN_DIR",
              help="Continue a run from its last checkpoint (raise --epochs to train longer).")
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
      pipeline train --out artifacts/waveforms
      pipeline train --data examples/GunPoint_TRAIN.ts --test-data examples/GunPoint_TEST.ts
      pipeline train --data examples/prices.csv --target-column close --task regression --loss huber --huber-delta 0.5
      pipeline train --data examples/heartbeats.npz --class-weights balanced --label-smoothing 0.1 --model resnet
      pipeline train --data examples/heartbeats.npz --loss examples.mylosses:FocalLoss --loss-param gamma=2
      pipeline train --resume artifacts/waveforms --epochs 600
      pipeline train --tensorboard --out artifacts/tb-demo
      pipeline train --mlflow http://127.0.0.1:5000 --out artifacts/mlflow-demo
      pipeline train --model lite --data examples/GunPoint_TRAIN.ts --test-data examples/GunPoint_TEST.ts
      pipeline train --model inception --ensemble 5 --data examples/GunPoint_TRAIN.ts --test-data examples/GunPoint_TEST.ts --out artifacts/inceptiontime
      pipeline train --model minirocket --data examples/GunPoint_TRAIN.ts --test-data examples/GunPoint_TEST.ts --out artifacts/minirocket
      pipeline train --model multirocket-hydra --data examples/GunPoint_TRAIN.ts --test-data examples/GunPoint_TEST.ts --out artifacts/mr-hydra
      pipeline train --data examples/heartbeats.npz --nproc 2 --batch-size 64
      pipeline train --data examples/activity.csv --recording-column subject --time-column time --window 100 --stride 25 --out artifacts/activity
      pipeline train --data examples/demand.csv --recording-column site --time-column t --task forecast --window 72 --horizon 12 --season 12 --forecast-columns load --loss quantile --test-data examples/demand_test.csv --out artifacts/demand
      pipeline train --data examples/gait.csv --recording-column subject --time-column time --window 128 --window-label each --test-data examples/gait_test.csv --out artifacts/gait
      pipeline train --data examples/machine.csv --recording-column machine --task binary --window 128 --window-label each --model unet --test-data examples/machine_test.csv --out artifacts/machine
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
        overrides = {f.name: opts[flag.option_dest(f)] for f, flag in flagged(TrainConfig)
                     if flag.resumable and f.name != "epochs"
                     and ctx.get_parameter_source(flag.option_dest(f)) == click.core.ParameterSource.COMMANDLINE}
    else:
        settings = _train_configs(opts)

    from pipeline.training import distributed
    from pipeline.training import train as training

    if distributed.from_env().main:  # before any process starts: a store that is down is one line, not a traceback
        uri = settings.train.mlflow if opts["resume"] is None else _saved_mlflow(opts["resume"])
        if uri is not None and not _mlflow_reachable(uri, opts["mlflow_optional"]):
            if opts["resume"] is None:
                settings = replace(settings, train=replace(settings.train, mlflow=None))
            else:
                overrides["mlflow"] = None
    if opts["nproc"] > 1 and not distributed.from_env().enabled:
        raise SystemExit(distributed.launch(opts["nproc"], _without_nproc(sys.argv[1:])))
    if opts["resume"] is not None:
        result = training.resume(opts["resume"], epochs=opts["epochs"], overrides=overrides, log=click.echo,
                                 preflight=_dry_export)
    else:
        result = training.train(settings, out=opts["out"], force=opts["force"], log=click.echo,
                                preflight=_dry_export)
    if distributed.from_env().main:
        _summarise(result)


def _saved_mlflow(run_dir: Path) -> str | None:
    from pipeline.training.run_folder import RunFolder

    return RunFolder(run_dir).read_config().settings.train.mlflow


def _mlflow_reachable(uri: str, optional: bool) -> bool:
    """True when the store answers; else one error line, or with --mlflow-optional one warning and False."""
    from pipeline.training.tracking import check_mlflow

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


def _train_configs(opts: dict) -> RunSettings:
    """The four validated configs of a new run, from the command line's options."""
    return new_run_settings(*(values(cls, opts) for cls in (DataConfig, LossConfig, ModelConfig, TrainConfig)))


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


def _summarise(result) -> None:
    m = result.metrics
    for split in ("train", "val", "test"):
        if split in m:
            shown = ", ".join(f"{k}={'n/a' if v is None else f'{v:.4g}'}" for k, v in m[split].items())
            click.echo(f"{split:>5}: {shown}")
    for split, rows in m.get("forecast", {}).items():
        click.echo(f"forecasts of the {split} windows beside the naive ones (MASE: the mean absolute error over "
                   "each window's in-sample seasonal-naive error; below 1 beats it):")
        for line in forecast.report_text(rows):
            click.echo("  " + line)
    for split, report in m.get("segments", {}).items():
        click.echo(f"{split:>5} recordings stitched per sample: {segments.report_line(report)}")
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
