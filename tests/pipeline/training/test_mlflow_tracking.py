"""`pipeline train --mlflow`: a run in a real MLflow tracking server holds the config, history.csv's series, the
final metrics and the run's files; a resume continues the same MLflow run; a store that is down is one line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from tests.conftest import free_port, subprocess_env

TINY = ["--width", "0.125", "--no-progress", "--model", "simple-cnn"]
RUN_FILES = {"best.pt", "config.json", "history.csv", "last.pt", "loss_curve.png", "metrics.json",
             "calibration.npy"}


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    """The expected parameters, written here from config.json independently of pipeline.training.tracking."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # a real mlflow tracking server
def test_a_run_in_the_server_holds_config_history_metrics_and_files(mlflow_server, npz_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "waveform-tests")
    data, test = npz_file("multiclass"), npz_file("multiclass", name="test", seed=3)
    run_dir = tmp_path / "run"
    first = run(["train", "--data", data, "--test-data", test, "--out", run_dir, "--epochs", "2", "--val-split",
                 "0.25", "--mlflow", mlflow_server, *TINY])
    assert first.exit_code == 0, first.output
    config = json.loads((run_dir / "config.json").read_text())
    run_id = config["mlflow_run_id"]
    assert f"mlflow: run {run_id} at {mlflow_server}" in first.output
    assert config["train"]["mlflow"] == mlflow_server
    resumed = run(["train", "--resume", run_dir, "--epochs", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run_dir / "config.json").read_text())["mlflow_run_id"] == run_id  # the same MLflow run

    client = MlflowClient(mlflow_server)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert client.get_experiment(got.info.experiment_id).name == "waveform-tests"
    assert got.data.params == {k: v for k, v in _flat(config).items() if k != "mlflow_run_id"}
    assert {k: got.data.tags[k] for k in ("task", "loss", "model")} == {
        "task": "multiclass", "loss": "cross_entropy", "model": "simple-cnn"}
    assert got.data.tags["epochs"] == "3" and got.data.tags["resumed_after_epoch"] == "2"
    history = _history(run_dir)
    for key, column in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("val/accuracy", "val_accuracy"),
                        ("lr", "lr"), ("seconds", "seconds")):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [s for s, _ in points] == [1, 2, 3], key  # every epoch once, also across the resume
        np.testing.assert_allclose([v for _, v in points], [float(r[column]) for r in history], rtol=1e-6,
                                   err_msg=key)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        for name in ("loss", "accuracy", "macro_f1"):
            assert got.data.metrics[f"final/{split}_{name}"] == pytest.approx(metrics[split][name], rel=1e-6)
    assert {a.path for a in client.list_artifacts(run_id)} == RUN_FILES
    copy = client.download_artifacts(run_id, "metrics.json", str(tmp_path))
    assert json.loads(open(copy).read()) == metrics


def test_a_store_that_is_down_stops_before_training(npz_file, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    port = down.rsplit(":", 1)[1]
    run_dir = tmp_path / "run"
    result = run(["train", "--data", npz_file("binary"), "--out", run_dir, "--epochs", "1", "--mlflow", down, *TINY])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: --mlflow {down}: cannot reach the MLflow tracking server (connection refused); start it (mlflow "
        f"server --host 127.0.0.1 --port {port}) or fix the address; --mlflow-optional trains without it\n")
    assert not run_dir.exists()  # nothing trained, nothing written

    optional = run(["train", "--data", npz_file("binary"), "--out", run_dir, "--epochs", "1", "--mlflow", down,
                    "--mlflow-optional", *TINY])
    assert optional.exit_code == 0, optional.output
    assert optional.output.splitlines()[0] == (
        f"warning: --mlflow {down}: cannot reach the MLflow tracking server (connection refused); start it (mlflow "
        f"server --host 127.0.0.1 --port {port}) or fix the address; training without MLflow (--mlflow-optional)")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["mlflow"] is None and "mlflow_run_id" not in config
    assert "mlflow:" not in optional.output


def test_a_local_sqlite_store_is_recorded_absolute(npz_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(["train", "--data", npz_file("regression"), "--out", "run", "--epochs", "1", "--mlflow",
                  "sqlite:///store.db", *TINY])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert config["train"]["mlflow"] == uri
    got = MlflowClient(uri).get_run(config["mlflow_run_id"])
    assert got.info.status == "FINISHED"
    assert [m.value for m in MlflowClient(uri).get_metric_history(got.info.run_id, "loss/train")] == pytest.approx(
        [float(_history(tmp_path / "run")[0]["train_loss"])], rel=1e-6)


def test_a_store_lost_during_training_costs_one_warning_not_the_run(npz_file, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    real = MlflowClient.log_batch

    def lost_after_the_parameters(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if metrics:
            raise MlflowException("API request to http://tracker/api/2.0/mlflow/runs/log-batch failed\nmore")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", lost_after_the_parameters)
    run_dir = tmp_path / "run"
    result = run(["train", "--data", npz_file("binary"), "--out", run_dir, "--epochs", "3", "--mlflow",
                  f"sqlite:///{tmp_path / 'store.db'}", *TINY])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: mlflow")]
    assert warnings == ["warning: mlflow: logging epoch 1 failed (API request to http://tracker/api/2.0/mlflow/runs/"
                        "log-batch failed); MLflow logging stops for this run, training goes on and the run folder "
                        "keeps everything"]
    assert len(_history(run_dir)) == 3 and (run_dir / "metrics.json").is_file()


def test_a_missing_mlflow_package_is_one_clear_line(monkeypatch, npz_file, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = run(["train", "--data", npz_file("binary"), "--out", tmp_path / "r", "--mlflow", "sqlite:///x.db", *TINY])
    assert result.exit_code == 2
    assert result.output == ("Error: --mlflow needs the mlflow package: pip install mlflow (or pip install -e "
                             "'.[mlflow]' for the client alone); --mlflow-optional trains without it\n")


@pytest.mark.slow  # fresh interpreters
def test_mlflow_is_never_imported_unless_asked_for(npz_file, tmp_path):
    """Train and export with mlflow made unimportable: both work, so neither touched it."""
    code = textwrap.dedent(f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "mlflow":
                    raise ModuleNotFoundError("mlflow was imported", name="mlflow")
        sys.meta_path.insert(0, _Block())
        from pipeline.cli import main
        for args in (["train", "--data", {str(npz_file("binary"))!r}, "--out", "run", "--epochs", "1",
                      "--width", "0.125", "--model", "simple-cnn", "--no-progress"],
                     ["export", "run", "--format", "onnx"]):
            try:
                main(args, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, exc
        assert "mlflow" not in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
