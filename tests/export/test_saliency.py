"""export --saliency: the exported `saliency` output against a numpy class activation map computed from the eager
model's last feature maps and head weights, in onnxruntime, TorchScript and torch.export; predict --saliency;
the refusals for models without an exact map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.bundle import rebuild
from tests.conftest import run_pipeline

ATOL = RTOL = 1e-5


def _train_and_export(tmp_path, npz_file, task, model, *flags, formats="onnx,torchscript,pt2"):
    data = npz_file(task, n=48, length=40)
    trained = run_pipeline(["train", "--data", data, "--task", task, "--model", model, "--width", "0.1", "--epochs", "2",
                            "--no-progress", "--out", tmp_path / "run", *flags], tmp_path)
    assert trained.returncode == 0, trained.stderr
    exported = run_pipeline(["export", tmp_path / "run", "--saliency", "--format", formats], tmp_path)
    assert exported.returncode == 0, exported.stderr
    return tmp_path / "run", tmp_path / "run" / "bundle"


def _scaled(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its largest magnitude (the exported saliency's scale)."""
    return maps / np.maximum(np.abs(maps).max(axis=-1, keepdims=True), 1e-30)


def _numpy_maps(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per member: the eager network's last feature maps (batch, C, L) and its head's weights (K, C), then the
    map of every output as numpy sums, through the member's output-layer scale; members averaged (unscaled:
    the mean over time of one network's map plus a constant is its score)."""
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
    """Every graph file of the bundle, loaded as a host of its format loads it."""
    as_numpy = lambda outs: [o.detach().numpy() for o in outs]  # noqa: E731
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(bundle / "model.pt"))
    program = torch.export.load(str(bundle / "model.pt2")).module()
    engines = {"onnxruntime": lambda x: session.run(None, {"x": x}),
               "torchscript": lambda x: as_numpy(script(torch.from_numpy(x))),
               "torch.export": lambda x: as_numpy(program(torch.from_numpy(x)))}
    if (bundle / "model.aoti.pt2").exists():
        from torch._inductor import aoti_load_package

        package = aoti_load_package(str(bundle / "model.aoti.pt2"))
        engines["aotinductor"] = lambda x: as_numpy(package(torch.from_numpy(x)))
    return engines


@pytest.mark.slow
@pytest.mark.parametrize("task, model, flags", [
    ("multiclass", "fcn", ()), ("binary", "resnet", ()), ("multilabel", "inception", ()),
    ("regression", "lite", ()), ("count", "fcn", ()), ("multiclass", "fcn", ("--ensemble", "2"))])
def test_exported_saliency_equals_a_numpy_map_of_the_eager_features_in_every_format(tmp_path, npz_file, task,
                                                                                     model, flags):
    """ONNX, TorchScript and torch.export for every model and kind of task, and the AOTInductor package of the
    multiclass fcn (one compile: the C++ kit's tests run the others)."""
    formats = "onnx,torchscript,pt2,aoti" if (task, model, flags) == ("multiclass", "fcn", ()) else \
        "onnx,torchscript,pt2"
    run_dir, bundle = _train_and_export(tmp_path, npz_file, task, model, *flags, formats=formats)
    assert (bundle / "model.aoti.pt2").exists() == ("aoti" in formats)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["outputs"][-1] == "saliency"
    eager = rebuild(run_dir).model
    rng = np.random.default_rng(1)
    for batch, length in ((1, 40), (5, 17), (3, 90)):
        x = (rng.normal(size=(batch, 1, length)) * 3).astype(np.float32)
        scores, maps = _numpy_maps(eager, x)  # (batch, K), (batch, K, L)
        if task == "multiclass":
            expected = _scaled(maps[np.arange(batch), scores.argmax(1)])  # the predicted class's map
        else:
            expected = _scaled(maps[:, 0] if maps.shape[1] == 1 else maps)
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
    np.testing.assert_allclose(maps, _scaled(reference[np.arange(7), scores.argmax(1)]), atol=ATOL, rtol=RTOL)
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
    int8 = run_pipeline(["export", run_dir, "--saliency", "--quantize", "int8", "--max-metric-drop", "100",
                         "--format", "onnx", "--out", tmp_path / "int8"], tmp_path)
    assert int8.returncode == 0, int8.stderr  # the map's MatMul stays float (per-channel int8 of it fails)
    quantised = ort.InferenceSession(str(tmp_path / "int8" / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in quantised.get_outputs()][-1] == "saliency"
    int8_maps = quantised.run(None, {"x": X})[-1]
    assert int8_maps.shape == (7, 40) and np.abs(int8_maps).max(axis=1) == pytest.approx(1.0)
    checked = run_pipeline(["verify", tmp_path / "int8"], tmp_path)
    assert checked.returncode == 0 and checked.stdout.endswith("verified\n"), checked.stdout + checked.stderr


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


# --- what the maps show ------------------------------------------------------------------------------------------

BUMP = slice(40, 56)  # where the class is decided; everything else is noise
BUMP_SHAPES = np.stack([np.hanning(16) * 3.0,  # class 0: a bump up
                        -np.hanning(16) * 3.0,  # class 1: a bump down
                        np.sin(np.linspace(0, 2 * np.pi, 16)) * 3.0])  # class 2: up then down


def bumps(n: int, seed: int, length: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Noise (sd 1) with one of three 16-sample shapes at samples 40..55: the class is decided there alone."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 1, length)).astype(np.float32)
    X[:, 0, BUMP] += BUMP_SHAPES[y].astype(np.float32)
    return X, y


def positive_mass_inside(maps: np.ndarray, region: slice) -> np.ndarray:
    """Per map: the share of its positive values that lies inside `region`."""
    positive = np.clip(maps, 0, None)
    return positive[:, region].sum(axis=1) / np.maximum(positive.sum(axis=1), 1e-12)


def test_positive_mass_inside_counts_only_positive_values():
    maps = np.array([[1.0, 3.0, -5.0, 0.0], [0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(positive_mass_inside(maps, slice(0, 2)), [1.0, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(positive_mass_inside(maps, slice(1, 3)), [0.75, 0.5], rtol=0, atol=1e-12)


@pytest.mark.learns
@pytest.mark.slow
def test_the_map_of_a_correct_prediction_lies_on_the_bump_that_decides_it(tmp_path):
    """Default flags (15 epochs, as the learns tier): test accuracy near 1 and, for correctly classified series,
    at least 70 % of the positive saliency mass inside the 16 of 128 samples (12.5 %) that decide the class."""
    import pipeline

    X, y = bumps(300, seed=0)
    X_test, y_test = bumps(150, seed=1)
    run = pipeline.fit(X, y, task="multiclass", epochs=15, seed=0, out=tmp_path / "run")
    labels = run.predict(X_test)["label"]
    maps = run.saliency(X_test)
    right = labels == y_test
    assert right.mean() >= 0.95
    inside = positive_mass_inside(maps[right], BUMP)
    assert inside.mean() >= 0.7, f"mean share inside the bump {inside.mean():.3f}"
    shuffled = np.random.default_rng(2).permuted(maps[right], axis=1)  # a map that ignores where things are
    assert positive_mass_inside(shuffled, BUMP).mean() < 0.25


@pytest.mark.slow
def test_the_docs_picture_of_the_embedded_data_maps(tmp_path):
    """docs/models.md's picture (artifacts/saliency.png): a correctly classified test series of each embedded
    waveform, its line coloured by the map of the predicted class; the run's maps equal its bundle's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import pipeline
    from pipeline.data.synthetic import WAVEFORMS, waveforms
    from runtime import load

    run = pipeline.fit(*_xy(waveforms(n=400, seed=7)), epochs=30, width=0.5, seed=0, out=tmp_path / "run")
    test = waveforms(n=40, seed=8)
    maps = run.saliency(test.X)
    bundle = run.export(tmp_path / "bundle", formats="onnx", saliency=True)
    np.testing.assert_allclose(load(bundle).predict(test.X)["saliency"], maps, atol=ATOL, rtol=RTOL)
    predicted = np.array(run.config.record.encoding.classes)[run.predict(test.X)["label"]]
    assert (predicted == test.y).mean() >= 0.7
    figure, axes = plt.subplots(len(WAVEFORMS), 1, figsize=(8, 7), sharex=True)
    for ax, name in zip(axes, WAVEFORMS):
        i = int(np.flatnonzero((test.y == name) & (predicted == name))[0])
        series, heat = test.X[i, 0], maps[i] / max(np.abs(maps[i]).max(), 1e-12)
        points = ax.scatter(np.arange(len(series)), series, c=heat, cmap="coolwarm", vmin=-1, vmax=1, s=9)
        ax.plot(series, color="0.7", lw=0.6, zorder=0)
        ax.set_ylabel(name, fontsize=9)
    figure.colorbar(points, ax=axes, label="saliency of the predicted class (scaled to +-1 per series)")
    axes[-1].set_xlabel("time step")
    picture = Path(__file__).resolve().parents[2] / "artifacts" / "saliency.png"
    picture.parent.mkdir(exist_ok=True)
    figure.savefig(picture, dpi=80)
    plt.close(figure)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _xy(data) -> tuple[np.ndarray, np.ndarray]:
    return data.X, data.y


# --- from Python --------------------------------------------------------------------------------------------------

def test_estimators_and_runs_give_the_bundles_maps_and_refuse_models_without_them(tmp_path):
    """CNNClassifier (multilabel y: a map per label) and CNNRegressor (one target near 1000: (N, L), its terms in
    the target's units) against the numpy reference and their own exported bundles; a kernel model refused in one
    line, in the API's error type."""
    from pipeline import fit
    from pipeline.errors import PipelineError
    from pipeline.sklearn import CNNClassifier, CNNRegressor, InputError
    from runtime import load

    X, y = bumps(60, seed=3)
    X_new, _ = bumps(9, seed=4)
    multilabel = np.stack([y == 0, y == 1], axis=1).astype(np.int64)
    near_1000 = X[:, 0, BUMP].sum(1) * 50 + 1000
    for estimator, target, shape in ((CNNClassifier(width=0.1, epochs=2, random_state=0), multilabel, (9, 2, 128)),
                                     (CNNRegressor(width=0.1, epochs=2, random_state=0), near_1000, (9, 128))):
        maps = estimator.fit(X, target).saliency(X_new)
        assert maps.shape == shape
        _, reference = _numpy_maps(estimator.model_, X_new)
        np.testing.assert_allclose(maps, _scaled(reference if len(shape) == 3 else reference[:, 0]), atol=ATOL,
                                   rtol=RTOL)
        bundle = estimator.export(tmp_path / type(estimator).__name__, saliency=True)
        np.testing.assert_allclose(load(bundle).predict(X_new)["saliency"], maps, atol=ATOL, rtol=RTOL)
    why = ("--saliency: minirocket has no exact per-time-step map; its features are proportions of positive "
           "convolution outputs over the whole series (PPV), counted, not averaged, so no map sums to them; export "
           "without --saliency, or train fcn, resnet, inception or lite")
    run = fit(X, y, model="minirocket", out=tmp_path / "kernel")
    with pytest.raises(PipelineError) as refused:
        run.saliency(X_new)
    assert str(refused.value) == why
    with pytest.raises(InputError) as refused:
        CNNClassifier(model="minirocket").fit(X, y).saliency(X_new)
    assert str(refused.value) == why


def test_predict_on_recordings_writes_one_map_per_window(tmp_path, windowed_bundles):
    """A windowed run exported with --saliency: `predict --saliency` on a per-sample .csv writes the map of every
    window, in the rows' order, as eager computes it on the same windows cut by a plain loop."""
    from export.bundle import ExportConfig, export_run
    from export.graphs import as_tuple, model_graph
    from tests.conftest import STRIDE, WINDOW, make_recordings, write_recordings_csv

    wb = windowed_bundles["multiclass"]
    bundle = export_run(wb.run_dir, ExportConfig(fmt="onnx", saliency=True), out=tmp_path / "bundle",
                        log=lambda _: None)
    recordings, labels = make_recordings("multiclass", count=2, samples=130, seed=5)
    data = write_recordings_csv(tmp_path / "new.csv", recordings, labels)
    done = run_pipeline(["predict", bundle, "--data", data, "--saliency", tmp_path / "maps.npy", "--out",
                         tmp_path / "windows.csv"], tmp_path)
    assert done.returncode == 0, done.stderr
    maps = np.load(tmp_path / "maps.npy")
    windows = np.stack([r[:, s:s + WINDOW] for r in recordings for s in range(0, r.shape[1] - WINDOW + 1, STRIDE)])
    run = rebuild(wb.run_dir)
    with torch.inference_mode():
        eager = as_tuple(model_graph(run.model, run.task, saliency=True)(torch.from_numpy(windows)))[-1].numpy()
    rows = (tmp_path / "windows.csv").read_text().splitlines()[1:]
    assert maps.shape == (len(rows), WINDOW) == eager.shape
    np.testing.assert_allclose(maps, eager, atol=ATOL, rtol=RTOL)
