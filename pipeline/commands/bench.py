"""`pipeline bench`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.common import UserError, path_text, export_failures, user_errors
from pipeline.config import COMPILE_MODES, MODEL_NAMES


@click.command()
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
    cfg = BenchConfig(run_dir=path_text(run_dir), model=model_name, width=width, channels=channels, length=length,
                      classes=classes, batch=batch, threads=threads, device=device,
                      train_models=tuple(train_models) or None, train_batch=train_batch, memory=not no_memory,
                      quick=quick, compile_mode=compile_mode)
    with export_failures():  # the bench exports and compiles as export does
        report = run_bench(cfg, log=lambda m: click.echo(m, err=True))
    text = json.dumps(report, indent=1)
    if out is not None:
        write_text(out, text + "\n")
    click.echo(text if as_json else format_report(report))
