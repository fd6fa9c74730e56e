"""`pipeline predict`, `evaluate` and `verify`: scoring a bundle with the runtime."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.forecast import report_text
from runtime.segments import report_line

from pipeline.commands.common import user_errors
from pipeline.commands.options import NamedPath, config_options
from pipeline.settings.scoring_config import EvaluateConfig, PredictConfig, VerifyConfig
from pipeline.settings.fields import values


@click.command()
@click.argument("bundle", type=NamedPath(file_okay=False, path_type=Path))
@config_options(PredictConfig)
@click.option("--out", type=NamedPath(dir_okay=False, path_type=Path), default=None,
              help="preds.csv, .jsonl (class names and probabilities), .npy (the score matrix) or .npz (every "
              "named output) [default: CSV on standard output].")
@click.option("--force", is_flag=True, help="Replace an existing --out (or --saliency) file.")
@user_errors
def predict(bundle, out, force, **opts):
    """Predict every series in a file with an exported bundle (onnxruntime; torch not needed).

    \b
    Examples:
      pipeline predict artifacts/demo/bundle --data examples/waveforms_new.npy --out preds.csv
      pipeline predict artifacts/demo/bundle --data examples/waveforms_test.ts --out test-preds.jsonl
      pipeline predict BUNDLE --data examples/GunPoint_TEST.ts --out preds.jsonl
      pipeline predict BUNDLE --data readings.csv --target-column label > preds.csv
      pipeline predict artifacts/activity/bundle --data examples/activity.csv --out activity-windows.csv
      pipeline predict artifacts/demand/bundle --data examples/demand_test.csv --out demand-forecasts.csv
      pipeline predict artifacts/gait/bundle --data examples/gait_test.csv --out gait-samples.csv
      pipeline predict artifacts/gait/bundle --data examples/gait_test.csv --segments --out gait-segments.csv
      pipeline predict artifacts/demo/int8 --data examples/waveforms_new.npy --precision int8 --out preds-int8.csv
      pipeline predict artifacts/demo/signed --data examples/waveforms_test.ts --public-key keys/signing.pub.pem --out signed-preds.csv
      pipeline predict saliency_bundle --data examples/waveforms_test.ts --saliency maps.npy --out saliency-preds.csv
    """
    from pipeline.scoring import predict_file

    predict_file(bundle, PredictConfig(**values(PredictConfig, opts)), out, force=force,
                 log=lambda m: click.echo(m, err=True))


@click.command()
@click.argument("bundle", type=NamedPath(file_okay=False, path_type=Path))
@config_options(EvaluateConfig)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@user_errors
def evaluate(bundle, as_json, **opts):
    """Loss and metrics of an exported bundle on a labelled file, as the trainer reports them.

    \b
    Examples:
      pipeline evaluate artifacts/demo/bundle --data examples/waveforms_test.ts
      pipeline evaluate BUNDLE --data test.npz --json
      pipeline evaluate artifacts/activity/bundle --data examples/activity.csv
      pipeline evaluate artifacts/demand/bundle --data examples/demand_test.csv
      pipeline evaluate artifacts/gait/bundle --data examples/gait_test.csv
      pipeline evaluate BUNDLE --data test.npz --precision int8
    """
    import json

    from pipeline.scoring import evaluate_file

    result = evaluate_file(bundle, EvaluateConfig(**values(EvaluateConfig, opts)),
                           log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(result))
        return
    counted = "windows" if "windows" in result else "series"
    click.echo(f"{result['data']}: {result[counted]} {counted}, task {result['task']}, {result['precision']} model graph")
    for key, value in result.items():
        if key not in ("data", counted, "task", "precision", "forecast", "segments"):
            click.echo(f"  {key:<16} {'n/a' if value is None else f'{value:.6g}'}")
    if "forecast" in result:
        click.echo("forecasts beside the naive ones on the same windows (MASE below 1 beats the in-sample "
                   "seasonal-naive error):")
        for line in report_text(result["forecast"]):
            click.echo("  " + line)
    if "segments" in result:
        click.echo(f"recordings stitched per sample: {report_line(result['segments'])}")


@click.command()
@click.argument("bundle", type=NamedPath(file_okay=False, path_type=Path))
@config_options(VerifyConfig)
@user_errors
def verify(bundle, **opts):
    """Check a bundle: file sums, golden data through the graphs, and (with torch) eager PyTorch again.

    Prints the diff table; exits 1 when any output differs beyond the tolerances.

    \b
    Examples:
      pipeline verify artifacts/demo/bundle
      pipeline verify copied_bundle --run artifacts/demo
      pipeline verify artifacts/demo/signed --public-key keys/signing.pub.pem
    """
    from pipeline.scoring import verify_bundle
    from runtime.compare import format_table, summary

    report = verify_bundle(bundle, VerifyConfig(**values(VerifyConfig, opts)))
    click.echo(f"{report.signature}\nsha256 of every file: ok\ngolden data:\n{format_table(report.golden)}")
    click.echo(report.note)
    if report.eager is not None:
        failing = [r for r in report.eager if r.problem]
        click.echo(format_table(failing) if failing else f"{summary(report.eager)}: ok")
    if not report.passed:
        click.echo("Error: the bundle's graphs disagree with the reference outputs (table above)", err=True)
        raise SystemExit(1)
    click.echo("verified")
