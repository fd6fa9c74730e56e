"""Export parity matrix, bundle contents, failure on a perturbed graph, overwrite rules, custom loss."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import export.bundle as bundle_mod
from export.bundle import ExportConfig, export_run, sha256
from export.exporters import quiet as quiet_exporters
from export.verify import BATCH_SIZES
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from runtime.tasks import TASKS
from pipeline.training.train import train

QUIET = dict(log=lambda _: None)
NON_DEFAULT = {
    "huber": dict(huber_delta=0.5), "smooth_l1": dict(beta=0.3),
    "bce_with_logits": dict(pos_weight=(2.5,)),
    "cross_entropy": dict(class_weights=(0.5, 2.0, 1.0), label_smoothing=0.1),
    "nll": dict(class_weights=(1.0, 3.0, 0.5)), "multi_margin": dict(class_weights=(1.0, 2.0, 1.0)),
}
BUNDLE_FILES = {"all": ["README.txt", "golden.json", "loss.onnx", "loss.pt", "manifest.json",
                        "manifest.schema.json", "model.onnx", "model.pt", "verification.json"],
                "onnx": ["README.txt", "golden.json", "loss.onnx", "manifest.json", "manifest.schema.json",
                         "model.onnx", "verification.json"],
                "torchscript": ["README.txt", "golden.json", "loss.pt", "manifest.json", "manifest.schema.json",
                                "model.pt", "verification.json"]}


def _run(tmp_path, npz_file, task, loss=None, model="fcn", name="run", **loss_kwargs):
    if loss in NON_DEFAULT and task != "multilabel":
        loss_kwargs = {**NON_DEFAULT[loss], **loss_kwargs}
    return train(RunSettings(DataConfig(data=str(npz_file(task, n=40, length=16)), task=task, val_split=0.0),
                 LossConfig(name=loss, **loss_kwargs), ModelConfig(name=model, width=0.125),
                 TrainConfig(epochs=1, progress=False, seed=1)), out=tmp_path / name, **QUIET).run_dir


# forecasting exports from recordings with a horizon: tests/pipeline/test_forecast.py verifies each of its losses
TASK_LOSSES = [(task, spec.name) for task, t in TASKS.items() if task != "forecast" for spec in t.losses]


@pytest.mark.parametrize("task, loss", TASK_LOSSES, ids=[f"{t}-{l}" for t, l in TASK_LOSSES])
def test_parity_matrix_every_task_and_loss_in_both_formats(tmp_path, npz_file, task, loss):
    run_dir = _run(tmp_path, npz_file, task, loss)
    out = export_run(run_dir, ExportConfig(fmt="all"), **QUIET)
    verification = json.loads((out / "verification.json").read_text())
    rows = verification["rows"]
    assert verification["passed"] and all(r["problem"] is None for r in rows)
    engines = {r["engine"] for r in rows}
    assert engines == {"onnxruntime", "torchscript"}
    cases = {r["case"] for r in rows if r["graph"] == "model"}
    assert cases == {f"batch={n} length={L}" for n in BATCH_SIZES for L in (8, 16, 32)} | {"batch=7 length=16 x10 std"}
    assert {r["case"] for r in rows if r["graph"] == "loss"} == {f"batch={n}" for n in BATCH_SIZES} | {
        f"batch=16 edge {what}" for what in ("correct", "wrong", "random")}
    assert {r["output"] for r in rows if r["graph"] == "model"} == set(TASKS[task].outputs)
    # every difference within atol + rtol * |eager| at its own value (the edge cases reach values of 4e8)
    assert max(r["tolerance_used"] for r in rows if r["tolerance_used"] is not None) <= 1.0
    assert max(r["max_abs"] for r in rows if r["max_abs"] is not None and r["case"].startswith("batch=64 ")) \
        <= 1e-5 + 1e-5 * 100
    # the loss graph really carries the training parameters: compare with the torch.nn reference
    session = ort.InferenceSession(str(out / "loss.onnx"))
    golden = json.loads((out / "golden.json").read_text())["loss"]
    feeds = {n: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"]) for n, v in golden["inputs"].items()}
    loss_value, per_sample = session.run(None, feeds)
    prediction, target = torch.from_numpy(feeds["prediction"]), torch.from_numpy(feeds["target"])
    np.testing.assert_allclose(loss_value, float(_reference(task, loss)(prediction, target)), atol=1e-5, rtol=1e-5)
    assert per_sample.shape == (feeds["prediction"].shape[0],)


def _reference(task: str, loss: str):
    """The torch.nn loss (numpy for hinge) with the parameters _run trains with."""
    params = NON_DEFAULT.get(loss, {}) if task != "multilabel" else {}
    weight = torch.tensor(params["class_weights"]) if "class_weights" in params else None
    references = {
        "mse": nn.MSELoss(), "l1": nn.L1Loss(), "huber": nn.HuberLoss(delta=params.get("huber_delta", 1.0)),
        "smooth_l1": nn.SmoothL1Loss(beta=params.get("beta", 1.0)),
        "bce_with_logits": nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(params["pos_weight"]) if "pos_weight" in params else None),
        "bce": lambda p, t: nn.BCELoss()(torch.sigmoid(p.double()), t.double()),
        "hinge": lambda p, t: np.maximum(0.0, 1.0 - (2 * t.numpy() - 1) * p.numpy()).mean(),
        "cross_entropy": nn.CrossEntropyLoss(weight=weight, label_smoothing=params.get("label_smoothing", 0.0)),
        "nll": lambda p, t: nn.NLLLoss(weight=weight)(torch.log_softmax(p, dim=1), t),
        "multi_margin": nn.MultiMarginLoss(weight=weight), "multilabel_soft_margin": nn.MultiLabelSoftMarginLoss(),
        "poisson_nll": nn.PoissonNLLLoss(log_input=True, full=False),
    }
    return references[loss]


def test_cross_entropy_with_weights_and_label_smoothing_matches_torch_reference(tmp_path, npz_file):
    run_dir = _run(tmp_path, npz_file, "multiclass", "cross_entropy")
    out = export_run(run_dir, ExportConfig(fmt="onnx"), **QUIET)
    session = ort.InferenceSession(str(out / "loss.onnx"))
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(50, 3, generator=g) * 3, torch.randint(0, 3, (50,), generator=g)
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0]), label_smoothing=0.1)
    loss, _ = session.run(None, {"prediction": logits.numpy(), "target": target.numpy()})
    np.testing.assert_allclose(loss, float(reference(logits, target)), atol=1e-6, rtol=1e-5)


def test_bundle_files_manifest_and_metadata(tmp_path, npz_file):
    run_dir = _run(tmp_path, npz_file, "multiclass", "cross_entropy")
    for fmt, files in BUNDLE_FILES.items():
        out = export_run(run_dir, ExportConfig(fmt=fmt), out=tmp_path / fmt, **QUIET)
        assert sorted(p.name for p in out.iterdir()) == files
    out = tmp_path / "all"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["task"] == "multiclass"
    assert manifest["classes"] == ["0", "1", "2"] and manifest["opset"] == 18
    assert manifest["input"]["channels"] == 1 and manifest["input"]["length"]["min"] == 1
    assert manifest["loss"]["params"] == {"class_weights": [0.5, 2.0, 1.0], "label_smoothing": 0.1}
    assert manifest["torchscript"] == {"model": "script", "loss": "script"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(out / name)
    assert set(manifest["files"]) == set(BUNDLE_FILES["all"]) - {"manifest.json"}
    proto = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["pipeline.task"] == "multiclass" and json.loads(meta["pipeline.classes"]) == ["0", "1", "2"]
    assert json.loads(meta["pipeline.loss"])["params"]["label_smoothing"] == 0.1
    assert meta["pipeline.normalize"] == "channel"
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "length"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_fixed_length_model_keeps_its_length(tmp_path, npz_file):
    run_dir = _run(tmp_path, npz_file, "regression", "mse", model="simple-cnn")
    out = export_run(run_dir, ExportConfig(fmt="onnx"), **QUIET)
    proto = onnx.load(str(out / "model.onnx"))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 16]
    assert json.loads((out / "manifest.json").read_text())["input"]["length"] == {"fixed": 16}


def test_perturbed_graph_fails_export_and_lists_every_bad_output(tmp_path, npz_file, monkeypatch):
    run_dir = _run(tmp_path, npz_file, "multiclass", "cross_entropy")
    real_export = bundle_mod.export_onnx

    def perturbed(module, example, path, input_names, output_names, *args, **kwargs):
        result = real_export(module, example, path, input_names, output_names, *args, **kwargs)
        if "x" in input_names:  # shift the model graph's logits by adding to the head's bias
            proto = onnx.load(str(path))
            for init in proto.graph.initializer:
                if init.name.endswith("head.bias"):
                    values = onnx.numpy_helper.to_array(init) + np.array([0.5, 0.0, -0.5], np.float32)
                    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
            onnx.save(proto, str(path))
        return result

    monkeypatch.setattr(bundle_mod, "export_onnx", perturbed)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("model  onnxruntime")]
    failing = {(line.split()[2], " ".join(line.split()[3:5])) for line in lines}
    # every bad output on every shape, not only the first: logits and probabilities always move,
    # the label only where the shift flips an argmax
    for output in ("logits", "probabilities"):
        assert {c for o, c in failing if o == output} == {f"batch={n} length={L}" for n in BATCH_SIZES
                                                          for L in (8, 16, 32)}
    assert {o for o, _ in failing} <= {"logits", "probabilities", "label"}
    assert not any(line.startswith("loss ") for line in result.output.splitlines())
    assert not (run_dir / "bundle").exists()
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []


def test_existing_bundle_is_not_overwritten_without_force(tmp_path, npz_file):
    run_dir = _run(tmp_path, npz_file, "binary", "bce_with_logits")
    runner = CliRunner()
    first = runner.invoke(main, ["export", str(run_dir), "--format", "onnx"])
    assert first.exit_code == 0, first.output
    before = (run_dir / "bundle" / "manifest.json").read_text()
    again = runner.invoke(main, ["export", str(run_dir), "--format", "torchscript"])
    assert again.exit_code == 2
    assert again.output == (f"Error: {run_dir / 'bundle'} already exists; pass --force to replace it or choose "
                            "another --out\n")
    assert (run_dir / "bundle" / "manifest.json").read_text() == before
    forced = runner.invoke(main, ["export", str(run_dir), "--format", "torchscript", "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in (run_dir / "bundle").iterdir()) == BUNDLE_FILES["torchscript"]


def test_custom_loss_is_exported(tmp_path, npz_file, monkeypatch):
    (tmp_path / "lossmod.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class Weighted(nn.Module):
            def __init__(self, scale: float = 1.0):
                super().__init__()
                self.scale = scale
            def forward(self, prediction, target):
                return self.scale * torch.mean(torch.abs(prediction - target) ** 1.5)
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _run(tmp_path, npz_file, "regression", "lossmod:Weighted", loss_params=(("scale", "2.0"),))
    out = export_run(run_dir, ExportConfig(fmt="all"), **QUIET)
    g = torch.Generator().manual_seed(3)
    p, t = torch.randn(9, 2, generator=g), torch.randn(9, 2, generator=g)
    loss, per_sample = ort.InferenceSession(str(out / "loss.onnx")).run(
        None, {"prediction": p.numpy(), "target": t.numpy()})
    np.testing.assert_allclose(loss, float(2.0 * ((p - t).abs() ** 1.5).mean()), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(per_sample, (2.0 * ((p - t).abs() ** 1.5).mean(1)).numpy(), atol=1e-5, rtol=1e-5)


def test_unexportable_custom_loss_fails_with_a_clear_message(tmp_path, npz_file, monkeypatch):
    (tmp_path / "branchy.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class Branchy(nn.Module):
            def forward(self, prediction, target):
                if float(prediction.sum()) > 0:  # data-dependent Python branch: no graph can hold it
                    return torch.mean((prediction - target) ** 2)
                return torch.mean(torch.abs(prediction - target))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _run(tmp_path, npz_file, "regression", "branchy:Branchy")
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 1, result.exception
    lines = result.output.splitlines()
    assert lines[0].startswith("exporting the fcn model and the branchy:Branchy loss of regression to ONNX;")
    assert lines[1].startswith("Error: loss 'branchy:Branchy' could not be exported to ONNX: ")
    assert "Traceback" not in result.output
    assert not (run_dir / "bundle").exists()


def test_golden_data_holds_a_batch_of_two_for_both_graphs(tmp_path, npz_file):
    out = export_run(_run(tmp_path, npz_file, "binary", "hinge"), ExportConfig(fmt="onnx"), **QUIET)
    golden = json.loads((out / "golden.json").read_text())
    assert golden["model"]["inputs"]["x"]["shape"] == [2, 1, 16]
    assert golden["loss"]["inputs"]["target"]["shape"] == [2, 1]
    assert golden["loss"]["outputs"]["per_sample_loss"]["shape"] == [2]


class _LogSigmoidLoss(nn.Module):
    def forward(self, prediction, target):
        return -(target * nn.functional.logsigmoid(prediction)).mean()


def test_onnx_export_reuses_one_registry_and_writes_the_graph_of_a_stock_torch_onnx_export(tmp_path):
    """export_onnx builds torchlib's registry once per process; the graph it writes is byte for byte the one
    torch.onnx.export writes when handed the translation table itself, and torch's own exporter is stock again
    afterwards (a user's torch.onnx.export in the same process gets its usual fresh registry)."""
    from torch.onnx._internal.exporter import _registration

    from export.exporters import _registry, _translations, export_onnx
    from export.options import DEFAULT_OPSET

    stock = _registration.ONNXRegistry.__dict__["from_torchlib"]
    loss, example = _LogSigmoidLoss(), (torch.randn(4, 3), torch.rand(4, 3))
    axes = {"prediction": {0: "batch"}, "target": {0: "batch"}}
    for name in ("first", "second"):
        export_onnx(loss, example, tmp_path / f"{name}.onnx", ("prediction", "target"), ("loss",), axes)
    assert _registry.cache_info().currsize >= 1 and _registry.cache_info().hits >= 1
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is stock
    batch = torch.export.Dim("batch")
    with quiet_exporters():
        torch.onnx.export(loss, example, str(tmp_path / "stock.onnx"), input_names=["prediction", "target"],
                          output_names=["loss"], dynamic_shapes={"prediction": {0: batch}, "target": {0: batch}},
                          opset_version=DEFAULT_OPSET, dynamo=True, external_data=False,
                          custom_translation_table=_translations())
    graphs = [onnx.load(str(tmp_path / f"{name}.onnx")).graph for name in ("first", "second", "stock")]
    assert graphs[0].SerializeToString() == graphs[1].SerializeToString() == graphs[2].SerializeToString()
    assert "Softplus" in [node.op_type for node in graphs[0].node]  # the stable log-sigmoid, not Log(Sigmoid)
    p, t = (np.array([[-200.0, 0.0, 30.0]] * 2, np.float32), np.array([[1.0, 0.5, 0.0]] * 2, np.float32))
    session = ort.InferenceSession(str(tmp_path / "first.onnx"))
    (value,) = session.run(None, {"prediction": p, "target": t})
    expected = -(t * -np.logaddexp(0, -p.astype(np.float64))).mean()  # log(sigmoid(p)) = -softplus(-p)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.hostile
def test_export_force_refuses_an_earlier_bundle_holding_a_file_no_export_wrote(tmp_path, npz_file, keys):
    """--force replaces an export's own files (its manifest's, its signature), never a file the user put there."""
    run_dir = _run(tmp_path, npz_file, "binary", "bce_with_logits")
    runner = CliRunner()
    assert runner.invoke(main, ["export", str(run_dir), "--format", "onnx", "--sign-key",
                                str(keys.private())]).exit_code == 0
    bundle = run_dir / "bundle"
    (bundle / "notes").mkdir()
    (bundle / "notes" / "todo.txt").write_text("mine")
    (bundle / "notes.txt").write_text("mine too")
    before = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    forced = runner.invoke(main, ["export", str(run_dir), "--format", "torchscript", "--force"])
    assert forced.exit_code == 2
    assert forced.output == (f"Error: --out {bundle} holds files that no export wrote (notes.txt, notes/todo.txt: not "
                             "in its manifest.json); --force replaces only what an export wrote, so move them out or "
                             "choose another --out\n")
    assert {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    (bundle / "notes.txt").unlink()
    shutil.rmtree(bundle / "notes")
    forced = runner.invoke(main, ["export", str(run_dir), "--format", "torchscript", "--force"])
    assert forced.exit_code == 0, forced.output  # its own model.sig and manifest are the export's to replace
    assert sorted(p.name for p in bundle.iterdir()) == BUNDLE_FILES["torchscript"]
