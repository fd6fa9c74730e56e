"""torch.export programs (.pt2) and AOTInductor packages: format lists, every loss on the grid, the bundle,
`pipeline verify`, the refusal of a graph that disagrees, and custom losses torch.export cannot capture."""

from __future__ import annotations

import json
import platform
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import export.bundle as bundle_mod
from export.bundle import ExportConfig, export_program_files
from export.grid import loss_cases
from export.graphs import as_tuple, loss_candidates, model_graph
from export.verify import BATCH_SIZES, verify_graph
from pipeline.cli import main
from pipeline.settings.config import FIXED_LENGTH_MODELS, MODEL_NAMES, DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.losses import CustomLoss, build_loss
from pipeline.models.build import build_model
from pipeline.training.train import train
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS, MODEL_INPUT
from runtime.tasks import TASKS

QUIET = dict(log=lambda _: None)
ATOL = RTOL = 1e-5
# the non-default parameters a user may train with, so the graphs must carry them
PARAMS = {"huber": {"huber_delta": 0.5}, "smooth_l1": {"beta": 0.3}, "bce_with_logits": {"pos_weight": [2.5, 1.0, 0.5]},
          "cross_entropy": {"class_weights": [0.5, 2.0, 1.0], "label_smoothing": 0.1},
          "nll": {"class_weights": [1.0, 3.0, 0.5]}, "multi_margin": {"class_weights": [1.0, 2.0, 1.0]}}
TASK_LOSSES = [(task, spec.name) for task, t in TASKS.items() for spec in t.losses]
PT2_FILES = ["README.txt", "golden.json", "loss.aoti.pt2", "loss.pt2", "manifest.json", "manifest.schema.json",
             "model.aoti.pt2", "model.pt2", "verification.json"]


class PowerLoss(nn.Module):
    """A user loss vmap batches (per-sample losses in one batched graph)."""

    def forward(self, prediction, target):
        return 2.0 * torch.mean(torch.abs(prediction - target) ** 1.5)


class UserCrossEntropy(nn.Module):
    """A user loss on F.cross_entropy, whose vmap rule fixes the batch: exported through the scan."""

    def forward(self, prediction, target):
        return nn.functional.cross_entropy(prediction, target)


LOSS_MODULES = [(task, name, build_loss(name, PARAMS.get(name, {}))) for task, name in TASK_LOSSES]
LOSS_MODULES += [("regression", "custom PowerLoss", CustomLoss(PowerLoss(), "t:PowerLoss")),
                 ("multiclass", "custom UserCrossEntropy", CustomLoss(UserCrossEntropy(), "t:UserCrossEntropy"))]


def _loss_axes() -> dict:
    return {name: {0: "batch"} for name in LOSS_INPUTS}


@pytest.mark.parametrize("fmt, formats", [
    ("all", ("onnx", "torchscript")), ("onnx,aoti", ("onnx", "aoti")), (" aoti , onnx ", ("onnx", "aoti")),
    ("all,pt2", ("onnx", "torchscript", "pt2")), ("pt2,pt2", ("pt2",)), ("torchscript", ("torchscript",))])
def test_format_lists(fmt, formats):
    assert ExportConfig(fmt=fmt).formats == formats


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx,pt3"], "Error: --format 'onnx,pt3': 'pt3' is not a format; choose from onnx, torchscript, "
                               "pt2, aoti, pte, pte-train, all, or several separated by commas (e.g. onnx,aoti)\n"),
    (["--format", "onnx", "--device", "cuda"], "Error: --device cuda applies to AOTInductor packages only; add aoti "
                                               "to --format\n"),
])
def test_bad_format_flags_exit_2_with_one_line_and_write_nothing(tmp_path, npz_file, args, message):
    run_dir = _run(tmp_path, npz_file, "regression", "mse")
    result = CliRunner().invoke(main, ["export", str(run_dir), *args])
    assert (result.exit_code, result.output) == (2, message)
    assert not (run_dir / "bundle").exists()


def test_cuda_packages_without_cuda_are_refused(tmp_path, npz_file, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = _run(tmp_path, npz_file, "regression", "mse")
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "aoti", "--device", "cuda"])
    assert (result.exit_code, result.output) == (
        2, "Error: --device cuda was asked for but CUDA is not available here; use --device cpu\n")
    assert not (run_dir / "bundle").exists()


@pytest.mark.parametrize("task, what, loss", LOSS_MODULES, ids=[f"{t}-{w}" for t, w, _ in LOSS_MODULES])
def test_every_loss_as_a_pt2_program_matches_eager_on_the_grid(tmp_path, task, what, loss):
    loss = loss.eval()
    cases = loss_cases(task, ModelConfig(n_outputs=3, length=16))
    files, dims = export_program_files(loss_candidates(loss), cases[len(BATCH_SIZES) - 1].inputs, _loss_axes(),
                                       {"pt2": tmp_path / "loss.pt2"}, **QUIET)
    assert dims == {"batch": (1, None)}
    rows = verify_graph("loss", loss, bundle_mod.engines(files, LOSS_INPUTS), cases, LOSS_OUTPUTS, ATOL, RTOL)
    assert [r for r in rows if r.problem] == []
    assert {r.case for r in rows} == {c.label for c in cases} and {r.engine for r in rows} == {"torch.export"}


VARIABLE_LENGTH_MODELS = [m for m in MODEL_NAMES if m not in FIXED_LENGTH_MODELS]


@pytest.mark.parametrize("name, channels, ensemble", [(m, c, 1) for m in VARIABLE_LENGTH_MODELS for c in (1, 3)]
                         + [("inception", 1, 2), ("lite", 2, 2)])
def test_every_variable_length_model_is_a_pt2_program_with_dynamic_batch_and_length(tmp_path, name, channels,
                                                                                    ensemble):
    # inception's max-pool branch once fixed the length under torch.export (pt2/aoti export and bench failed)
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, width=0.25, in_channels=channels, n_outputs=3, ensemble=ensemble,
                      combine="softmax" if ensemble > 1 else "identity")
    model = build_model(cfg)
    for m in model.modules():  # trained-looking BatchNorm statistics, not the identity of a fresh layer
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    graph = model_graph(model, "multiclass")
    example = (torch.randn(2, channels, 50),)
    files, dims = export_program_files([graph], example, {MODEL_INPUT: {0: "batch", 2: "length"}},
                                       {"pt2": tmp_path / "model.pt2"}, what="model", **QUIET)
    assert dims == {"batch": (1, None), "length": (1, None)}
    program = torch.export.load(str(files["pt2"])).module()
    g = torch.Generator().manual_seed(1)
    for batch, length in [(1, 1), (3, 2), (1, 9), (4, 41), (2, 50), (5, 129)]:  # shorter and longer than kernels
        x = torch.randn(batch, channels, length, generator=g) * 3
        with torch.inference_mode():
            expected, actual = as_tuple(graph(x)), as_tuple(program(x))
        assert len(actual) == len(expected) == len(TASKS["multiclass"].outputs)
        for e, a in zip(expected, actual):
            assert a.shape == e.shape and e.shape[0] == batch
            np.testing.assert_allclose(a.numpy(), e.numpy(), atol=ATOL, rtol=RTOL)


class _Together(nn.Module):
    """Several losses of one task in one graph (their outputs one after another): one AOTInductor compile (a C++
    build each, ~8 s) for all of them."""

    def __init__(self, losses: list[nn.Module]):
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, prediction, target):
        return tuple(out for loss in self.losses for out in loss(prediction, target))


@pytest.mark.slow  # one AOTInductor compile per task for its built-in losses, one per custom loss
@pytest.mark.parametrize("task_of", sorted({task for task, _, _ in LOSS_MODULES}))
def test_every_loss_compiled_by_aotinductor_matches_eager_on_the_grid(tmp_path, task_of):
    mine = [(what, loss.eval()) for task, what, loss in LOSS_MODULES if task == task_of]
    groups = [[(w, l) for w, l in mine if not w.startswith("custom")]] + [[m] for m in mine if m[0].startswith("custom")]
    cases = loss_cases(task_of, ModelConfig(n_outputs=3, length=16))
    failing = {}
    for i, group in enumerate(groups):
        together = _Together([loss for _, loss in group]).eval()
        candidates = [together] if len(group) > 1 else loss_candidates(group[0][1])
        names = tuple(f"{what}:{out}" for what, _ in group for out in LOSS_OUTPUTS)
        files, _ = export_program_files(candidates, cases[len(BATCH_SIZES) - 1].inputs, _loss_axes(),
                                        {"aoti": tmp_path / f"{task_of}-{i}.aoti.pt2"}, **QUIET)
        eager = together if len(group) > 1 else group[0][1]  # each loss's eager module
        rows = verify_graph("loss", eager, bundle_mod.engines(files, LOSS_INPUTS), cases, names, ATOL, RTOL)
        assert {r.engine for r in rows} == {"aotinductor"} and len(rows) == len(names) * len(cases)
        assert [r.problem for r in rows if r.output == "*"] == []  # a package that failed to run at all
        for what, _ in group:
            failing[task_of, what] = [(r.case, r.output, r.problem) for r in rows
                                      if r.problem and r.output.startswith(what + ":")]
    assert failing == {(task_of, what): [] for what, _ in mine}


def test_cross_entropy_program_carries_the_weights_and_smoothing(tmp_path):
    """Against torch.nn's own CrossEntropyLoss, not against our module: the parameters are in the graph."""
    loss = build_loss("cross_entropy", PARAMS["cross_entropy"]).eval()
    g = torch.Generator().manual_seed(5)
    p, t = torch.randn(64, 3, generator=g) * 3, torch.randint(0, 3, (64,), generator=g)
    files, _ = export_program_files(loss_candidates(loss), (p, t), _loss_axes(), {"pt2": tmp_path / "l.pt2"}, **QUIET)
    program = torch.export.load(str(files["pt2"])).module()
    reference = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0]), label_smoothing=0.1)
    for n in (1, 9):
        value, per_sample = program(p[:n], t[:n])
        torch.testing.assert_close(value, reference(p[:n], t[:n]), atol=ATOL, rtol=RTOL)
        assert per_sample.shape == (n,)


def _run(tmp_path, npz_file, task, loss, name="run"):
    return train(RunSettings(DataConfig(data=str(npz_file(task, n=40, length=16)), task=task, val_split=0.0),
                 LossConfig(name=loss), ModelConfig(name="fcn", width=0.125),
                 TrainConfig(epochs=1, progress=False, seed=1)), out=tmp_path / name, **QUIET).run_dir


def test_a_pt2_program_that_disagrees_fails_the_export_with_every_failing_row(tmp_path, npz_file, monkeypatch):
    run_dir = _run(tmp_path, npz_file, "multiclass", "cross_entropy")
    real = bundle_mod.export_pt2

    def perturbed(program, path):
        if "model.net.head.bias" in program.state_dict:  # a copy: the eager module keeps its own bias
            bias = program.state_dict["model.net.head.bias"]
            program.state_dict["model.net.head.bias"] = nn.Parameter(bias.detach() + torch.tensor([0.5, 0.0, -0.5]))
        return real(program, path)

    monkeypatch.setattr(bundle_mod, "export_pt2", perturbed)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "onnx,pt2"])
    assert result.exit_code == 1, result.output
    failing = [line.split() for line in result.output.splitlines() if line.startswith("model  torch.export")]
    for output in ("logits", "probabilities"):
        assert {" ".join(r[3:5]) for r in failing if r[2] == output} == {
            f"batch={n} length={L}" for n in BATCH_SIZES for L in (8, 16, 32)} | {"batch=7 length=16"}
    assert not any(line.startswith(("model  onnxruntime", "loss ")) for line in result.output.splitlines())
    assert not (run_dir / "bundle").exists()


def test_a_custom_loss_torch_export_cannot_capture_names_its_line(tmp_path, npz_file, monkeypatch):
    (tmp_path / "valuebranch.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class ValueBranch(nn.Module):
            def forward(self, prediction, target):
                if float(prediction.detach().sum()) > 0:  # a branch on a value: no graph holds it
                    return torch.mean((prediction - target) ** 2)
                return torch.mean(torch.abs(prediction - target))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _run(tmp_path, npz_file, "regression", "valuebranch:ValueBranch")  # a module name no other test uses
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "pt2"])
    assert result.exit_code == 1, result.output
    error = result.output.splitlines()[1]
    assert error.startswith("Error: loss 'valuebranch:ValueBranch' could not be captured by torch.export: Could "
                            "not guard on data-dependent expression ")
    assert error.endswith("(at valuebranch.py line 6: if float(prediction.detach().sum()) > 0:); ONNX or TorchScript "
                          "may still work (--format onnx,torchscript)")
    assert len(result.output.splitlines()) == 2 and not (run_dir / "bundle").exists()
    # TorchScript traces it (the branch taken at export is recorded): the message's advice holds
    assert CliRunner().invoke(main, ["export", str(run_dir), "--format", "torchscript"]).exit_code == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_aoti_packages_verify_and_record_their_device(tmp_path, npz_file):
    run_dir = _run(tmp_path, npz_file, "multiclass", "cross_entropy")
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "aoti", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    assert manifest["torch_export"]["aoti"]["device"] == "cuda"
    rows = json.loads((run_dir / "bundle" / "verification.json").read_text())["rows"]
    assert {r["engine"] for r in rows} == {"aotinductor"} and all(r["problem"] is None for r in rows)
    verified = CliRunner().invoke(main, ["verify", str(run_dir / "bundle")])
    assert verified.exit_code == 0, verified.output


# --- the session's AOTInductor bundles (tests/conftest.py aoti_bundles) ---------------------------------

@pytest.mark.slow  # AOTInductor compiles (shared session fixture)
@pytest.mark.parametrize("task", ("multiclass", "regression"))
def test_aoti_bundle_files_manifest_and_verification(aoti_bundles, task):
    tb = aoti_bundles[task]
    assert sorted(p.name for p in tb.bundle.iterdir()) == PT2_FILES
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    free = {"min": 1, "max": None}
    assert manifest["torch_export"]["dims"] == {"model": {"batch": free, "length": free}, "loss": {"batch": free}}
    target = manifest["torch_export"]["aoti"]
    assert (target["device"], target["machine"], target["torch"]) == ("cpu", platform.machine(), torch.__version__)
    assert target["compiler"].split()[0] in ("g++", "c++", "clang", "clang++") or "g++" in target["compiler"]
    verification = json.loads((tb.bundle / "verification.json").read_text())
    rows = verification["rows"]
    assert verification["passed"] and [r for r in rows if r["problem"]] == []
    assert {(r["graph"], r["engine"]) for r in rows} == {(g, e) for g in ("model", "loss")
                                                         for e in ("torch.export", "aotinductor")}
    assert {r["case"] for r in rows if r["graph"] == "model"} == {
        f"batch={n} length={L}" for n in BATCH_SIZES for L in (8, 16, 32)} | {"batch=7 length=16 x10 std"}
    assert len(rows) == 2 * (13 * len(TASKS[task].outputs) + 7 * 2)


@pytest.mark.slow  # AOTInductor compiles (shared session fixture)
def test_aoti_package_equals_eager_at_a_shape_outside_the_grid(aoti_bundles):
    from torch._inductor import aoti_load_package

    from export.bundle import rebuild

    tb = aoti_bundles["multiclass"]
    run = rebuild(tb.run_dir)
    cfg, model = run.cfg, run.model
    x = torch.randn(5, cfg.in_channels, 41, generator=torch.Generator().manual_seed(3)) * 3
    with torch.inference_mode():
        expected = as_tuple(model_graph(model, "multiclass")(x))
        actual = as_tuple(aoti_load_package(str(tb.bundle / "model.aoti.pt2"))(x))
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a.numpy(), e.numpy(), atol=ATOL, rtol=RTOL)


@pytest.mark.slow  # AOTInductor compiles (shared session fixture)
def test_verify_runs_the_golden_data_through_pt2_and_aoti(aoti_bundles):
    tb = aoti_bundles["regression"]
    result = CliRunner().invoke(main, ["verify", str(tb.bundle)])
    assert result.exit_code == 0, result.output
    golden = [line.split() for line in result.output.splitlines() if line.startswith(("model ", "loss "))]
    assert sorted((r[0], r[1], r[2]) for r in golden) == sorted(
        (g, e, o) for e in ("torch.export", "aotinductor")
        for g, outputs in (("model", TASKS["regression"].outputs), ("loss", LOSS_OUTPUTS)) for o in outputs)
    assert all(r[-1] == "ok" for r in golden)
    assert result.output.splitlines()[-1] == "verified"
    assert f"eager re-check against {tb.run_dir}" in result.output


@pytest.mark.slow  # an AOTInductor compile per kernel model
@pytest.mark.parametrize("name", ["minirocket", "hydra", "multirocket-hydra"])
def test_kernel_models_export_as_pt2_and_aoti_programs_with_dynamic_batch_verified_at_their_thresholds(
        tmp_path, npz_file, name):
    from export.bundle import ExportConfig, export_run

    run_dir = train(RunSettings(DataConfig(data=str(npz_file("multiclass", n=30, length=20)), task="multiclass"),
                    LossConfig(), ModelConfig(name=name, width=0.1), TrainConfig(epochs=1, progress=False, seed=1)),
                    out=tmp_path / "run", **QUIET).run_dir
    bundle = export_run(run_dir, ExportConfig(fmt="pt2,aoti"), **QUIET)
    verification = json.loads((bundle / "verification.json").read_text())
    model_rows = [r for r in verification["rows"] if r["graph"] == "model"]
    assert {r["engine"] for r in model_rows} == {"torch.export", "aotinductor"}
    assert verification["passed"] and all("near_threshold" in r for r in model_rows)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["input"]["length"]["fixed"] == 20  # fixed to the training length, any batch
