"""`pipeline export`."""

from __future__ import annotations

from pathlib import Path

import click

from export.options import ExportConfig
from pipeline.commands.common import export_failures, user_errors
from pipeline.commands.options import NamedPath, config_options
from pipeline.errors import PipelineError
from pipeline.settings.fields import values


@click.command(name="export")
@click.argument("run_dir", type=NamedPath(exists=True, file_okay=False, path_type=Path))
@config_options(ExportConfig)
@click.option("--out", type=NamedPath(file_okay=False, path_type=Path), default=None,
              help="Bundle folder [default: RUN_DIR/bundle].")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--mlflow", default=None, metavar="URI",
              help="Also log the verified bundle as an MLflow model (pyfunc on the numpy + onnxruntime runtime, "
              "signature and input example from the bundle), into the run's MLflow run when it was trained with "
              "--mlflow on the same store.")
@click.option("--register", default=None, metavar="NAME", help="Register the MLflow model under NAME (new version).")
@user_errors
def export_command(run_dir, out, force, mlflow, register, **settings):
    """Export a run's model and loss graphs, verified against eager PyTorch, as a bundle.

    Fails (exit 1, nothing written) when any exported output differs from eager beyond the
    tolerances, listing every failing output.

    \b
    Examples:
      pipeline export RUN_DIR                       # ONNX and TorchScript into RUN_DIR/bundle
      pipeline export artifacts/waveforms
      pipeline export artifacts/waveforms --format onnx --opset 18 --out my_bundle --force
      pipeline export artifacts/waveforms --format onnx,pt2,aoti --out cpp_bundle   # + torch.export and AOTInductor (C++)
      pipeline export artifacts/waveforms --format aoti --device cuda --out cuda_bundle
      pipeline export artifacts/waveforms --saliency --format onnx,torchscript,pt2 --out saliency_bundle
      pipeline export artifacts/demo --quantize int8 --max-metric-drop 5 --out artifacts/demo/int8
      pipeline export artifacts/demo --format aoti --out artifacts/demo/aoti
      pipeline export artifacts/demo --format pte,pte-train --quantize int8 --max-metric-drop 5 --out artifacts/demo/pte  # ExecuTorch (+ int8) + fine-tuning
      pipeline export artifacts/mlflow-demo --mlflow http://127.0.0.1:5000 --register waveforms
      pipeline export artifacts/inceptiontime        # an ensemble: one graph averaging its members
      pipeline export artifacts/minirocket --format all   # a kernel model: verified at its thresholds
      pipeline export artifacts/activity            # a windowed run: the manifest records its windows
      pipeline export artifacts/demand --format onnx,torchscript   # a forecaster: its horizon and quantiles too
      pipeline export artifacts/gait --format onnx,torchscript   # a label per time step: (batch, classes, W)
      pipeline export artifacts/mr-hydra --format pt2 --out artifacts/mr-hydra/pt2_bundle
      pipeline export artifacts/demo --format all --sign-key keys/signing.key.pem --out artifacts/demo/signed
    """
    from export.bundle import export_run

    config = ExportConfig(**values(ExportConfig, settings))
    if mlflow is not None or register is not None:  # the store is checked before minutes of export
        from export.mlflow_model import check_target

        if mlflow is not None and "onnx" not in config.formats:
            raise PipelineError(f"--mlflow logs the bundle as a model that runs on the runtime (ONNX graphs), and "
                                f"--format {config.fmt} leaves out onnx; add it (e.g. --format onnx,{config.fmt})")
        mlflow = check_target(mlflow, register)

    with export_failures():
        bundle = export_run(run_dir, config, out=out, force=force, log=click.echo)
    click.echo(f"wrote {bundle}")
    if mlflow is not None:
        from export.mlflow_model import log_bundle

        log_bundle(bundle, run_dir, mlflow, register, log=click.echo)


# --- scoring with a bundle: numpy + onnxruntime only, so these work in a runtime-only install ------------
