"""export --saliency: the exported `saliency` output against a numpy class activation map computed from the eager
model's last feature maps and head weights, in onnxruntime, TorchScript and torch.export; predict --saliency;
the refusals for models without an exact map."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.bundle import rebuild
from tests.conftest import run_pipeline

ATOL = RTOL = 1e-5


def _train_and_export(tmp_path, npz_file, task, model, *flags):
    data = npz_file(task, n=48, length=40)
    trained = run_pipeline(["train", "--data", data, "--task", task, "--model", model, "--width", "0.1", "--epochs", "2",
                            "--no-progress", "--out", tmp_path / "run", *flags], tmp_path)
    assert trained.returncode == 0, trained.stderr
    exported = run_pipeline(["export", tmp_path / "run", "--saliency", "--format", "onnx,torchscript,pt2"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    return tmp_path / "run", tmp_path / "run" / "bundle"


def _numpy_maps(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per member: the eager network's last feature maps (batch, C, L) and its head's weights (K, C), then the
    map of every output as numpy sums, through the member's output-layer scale; members averaged."""
    with torch.no_grad():
        z = model.normalize(torch.from_numpy(x))
        scores = model(torch.from_numpy(x)).numpy()
    net = model.net
    members = list(net.members) if hasattr(net, "members") else [net]
    maps = []
    for i, member in enumerate(members):
        with torch.no_grad():
            features = member.feature_maps(z).numpy().astype(np.float64)  # (batch, C, L)
        weight = member.head.weight.detach().numpy().astype(np.float64)  # (K, C)
        scale = (net.scale[i, 0] if len(members) > 1 else model.output.scale).numpy().astype(np.float64)
        maps.append(np.einsum("kc,bcl->bkl", weight, features) * scale[None, :, None])
    return scores, np.mean(maps, axis=0)


def _engines(bundle):
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(bundle / "model.pt"))
    program = torch.export.load(str(bundle / "model.pt2")).module()
    as_numpy = lambda outs: [o.detach().numpy() for o in outs]  # noqa: E731
    return {"onnxruntime": lambda x: session.run(None, {"x": x}),
            "torchscript": lambda x: as_numpy(script(torch.from_numpy(x))),
            "torch.export": lambda x: as_numpy(program(torch.from_numpy(x)))}


@pytest.mark.slow
@pytest.mark.parametrize("task, model, flags", [
    ("multiclass", "fcn", ()), ("binary", "resnet", ()), ("multilabel", "inception", ()),
    ("regression", "lite", ()), ("count", "fcn", ()), ("multiclass", "fcn", ("--ensemble", "2"))])
def test_exported_saliency_equals_a_numpy_map_of_the_eager_features_in_every_format(tmp_path, npz_file, task,
                                                                                     model, flags):
    run_dir, bundle = _train_and_export(tmp_path, npz_file, task, model, *flags)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["outputs"][-1] == "saliency"
    eager = rebuild(run_dir).model
    rng = np.random.default_rng(1)
    for batch, length in ((1, 40), (5, 17), (3, 90)):
        x = (rng.normal(size=(batch, 1, length)) * 3).astype(np.float32)
        scores, maps = _numpy_maps(eager, x)  # (batch, K), (batch, K, L)
        if task == "multiclass":
            expected = maps[np.arange(batch), scores.argmax(1)]  # the predicted class's map
        else:
            expected = maps[:, 0] if maps.shape[1] == 1 else maps
        for name, run in _engines(bundle).items():
            got = run(x)
            assert len(got) == len(manifest["outputs"])
            np.testing.assert_allclose(got[-1], expected, atol=ATOL, rtol=RTOL, err_msg=f"{name} {batch}x{length}")
        if "--ensemble" not in flags:  # one network: the map's mean over time is the score up to a constant
            constant = scores - maps.mean(axis=2)  # (batch, K): the head's bias through the output layer
            np.testing.assert_allclose(constant, np.broadcast_to(constant[:1], constant.shape), atol=1e-4)


def test_predict_writes_the_maps_and_refuses_a_bundle_without_them(tmp_path, npz_file):
    run_dir, bundle = _train_and_export(tmp_path, npz_file, "multiclass", "fcn")
    X = np.load(npz_file("multiclass", name="new", n=7, length=40, seed=3))["X"]
    np.save(tmp_path / "new.npy", X)
    done = run_pipeline(["predict", bundle, "--data", tmp_path / "new.npy", "--saliency", tmp_path / "maps.npy",
                         "--out", tmp_path / "preds.npz"], tmp_path)
    assert done.returncode == 0, done.stderr
    maps = np.load(tmp_path / "maps.npy")
    assert maps.shape == (7, 40) and maps.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "preds.npz")["saliency"], maps)
    scores, reference = _numpy_maps(rebuild(run_dir).model, X)
    np.testing.assert_allclose(maps, reference[np.arange(7), scores.argmax(1)], atol=ATOL, rtol=RTOL)
    again = run_pipeline(["predict", bundle, "--data", tmp_path / "new.npy", "--saliency", tmp_path / "maps.npy"],
                         tmp_path)
    assert again.returncode == 2 and again.stderr == (
        f"Error: {tmp_path / 'maps.npy'} already exists; pass --force to replace it or choose another --saliency\n")
    plain = run_pipeline(["export", run_dir, "--format", "onnx", "--out", tmp_path / "plain"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    refused = run_pipeline(["predict", tmp_path / "plain", "--data", tmp_path / "new.npy", "--saliency",
                            tmp_path / "other.npy"], tmp_path)
    assert refused.returncode == 2 and refused.stderr == (
        f"Error: --saliency: {tmp_path / 'plain'} has no 'saliency' output; export the run with pipeline export "
        "RUN_DIR --saliency\n")
    assert not (tmp_path / "other.npy").exists()
    assert json.loads((tmp_path / "plain" / "manifest.json").read_text())["outputs"] == \
        ["logits", "probabilities", "label"]  # without the flag the bundle is unchanged


@pytest.mark.parametrize("model, why", [
    ("minirocket", "its features are proportions of positive convolution outputs over the whole series (PPV), "
                   "counted, not averaged, so no map sums to them"),
    ("simple-cnn", "its linear layer reads the flattened feature maps, one weight per position, not their average")])
def test_models_without_an_exact_map_are_refused_in_one_line(tmp_path, npz_file, model, why):
    data = npz_file("binary", n=30, length=24)
    trained = run_pipeline(["train", "--data", data, "--model", model, "--width", "0.1", "--epochs", "1",
                            "--no-progress", "--out", tmp_path / "run"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    refused = run_pipeline(["export", tmp_path / "run", "--saliency"], tmp_path)
    assert refused.returncode == 2 and refused.stderr == (
        f"Error: --saliency: {model} has no exact per-time-step map; {why}; export without --saliency, or train "
        "fcn, resnet, inception or lite\n")
    assert not (tmp_path / "run" / "bundle").exists()
