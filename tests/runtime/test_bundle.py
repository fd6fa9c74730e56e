"""The runtime API on real bundles: parity with eager PyTorch and the trainer, integrity, input checks."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import numpy as np
import pytest
import torch

import runtime
from export.bundle import rebuild
from export.graphs import as_tuple, model_graph
from pipeline.data.load import load_datasets
from pipeline.settings.config import DataConfig
from pipeline.losses import build_loss
from pipeline.training.batching import BatchSource, evaluate
from tests.conftest import TASKS

ATOL = RTOL = 1e-5  # the export tolerances
DECISION_METRICS = {"accuracy", "f1", "macro_f1", "micro_f1", "roc_auc"}


def _eager_outputs(run_dir, X):
    run = rebuild(run_dir)
    with torch.inference_mode():
        outputs = as_tuple(model_graph(run.model, run.task)(torch.from_numpy(X)))
    return [o.numpy() for o in outputs]


@pytest.mark.parametrize("task", TASKS)
def test_predictions_equal_eager_pytorch(task_bundles, task):
    tb = task_bundles[task]
    X = np.load(tb.test_file)["X"]
    bundle = runtime.load(tb.bundle)
    got = bundle.predict(X, batch_size=5)  # several batches, the last one short
    assert list(got) == list(runtime.TASKS[task].outputs)
    for name, expected in zip(runtime.TASKS[task].outputs, _eager_outputs(tb.run_dir, X)):
        assert got[name].shape == expected.shape and got[name].dtype == expected.dtype, name
        np.testing.assert_allclose(got[name], expected, atol=ATOL, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_equals_the_trainers_evaluation_of_the_same_checkpoint(task_bundles, task):
    tb = task_bundles[task]
    data = np.load(tb.test_file)
    got = runtime.load(tb.bundle).evaluate(data["X"], data["y"])
    # the trainer's own evaluation: metrics.json scored the best checkpoint on the test file at the end
    trained = json.loads((tb.run_dir / "metrics.json").read_text())["test"]
    # and once more here, through the trainer's evaluate() on the data as the trainer loads it
    run = rebuild(tb.run_dir)
    cfg, model, loss = run.cfg, run.model, run.loss
    datasets = load_datasets(DataConfig(data=str(tb.train_file), test_data=str(tb.test_file), task=task,
                                        val_split=0.0), cfg.name, seed=0)
    direct = evaluate(model, loss, BatchSource(datasets.test, torch.device("cpu")), task)
    assert set(got) == set(trained) == set(direct)
    for reference in (trained, direct):
        for key, value in reference.items():
            if key in DECISION_METRICS:
                assert got[key] == value, key
            else:
                assert got[key] == pytest.approx(value, abs=1e-6, rel=1e-6), key


def test_loss_graph_takes_encoded_targets_and_matches_the_training_loss(task_bundles):
    tb = task_bundles["multiclass"]
    bundle = runtime.load(tb.bundle)
    g = np.random.default_rng(0)
    prediction = g.normal(size=(11, 3)).astype(np.float32)
    names = np.array(["eel", "cat", "dog", "dog", "cat", "eel", "eel", "cat", "dog", "cat", "cat"])
    target = bundle.encode(names)
    assert target.tolist() == [2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 0]
    loss, per_sample = bundle.loss(prediction, target)
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0]), label_smoothing=0.1)
    assert loss == pytest.approx(float(reference(torch.from_numpy(prediction), torch.from_numpy(target))),
                                 abs=1e-6, rel=1e-6)
    recorded = rebuild(tb.run_dir).record.loss
    _, eager_per_sample = build_loss(recorded.name, recorded.params)(
        torch.from_numpy(prediction), torch.from_numpy(target))
    np.testing.assert_allclose(per_sample, eager_per_sample.numpy(), atol=ATOL, rtol=RTOL)


def test_streamed_prediction_of_a_memory_mapped_file_equals_in_memory(task_bundles, tmp_path):
    bundle = runtime.load(task_bundles["multiclass"].bundle)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(65536, 1, 64)).astype(np.float32)  # 16 MiB
    np.save(tmp_path / "big.npy", X)
    in_memory = bundle.predict(X, batch_size=len(X))
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    file_pages_before = _resident_file_bytes()
    tracemalloc.start()
    streamed = bundle.predict(mapped)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # pages of the file already read are handed back, so a file larger than RAM does not fill our memory
    assert _resident_file_bytes() - file_pages_before < 2 * 2**20
    for name in in_memory:
        np.testing.assert_allclose(streamed[name], in_memory[name], atol=1e-6, rtol=1e-6, err_msg=name)
    # numpy never held the 16 MiB input at once: the outputs (2.25 MiB) plus one batch (<= 8 MiB)
    outputs = sum(a.nbytes for a in streamed.values())
    assert peak < outputs + 8.5 * 2**20, (peak, outputs)


def _resident_file_bytes() -> int:
    """File-backed pages mapped into this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssFile:"))


def _copy(tb, tmp_path):
    return shutil.copytree(tb.bundle, tmp_path / "copy")


def test_tampered_truncated_or_missing_files_are_refused(task_bundles, tmp_path):
    path = _copy(task_bundles["binary"], tmp_path)
    data = bytearray((path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(runtime.IntegrityError) as err:
        runtime.load(path)
    assert str(err.value) == (f"{path / 'model.onnx'}: sha256 differs from manifest.json (the file was altered); "
                              "copy the bundle again or re-export it")
    shutil.rmtree(path)
    path = _copy(task_bundles["binary"], tmp_path)
    size = (path / "loss.onnx").stat().st_size
    with open(path / "loss.onnx", "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(runtime.IntegrityError) as err:
        runtime.load(path)
    assert str(err.value) == (f"{path / 'loss.onnx'}: is {size - 10} bytes but manifest.json says {size} "
                              "(truncated or altered); copy the bundle again or re-export it")
    (path / "loss.onnx").unlink()
    with pytest.raises(runtime.IntegrityError, match=r"loss\.onnx: listed in manifest.json but missing"):
        runtime.load(path)


def test_unknown_format_version_and_inconsistent_graphs_are_refused(task_bundles, tmp_path):
    path = _copy(task_bundles["regression"], tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 7}))
    with pytest.raises(runtime.BundleError) as err:
        runtime.load(path)
    assert str(err.value) == (f"{path / 'manifest.json'}: format_version 7 is not supported by this runtime "
                              "(it reads 1); upgrade the runtime or re-export the bundle")
    (path / "manifest.json").write_text(json.dumps({**manifest, "outputs": ["value"]}))
    with pytest.raises(runtime.BundleError) as err:
        runtime.load(path)
    assert str(err.value) == (
        f"{path / 'model.onnx'}: graph inputs [('x', 'tensor(float)')] and outputs ['prediction'] differ from "
        "manifest.json (inputs [('x', 'tensor(float)')], outputs ['value']); the bundle is inconsistent, re-export it")
    with pytest.raises(runtime.BundleError, match="is not a bundle"):
        runtime.load(tmp_path)


def test_input_errors_say_what_is_wrong_and_the_fix(task_bundles, build_bundle):
    bundle = runtime.load(task_bundles["multiclass"].bundle)
    cases = [
        (np.zeros((2, 3, 16), np.float32), "x: series have 3 channels but the model was trained on 1"),
        (np.zeros(16, np.float32), "x: has shape (16,); pass (N, C, L) or (N, L); for one series use x[None]"),
        (np.zeros((0, 1, 16), np.float32), "x: holds no series (shape (0, 1, 16)); pass at least one"),
        (np.array([["a", "b"]]), "x: has dtype <U1; pass real numbers (float32 is used inside)"),
        (np.ones((2, 2), bool), "x: has dtype bool; pass real numbers (float32 is used inside)"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [0.0, 1.0], [1.0, np.inf]]),
         "x: NaN or Inf in series rows 1, 3 (or values too large for float32); fill or drop missing values first"),
        (np.full((1, 4), 1e300), "x: NaN or Inf in series row 0 (or values too large for float32); fill or drop "
                                 "missing values first"),
    ]
    for x, message in cases:
        with pytest.raises(runtime.InputError) as err:
            bundle.predict(x)
        assert str(err.value) == message
    with pytest.raises(runtime.InputError) as err:
        bundle.loss(np.zeros((2, 3), np.float32), np.array([0, 3]))
    assert str(err.value) == "target row 1: 3 is not a class index 0..2"
    with pytest.raises(runtime.InputError) as err:
        bundle.evaluate(np.zeros((2, 16), np.float32), ["cat", "cow"])
    assert str(err.value) == "y row 1: class 'cow' is not one of the classes of the training data (cat, dog, eel)"
    fixed = runtime.load(build_bundle("regression", model="simple-cnn").bundle)
    with pytest.raises(runtime.InputError) as err:
        fixed.predict(np.zeros((2, 20), np.float32))
    assert str(err.value) == ("x: series have length 20 but this model takes exactly 16 (it was trained with a "
                              "fixed-length model; resample or crop the series)")
    with pytest.raises(runtime.InputError) as err:
        fixed.loss(np.zeros((2, 2), np.float32), np.zeros((2, 3)))
    assert str(err.value) == "target: has shape (2, 3); regression targets are (N, 2)"


def test_any_length_model_accepts_other_lengths_and_2d_input(task_bundles):
    tb = task_bundles["count"]
    bundle = runtime.load(tb.bundle, threads=1)
    X = np.random.default_rng(4).normal(size=(6, 40)).astype(np.float64)  # (N, L), float64, length 40
    got = bundle.predict(X)
    expected = _eager_outputs(tb.run_dir, X[:, None, :].astype(np.float32))
    for name, e in zip(bundle.outputs, expected):
        np.testing.assert_allclose(got[name], e, atol=ATOL, rtol=RTOL)
