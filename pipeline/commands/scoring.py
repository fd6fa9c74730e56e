"""`pipeline predict`, `evaluate` and `verify`: scoring a bundle with the runtime."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.common import user_errors
from runtime.manifest import MODEL_PRECISIONS


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


@click.command()
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


@click.command()
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


@click.command()
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
