"""`pipeline bench`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.common import UserError, path_text, export_failures, user_errors
from pipeline.bench.config import SHAPE_FIELDS, BenchConfig
from pipeline.commands.options import NamedPath, config_options
from pipeline.settings.fields import flagged, values


@click.command()
@click.argument("run_dir", type=NamedPath(exists=True, file_okay=False, path_type=Path), required=False)
@config_options(BenchConfig)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as one JSON object.")
@click.option("--out", type=NamedPath(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report to this file.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.pass_context
@user_errors
def bench(ctx, run_dir, as_json, out, force, **opts):
    """Speed side by side in one run: eager, torch.compile, TorchScript, runtime; training loops; export.

    Prints a table with a ratio column against eager PyTorch and the product's speed targets.

    \b
    Examples:
      pipeline bench                          # fcn, length 128, 1 channel, 3 classes; about 10 minutes on 2 cores
      pipeline bench artifacts/demo --json --out bench.json
      pipeline bench --model lite --length 512 --threads 4 --quick   # + lite against fcn: FLOPs, throughput
      pipeline bench --device cuda
    """
    import json

    from pipeline.bench.report import format_report
    from pipeline.bench.run import run_bench
    from pipeline.files import check_output_file, write_text

    check_output_file(out, force)
    shape = {flag.option_dest(f): flag.option_name(f) for f, flag in flagged(BenchConfig) if f.name in SHAPE_FIELDS}
    shape_flags = [name for dest, name in shape.items()
                   if ctx.get_parameter_source(dest) == click.core.ParameterSource.COMMANDLINE]
    if run_dir is not None and shape_flags:
        verb = "applies" if len(shape_flags) == 1 else "apply"
        raise UserError(f"{run_dir} fixes the model to benchmark; {', '.join(shape_flags)} only {verb} without RUN_DIR")
    cfg = BenchConfig(run_dir=path_text(run_dir), **values(BenchConfig, opts))
    with export_failures():  # the bench exports and compiles as export does
        report = run_bench(cfg, log=lambda m: click.echo(m, err=True))
    text = json.dumps(report, indent=1)
    if out is not None:
        write_text(out, text + "\n")
    click.echo(text if as_json else format_report(report))
