"""Log a verified bundle to MLflow as a pyfunc model that runs on `runtime` (numpy + onnxruntime, no torch)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

import runtime
from pipeline.errors import PipelineError
from pipeline.training.run_folder import RunFolder
from pipeline.training.tracking import (check_mlflow, first_line, import_mlflow, mlflow_experiment_id, mlflow_uri,
                               temporary_env)
from runtime.golden import model_example
from runtime.outputs import prediction_table

RUNTIME_DIR = Path(runtime.__file__).parent
MODEL_CODE = RUNTIME_DIR / "hosts" / "mlflow" / "bundle_model.py"  # the pyfunc, logged as a model from code
MODEL_NAME = "model"  # the model's name inside its MLflow run
DATA_TYPES = {"O": "string", "i": "long", "f": "float", "b": "boolean"}  # numpy kind -> MLflow column type


def check_target(uri: str | None, register: str | None) -> str | None:
    """Before anything is exported: the flags make sense and the store answers. Returns the absolute URI."""
    if register is not None and uri is None:
        raise PipelineError("--register NAME needs --mlflow URI (the registry it goes to)")
    if uri is None:
        return None
    uri = mlflow_uri(uri)
    check_mlflow(uri)
    return uri


def signature(bundle: runtime.Bundle, example: np.ndarray):
    """Input: float32 (batch, channels, length) with the manifest's channels and fixed length (-1 where the
    model takes any); output: the columns `pipeline predict` writes, typed from a prediction of `example`."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    spec = bundle.manifest.input
    length = spec.length.fixed if spec.length.fixed is not None else -1
    columns = prediction_table(bundle, bundle.predict(example))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, spec.channels, length))]),
        outputs=Schema([ColSpec(DATA_TYPES[np.asarray(v).dtype.kind], name) for name, v in columns.items()]))


def _requirements() -> list[str]:
    import onnxruntime
    import pandas

    return [f"numpy=={np.__version__}", f"onnxruntime=={onnxruntime.__version__}", f"pandas=={pandas.__version__}"]


def _training_run(run_dir: Path, uri: str) -> str | None:
    """The MLflow run `pipeline train --mlflow` logged this run to, when it is in the same store."""
    config = RunFolder(run_dir).read_config()
    return config.mlflow_run_id if config.settings.train.mlflow == uri else None


def log_bundle(bundle_dir: Path, run_dir: Path, uri: str, register: str | None, log=print) -> str:
    """Log the bundle as an MLflow model (into the run's training run when it has one); register it as
    `register` when given. Returns the model's URI."""
    mlflow = import_mlflow("--mlflow")
    bundle = runtime.load(bundle_dir)
    run_id = _training_run(run_dir, uri)
    with _quiet():
        info, run = _log(mlflow, bundle, bundle_dir, run_dir, run_id, uri, register)
    log(f"mlflow: logged the bundle as {info.model_uri} in run {run.info.run_id}"
        + (" (the training run)" if run_id else ""))
    if register is not None:
        log(f"mlflow: registered as models:/{register}/{info.registered_model_version}")
    return info.model_uri


@contextlib.contextmanager
def _quiet():
    """MLflow's progress bars and INFO lines are not the user's concern here."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with temporary_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            yield
    finally:
        logger.setLevel(level)


def _log(mlflow, bundle: runtime.Bundle, bundle_dir: Path, run_dir: Path, run_id: str | None, uri: str,
         register: str | None):
    """log_model into the training run `run_id` (None: a new run named after the run folder); (ModelInfo, Run)."""
    example = model_example(bundle_dir)
    mlflow.set_tracking_uri(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            code = Path(tmp) / "runtime"  # the runtime package alone, not the host kits' node_modules
            shutil.copytree(RUNTIME_DIR, code, ignore=shutil.ignore_patterns("hosts", "__pycache__"))
            if run_id is None:
                client = mlflow.tracking.MlflowClient(uri)
                started = mlflow.start_run(experiment_id=mlflow_experiment_id(client), run_name=run_dir.name,
                                           tags={"task": bundle.task, "run_dir": str(run_dir.resolve())})
            else:
                started = mlflow.start_run(run_id=run_id)
            with started as run:
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts={"bundle": str(bundle_dir)},
                    code_paths=[str(code)], signature=signature(bundle, example), input_example=example,
                    pip_requirements=_requirements(), registered_model_name=register)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - the bundle is written either way; say what did not happen
        raise PipelineError(f"--mlflow {uri}: the bundle {bundle_dir} is written, but logging it to MLflow failed: "
                            f"{first_line(exc)}") from None
    return info, run
