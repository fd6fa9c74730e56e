"""ExecuTorch programs (export --format pte): every task's bundle, every model and every loss lower and equal
eager PyTorch in executorch.runtime; the shape check refuses what the ExecuTorch runtime would answer wrongly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import export.pte as pte_mod
from export.bundle import ExportConfig, export_run, rebuild
from export.graphs import loss_candidates, model_graph
from export.grid import loss_cases, model_cases
from export.pte import PteBundle, PteRunner, fits, lower
from export.verify import BATCH_SIZES, VerificationError, verify_graph
from pipeline.cli import main
from pipeline.models.build import build_model
from pipeline.settings.config import KERNEL_MODELS, MODEL_NAMES, ModelConfig
from runtime.errors import BundleError
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS, MODEL_INPUT, Manifest
from runtime.tasks import TASKS
from tests.export.test_torch_export import LOSS_MODULES

QUIET = dict(log=lambda _: None)
ATOL = RTOL = 1e-5
PTE_FILES = {"README.txt", "golden.json", "loss.pte", "manifest.json", "manifest.schema.json", "model.pte",
             "verification.json"}


def _eager(run_dir, x: np.ndarray) -> list[np.ndarray]:
    run = rebuild(run_dir)
    with torch.inference_mode():
        out = model_graph(run.model, run.task)(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_tasks_bundle_exports_pte_programs_that_equal_eager(request, tmp_path, task):
    tb = request.getfixturevalue("forecast_bundle" if task == "forecast" else "task_bundles")
    tb = tb if task == "forecast" else tb[task]
    bundle = export_run(tb.run_dir, ExportConfig(fmt="pte"), out=tmp_path / "pte", **QUIET)
    assert {p.name for p in bundle.iterdir()} == PTE_FILES
    manifest = Manifest.read(bundle)
    cfg = rebuild(tb.run_dir).cfg
    x = manifest.pte.model.inputs[0]
    assert (x.name, x.dtype, x.shape, x.axes, x.dynamic) == (
        "x", "float32", [64, cfg.in_channels, cfg.length], ["batch", "channels", "length"], [0])
    assert manifest.pte.model.delegate == "xnnpack" and manifest.pte.loss.delegate == "portable"
    assert [i.name for i in manifest.pte.loss.inputs] == list(LOSS_INPUTS)
    assert all(i.shape[0] == 64 and i.dynamic == [0] for i in manifest.pte.loss.inputs)
    rows = json.loads((bundle / "verification.json").read_text())["rows"]
    # at the training length only (the program's length), every batch of the grid, and the loud series
    assert {r["case"] for r in rows if r["graph"] == "model"} == {
        f"batch={n} length={cfg.length}" for n in BATCH_SIZES} | {f"batch=7 length={cfg.length} x10 std"}
    assert {r["engine"] for r in rows} == {"executorch"} and all(r["problem"] is None for r in rows)
    if task == "binary":  # no int8 program was asked for
        with pytest.raises(BundleError) as err:
            PteBundle(bundle, precision="int8")
        assert str(err.value) == (f"{bundle}: has no model.int8.pte; re-export with `pipeline export RUN_DIR --format "
                                  "pte --quantize int8`, or run it in fp32")

    programs = PteBundle(bundle)
    g = np.random.default_rng(3)
    series = (g.normal(size=(130, cfg.in_channels, cfg.length)) * 5).astype(np.float32)  # 3 calls of <= 64
    outputs = programs.predict(series)
    for name, expected in zip(manifest.outputs, _eager(tb.run_dir, series)):
        np.testing.assert_allclose(outputs[name], expected, atol=ATOL, rtol=RTOL, err_msg=name)
    run = rebuild(tb.run_dir)
    target = loss_cases(task, cfg)[2].inputs[1]  # batch 7
    prediction = torch.from_numpy(outputs[manifest.outputs[0]][:7])
    loss, per_sample = programs.loss(prediction.numpy(), target.numpy())
    with torch.inference_mode():
        expected_loss, expected_per_sample = run.loss(prediction, target)
    np.testing.assert_allclose(loss, expected_loss.item(), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(per_sample, expected_per_sample.numpy(), atol=ATOL, rtol=RTOL)


def test_a_wrong_shape_is_refused_in_one_line_never_answered(task_bundles, tmp_path):
    tb = task_bundles["multiclass"]
    bundle = export_run(tb.run_dir, ExportConfig(fmt="pte", pte_max_batch=8), out=tmp_path / "pte", **QUIET)
    program = Manifest.read(bundle).pte.model
    runner = PteRunner(bundle / "model.pte", program)
    c, length = program.inputs[0].shape[1:]
    same_count = np.zeros((2, length, c), np.float32)  # the ExecuTorch runtime alone would answer this
    with pytest.raises(BundleError) as err:
        runner([same_count])
    assert str(err.value) == (f"x: shape (2, {length}, {c}) does not fit model.pte forward: it takes (batch 1..8, "
                              f"{c}, {length}); cut larger batches into calls of at most 8")
    for bad, message in ((np.zeros((9, c, length), np.float32), f"x: shape (9, {c}, {length}) does not fit"),
                         (np.zeros((0, c, length), np.float32), f"x: shape (0, {c}, {length}) does not fit"),
                         (np.zeros((2, c, length + 1), np.float32), f"x: shape (2, {c}, {length + 1}) does not fit"),
                         (np.zeros((2, c, length), np.float64), "x: dtype float64; model.pte forward takes float32")):
        with pytest.raises(BundleError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
            runner([bad])
    loss = PteRunner(bundle / "loss.pte", Manifest.read(bundle).pte.loss)
    with pytest.raises(BundleError, match=r"^target: dtype float32; loss.pte forward takes int64$"):
        loss([np.zeros((2, 3), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(BundleError, match=r"^loss.pte: takes 2 input\(s\) \(prediction, target\), got 1$"):
        loss([np.zeros((2, 3), np.float32)])


def _trained_looking(model: nn.Module) -> nn.Module:
    """Random heads (a fresh kernel model's ridge head is zero) and BatchNorm statistics of a trained model."""
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        elif isinstance(m, nn.Linear):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return model.eval()


# every model, each with another task's outputs; fcn (every task's bundle above) and unet (the per-step bundles
# below) are lowered by the bundle tests
MODEL_TASKS = [(name, ("binary", "multiclass", "regression", "multilabel", "count")[i % 5])
               for i, name in enumerate(m for m in MODEL_NAMES if m not in ("fcn", "unet"))]


@pytest.mark.parametrize("name, task", MODEL_TASKS)
def test_every_model_lowers_to_xnnpack_and_equals_eager_at_every_batch(tmp_path, name, task):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, width=0.25, in_channels=2, length=16, n_outputs=3)
    model = _trained_looking(build_model(cfg))
    graph = model_graph(model, task)
    cases = model_cases(model, cfg)
    program = lower([graph], cases[len(BATCH_SIZES) - 1].inputs, (MODEL_INPUT,), {MODEL_INPUT: {0: ("batch", 64)}},
                    tmp_path / "model.pte", True, "model")
    taken = [c for c in cases if fits(program, c)]
    assert [c.label for c in taken] == [f"batch={n} length=16" for n in BATCH_SIZES] + ["batch=7 length=16 x10 std"]
    from export.thresholds import allowance_for

    rows = verify_graph("model", graph, {"executorch": PteRunner(tmp_path / "model.pte", program)}, taken,
                        TASKS[task].outputs, ATOL, RTOL, TASKS[task].decision,
                        allowance_for(model, TASKS[task].scores))
    assert [r for r in rows if r.problem] == [] and len(rows) == len(taken) * len(TASKS[task].outputs)
    if name not in KERNEL_MODELS:  # kernel models' features are exact comparisons: no spread to ask of them
        assert max(r.max_abs for r in rows if r.output == TASKS[task].outputs[0]) > 0 or task == "count"


@pytest.mark.parametrize("task_of", sorted({task for task, _, _ in LOSS_MODULES}))
def test_every_loss_as_a_pte_program_matches_eager_on_the_grid(tmp_path, task_of):
    failing = {}
    for task, what, loss in (m for m in LOSS_MODULES if m[0] == task_of):
        loss = loss.eval()
        cases = loss_cases(task, ModelConfig(n_outputs=3, length=16))
        program = lower(loss_candidates(loss), cases[len(BATCH_SIZES) - 1].inputs, LOSS_INPUTS,
                        {n: {0: ("batch", 64)} for n in LOSS_INPUTS}, tmp_path / "loss.pte", False, what)
        assert all(fits(program, c) for c in cases)
        rows = verify_graph("loss", loss, {"executorch": PteRunner(tmp_path / "loss.pte", program)}, cases,
                            LOSS_OUTPUTS, ATOL, RTOL)
        assert len(rows) == 2 * len(cases)
        failing[task, what] = [(r.case, r.output, r.problem) for r in rows if r.problem]
    assert failing == {(task, what): [] for task, what, _ in LOSS_MODULES if task == task_of}


def test_per_step_bundles_export_pte_programs_equal_to_eager(step_bundles, tmp_path):
    # fcn (multiclass) and unet (binary, fixed length); tcn's network is lowered by the model test
    for key, sb in ((k, sb) for k, sb in step_bundles.items() if sb.model in ("fcn", "unet")):
        bundle = export_run(sb.run_dir, ExportConfig(fmt="pte"), out=tmp_path / key, **QUIET)
        manifest = Manifest.read(bundle)
        length = manifest.pte.model.inputs[0].shape[2]
        prediction, target = manifest.pte.loss.inputs
        assert (prediction.axes, prediction.dynamic, prediction.shape[2]) == (["batch", "outputs", "length"],
                                                                           [0, 2], length)
        assert target.axes[-1] == "length" and target.dynamic == [0, target.shape.__len__() - 1]
        windows = np.stack([r[:, :length] for r in sb.recordings]).astype(np.float32)
        outputs = PteBundle(bundle).predict(windows)
        for name, expected in zip(manifest.outputs, _eager(sb.run_dir, windows)):
            np.testing.assert_allclose(outputs[name], expected, atol=ATOL, rtol=RTOL, err_msg=f"{key} {name}")


def test_export_refuses_a_pte_that_disagrees_and_verify_runs_its_golden_data(task_bundles, tmp_path, monkeypatch):
    tb = task_bundles["binary"]
    out = tmp_path / "pte"
    result = CliRunner().invoke(main, ["export", str(tb.run_dir), "--format", "pte", "--pte-max-batch", "7",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "lowering the model to ExecuTorch (XNNPACK delegate, batch 1..7, length 16)" in result.output
    assert Manifest.read(out).pte.model.inputs[0].shape[0] == 7
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    golden = [line.split()[:3] for line in result.output.splitlines() if "executorch" in line and "golden" in line]
    assert golden == [["model", "executorch", "logit"], ["model", "executorch", "probability"],
                      ["loss", "executorch", "loss"], ["loss", "executorch", "per_sample_loss"]]

    real = PteRunner.__call__
    monkeypatch.setattr(PteRunner, "__call__", lambda self, inputs: [o + 1e-3 for o in real(self, inputs)])
    with pytest.raises(VerificationError) as err:
        export_run(tb.run_dir, ExportConfig(fmt="pte"), out=tmp_path / "bad", **QUIET)
    assert {r.engine for r in err.value.failures} == {"executorch"}
    assert {r.graph for r in err.value.failures} == {"model", "loss"}
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args, message", [
    (["--pte-max-batch", "0", "--format", "pte"], "Error: --pte-max-batch must be 1 or more; got 0\n"),
    (["--pte-max-batch", "8"], "Error: --pte-max-batch applies to ExecuTorch programs only; add pte to --format\n"),
])
def test_bad_pte_flags_exit_2_with_one_line(task_bundles, tmp_path, args, message):
    result = CliRunner().invoke(main, ["export", str(task_bundles["binary"].run_dir), "--out", str(tmp_path / "b"),
                                       *args])
    assert (result.exit_code, result.output) == (2, message)
    assert not (tmp_path / "b").exists()


def test_without_executorch_the_format_is_refused_with_the_install_line(task_bundles, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("executorch") else real_import(name, *a, **k))
    result = CliRunner().invoke(main, ["export", str(task_bundles["binary"].run_dir), "--format", "pte", "--out",
                                       str(tmp_path / "b")])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == (
        "Error: --format pte needs ExecuTorch: pip install 'pipeline[executorch]' (with torch pinned in the same "
        "command, e.g. pip install torch==2.13.0 'pipeline[executorch]')")
    assert not (tmp_path / "b").exists()
    assert pte_mod.available() is False
