"""`pipeline export --mlflow URI --register NAME`: the bundle becomes an MLflow pyfunc model on the runtime (numpy +
onnxruntime), with a signature from the manifest and golden.json's input as the example; `mlflow models serve`
of the registered model answers what `pipeline predict` answers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import runtime
from runtime.golden import read_golden
from tests.conftest import (background, free_port, mlflow_command, run_pipeline, subprocess_env,
                            write_task_files)
from tests.runtime.test_no_torch import BLOCK_TRAINING_PACKAGES

pytestmark = pytest.mark.slow  # a real mlflow tracking server, `mlflow models serve` and pipeline processes

TINY = ["--width", "0.25", "--no-progress", "--epochs", "2", "--val-split", "0"]


def _post(url: str, series: np.ndarray) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps({"inputs": series.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _predict_csv(bundle, data, cwd) -> list[dict]:
    proc = run_pipeline(["predict", bundle, "--data", data], cwd)
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


def _assert_same_rows(served: list[dict], expected: list[dict]) -> None:
    assert len(served) == len(expected)
    assert list(served[0]) == [k for k in expected[0] if k != "row"]
    for name in served[0]:
        got, want = [r[name] for r in served], [r[name] for r in expected]
        if isinstance(got[0], str):
            assert got == want, name
        else:  # float32 in both; JSON carries its float64 expansion, the CSV its shortest text
            np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=1e-6, atol=1e-7, err_msg=name)


def test_a_registered_bundle_is_served_with_the_answers_of_pipeline_predict(mlflow_server, tmp_path):
    train, test = write_task_files(tmp_path, "multiclass")
    run_dir = tmp_path / "run"
    trained = run_pipeline(["train", "--data", train, "--out", run_dir, "--mlflow", mlflow_server, *TINY], tmp_path)
    assert trained.returncode == 0, trained.stderr
    run_id = json.loads((run_dir / "config.json").read_text())["mlflow_run_id"]
    exported = run_pipeline(["export", run_dir, "--mlflow", mlflow_server, "--register", "waves"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[-2].startswith("mlflow: logged the bundle as models:/m-")
    assert lines[-2].endswith(f" in run {run_id} (the training run)")
    assert lines[-1] == "mlflow: registered as models:/waves/1"
    assert "Traceback" not in exported.stderr and "Downloading artifacts" not in exported.stderr

    client = MlflowClient(mlflow_server)
    version = client.get_model_version("waves", "1")
    assert version.status == "READY" and version.run_id == run_id  # the model sits next to its training metrics
    mlflow.set_tracking_uri(mlflow_server)
    info = mlflow.models.get_model_info("models:/waves/1")
    bundle = runtime.load(run_dir / "bundle")
    assert json.loads(info.signature.inputs.to_json()) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1, -1]}}]  # fcn: any length
    assert json.loads(info.signature.outputs.to_json()) == [{"type": "string", "name": "label", "required": True}] + [
        {"type": "float", "name": f"probability_{c}", "required": True} for c in bundle.classes]
    model_dir = mlflow.artifacts.download_artifacts("models:/waves/1", dst_path=str(tmp_path / "model"))
    example = json.loads(open(f"{model_dir}/input_example.json").read())
    golden = next(iter(read_golden(run_dir / "bundle")["model"]["inputs"].values()))
    np.testing.assert_array_equal(np.asarray(example, dtype=np.float32).ravel(),
                                  np.asarray(golden["data"], dtype=np.float32).ravel())

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [mlflow_command(), "models", "serve", "-m", "models:/waves/1", "--env-manager", "local", "--host",
             "127.0.0.1", "--port", str(port)]
    with background(serve, f"{url}/ping", tmp_path, env={**subprocess_env(), "MLFLOW_TRACKING_URI": mlflow_server}):
        X = np.load(test)["X"]
        status, answer = _post(f"{url}/invocations", X)
        assert status == 200, answer
        _assert_same_rows(answer["predictions"], _predict_csv(run_dir / "bundle", test, tmp_path))
        half = X[:5, :, : X.shape[2] // 2]  # another length, as the signature allows
        np.save(tmp_path / "half.npy", half)
        status, answer = _post(f"{url}/invocations", half)
        assert status == 200, answer
        _assert_same_rows(answer["predictions"], _predict_csv(run_dir / "bundle", tmp_path / "half.npy", tmp_path))
        status, answer = _post(f"{url}/invocations", np.zeros((2, 3, 16), dtype=np.float32))  # 3 channels, not 1
        assert status == 400 and "shape" in answer["message"], answer


def test_a_logged_bundle_loads_and_predicts_where_torch_is_absent(mlflow_server, tmp_path):
    train, test = write_task_files(tmp_path, "regression")
    run_dir = tmp_path / "reg-run"
    trained = run_pipeline(["train", "--data", train, "--out", run_dir, "--model", "simple-cnn", *TINY], tmp_path)
    assert trained.returncode == 0, trained.stderr
    exported = run_pipeline(["export", run_dir, "--format", "onnx", "--mlflow", mlflow_server], tmp_path)
    assert exported.returncode == 0, exported.stderr
    last = exported.stdout.splitlines()[-1]
    model_uri, run_id = last.split(" as ")[1].split(" in run ")
    assert not run_id.endswith("(the training run)")  # trained without MLflow: a run of its own
    got = MlflowClient(mlflow_server).get_run(run_id)
    assert got.info.run_name == "reg-run" and got.data.tags["task"] == "regression"
    mlflow.set_tracking_uri(mlflow_server)
    info = mlflow.models.get_model_info(model_uri)
    assert json.loads(info.signature.inputs.to_json()) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1, 16]}}]  # simple-cnn: fixed length
    targets = np.load(train)["y"].shape[1]
    assert targets == 2 and json.loads(info.signature.outputs.to_json()) == [
        {"type": "float", "name": f"prediction_{j}", "required": True} for j in range(targets)]

    X = np.load(test)["X"]
    np.save(tmp_path / "x.npy", X)
    code = BLOCK_TRAINING_PACKAGES + textwrap.dedent(f"""
        import mlflow, numpy as np
        mlflow.set_tracking_uri({mlflow_server!r})
        model = mlflow.pyfunc.load_model({model_uri!r})
        frame = model.predict(np.load({str(tmp_path / 'x.npy')!r}))
        assert "torch" not in sys.modules
        np.save({str(tmp_path / 'served.npy')!r}, frame[["prediction_0", "prediction_1"]].to_numpy())
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = runtime.load(run_dir / "bundle").predict(X)["prediction"]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, rtol=1e-6, atol=1e-7)


def test_export_flags_and_a_store_that_is_down_fail_before_anything_is_written(build_bundle, tmp_path):
    run_dir = build_bundle("binary").run_dir
    out = tmp_path / "bundle"
    lone = run_pipeline(["export", run_dir, "--out", out, "--register", "waves"], tmp_path)
    assert lone.returncode == 2
    assert lone.stderr == "Error: --register NAME needs --mlflow URI (the registry it goes to)\n"
    port = free_port()
    down = run_pipeline(["export", run_dir, "--out", out, "--mlflow", f"http://127.0.0.1:{port}"], tmp_path)
    assert down.returncode == 2
    assert down.stderr == (f"Error: --mlflow http://127.0.0.1:{port}: cannot reach the MLflow tracking server "
                           f"(connection refused); start it (mlflow server --host 127.0.0.1 --port {port}) or fix "
                           "the address\n")
    assert not out.exists() and down.stdout == ""
    no_onnx = run_pipeline(["export", run_dir, "--out", out, "--format", "pt2", "--mlflow", f"http://127.0.0.1:{port}"],
                           tmp_path)
    assert (no_onnx.returncode, no_onnx.stderr) == (2, "Error: --mlflow logs the bundle as a model that runs on the "
                                                       "runtime (ONNX graphs), and --format pt2 leaves out onnx; add "
                                                       "it (e.g. --format onnx,pt2)\n")
    assert not out.exists()


def test_a_signed_bundle_is_logged_with_its_signature_and_the_model_checks_it_at_load(mlflow_server, keys, tmp_path):
    train, _ = write_task_files(tmp_path, "binary")
    run_dir = tmp_path / "signed-run"
    assert run_pipeline(["train", "--data", train, "--out", run_dir, *TINY], tmp_path).returncode == 0
    exported = run_pipeline(["export", run_dir, "--format", "onnx", "--sign-key", keys.private(), "--mlflow",
                             mlflow_server], tmp_path)
    assert exported.returncode == 0, exported.stderr
    model_uri = exported.stdout.splitlines()[-1].split(" as ")[1].split(" in run ")[0]
    code = textwrap.dedent(f"""
        import mlflow, numpy as np
        mlflow.set_tracking_uri({mlflow_server!r})
        local = mlflow.artifacts.download_artifacts({model_uri!r})
        import pathlib
        print(sorted(p.name for p in pathlib.Path(local, "artifacts", "bundle").iterdir()))
        model = mlflow.pyfunc.load_model({model_uri!r})
        print("loaded")
    """)

    def load(key) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env={**subprocess_env(), "PIPELINE_PUBLIC_KEY": str(key)})

    good = load(keys.public())
    assert good.returncode == 0, good.stderr[-3000:]
    assert "'model.sig'" in good.stdout and good.stdout.endswith("loaded\n")
    other = load(keys.public("other"))
    assert other.returncode != 0 and "model.sig: signed by another key" in other.stderr
