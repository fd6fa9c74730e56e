"""`pipeline export`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.common import export_failures, user_errors
from pipeline.errors import PipelineError
from runtime.manifest import QUANTIZATIONS


@click.command(name="export")
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
