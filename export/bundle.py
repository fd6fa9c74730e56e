"""Turn a training run into a verified, self-describing artifact bundle (written atomically): export every
graph, verify it on the grid (export/grid.py) with each format's engine (export/engines.py), write the golden
data (export/golden.py) and the manifest (export/manifest_writer.py), then swap the folder into place
(export/folder.py). The options are export/options.py's ExportConfig."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from export.engines import engines
from export.exporters import (ExportError, aoti_target, export_aoti, export_onnx, export_pt2, export_torchscript,
                              torch_export)
from export.folder import check_bundle_target, recover, swap_into_place
from export.golden import golden_atol, golden_data, golden_onnx
from export.graphs import loss_candidates, model_graph, torchscript_loss
from export.grid import loss_cases, model_cases
from export.layout import conv2d_layout
from export.manifest_writer import Graphs, build_manifest, onnx_metadata, readme_text
from export.options import FORMAT_NAMES, ExportConfig
from export.pte import export_pte, verify_pte
from export.pte import require as require_executorch
from export.pte_int8 import golden_pte
from export.quantize import Int8Inputs, int8_inputs, quantize_bundle
from export.signing import sign_and_check, signer_key
from export.thresholds import allowance_for
from export.verify import BATCH_SIZES, VerificationError, verify_graph
from pipeline.training.checkpoint import BEST, load_checkpoint
from pipeline.settings.config import ModelConfig
from pipeline.training.run_config import ModelRecord
from pipeline.errors import PipelineError
from pipeline.files import current_umask, remove_stale_temps, temp_prefix
from pipeline.losses import build_loss
from pipeline.models.build import build_model, check_saliency
from pipeline.models.kernels import call_bound
from runtime.bundle import file_sha256 as sha256
from runtime.compare import Row, summary
from runtime.signature import SIGNATURE_FILE
from runtime.manifest import (GOLDEN_FILE, GOLDEN_INT8, GOLDEN_INT8_PTE, GRAPH_FILES, LOSS_INPUTS, LOSS_OUTPUTS, MANIFEST_FILE,
                              MODEL_INPUT, MODEL_INT8, README_FILE, SALIENCY_OUTPUT, SCHEMA_FILE, VERIFICATION_FILE,
                              AotiTarget, DimRange, TorchExport, Verification, schema_text)
from runtime.tasks import TASKS


@dataclass(frozen=True)
class Trained:
    """A run's best weights rebuilt: what they were trained as, and the eager model and loss (eval mode)."""

    record: ModelRecord
    weights: dict  # the checkpoint's state dict
    model: nn.Module
    loss: nn.Module

    @property
    def cfg(self) -> ModelConfig:
        return self.record.model

    @property
    def task(self) -> str:
        return self.record.task


def rebuild(run_dir: Path) -> Trained:
    state = load_checkpoint(Path(run_dir) / BEST)
    record = ModelRecord.from_dict(state)
    model = build_model(record.model)
    model.load_state_dict(state["model"])
    model.eval()
    loss = build_loss(record.loss.name, record.loss.params, record.model.per_step)
    return Trained(record, state["model"], model, loss.eval())


def export_run(run_dir: Path, config: ExportConfig, out: Path | None = None, force: bool = False,
               log=print) -> Path:
    """Export, verify, and move the bundle into place; on any failure nothing is left behind."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "bundle"
    if recover(out):
        log(f"restored {out} (an earlier export was stopped while replacing it)")
    check_bundle_target(out, run_dir, force)
    if config.sign_key is not None:  # a key that cannot sign fails now, not after the export
        signer_key(config.sign_key, config.sign_cert)
    if {"pte", "pte-train"} & set(config.formats):  # so does a missing executorch
        require_executorch()
    run = rebuild(run_dir)
    int8 = int8_inputs(run_dir, run.cfg, config.calibration_data) if config.quantize == "int8" else None
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a bundle is read like any folder the user makes
    try:
        source = {"run_dir": str(run_dir.resolve()), "checkpoint": BEST,
                  "checkpoint_sha256": sha256(run_dir / BEST)}  # so `pipeline verify` can rebuild eager
        rows = _write_bundle(tmp, run, config, source, log, int8)
        if config.sign_key is not None:
            fingerprint = sign_and_check(tmp, config.sign_key, config.sign_cert, config.sign_chain)
            log(f"signed every file into {out / SIGNATURE_FILE} (key {fingerprint[:16]}); hosts check it with the "
                "public key (--public-key)")
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"verified {summary(rows)} (atol {config.atol:g} + rtol {config.rtol:g} x |eager|)")
    return out


def _write_bundle(tmp: Path, run: Trained, config: ExportConfig, source: dict, log=print,
                  int8_data: Int8Inputs | None = None) -> list[Row]:
    """Export and verify every graph into `tmp` and write the bundle's files; the verification rows."""
    cfg, model, loss, task = run.cfg, run.model, run.loss, run.task
    spec = TASKS[task]
    if config.saliency:
        check_saliency(model, cfg.name)
    graph = model_graph(model, task, config.saliency)
    outputs = spec.outputs + ((SALIENCY_OUTPUT,) if config.saliency else ())
    model_grid, loss_grid = model_cases(model, cfg), loss_cases(task, cfg)
    allowance = allowance_for(model, spec.scores)  # kernel models: near-threshold comparisons (export.thresholds)
    x_axes = {0: "batch"} if cfg.fixed_length else {0: "batch", 2: "length"}
    meta = onnx_metadata(run.record, config)
    want = config.formats
    files: dict[str, dict[str, Path]] = {"model": {}, "loss": {}}
    methods, exported = {}, None
    example_x = model_grid[len(BATCH_SIZES) - 1].inputs  # batch 64: examples >= 2 so no axis is specialised
    example_loss = loss_grid[len(BATCH_SIZES) - 1].inputs
    loss_what = f"loss '{run.record.loss.name}'"
    model_what = f"{cfg.name} model" if cfg.ensemble == 1 else \
        f"{cfg.name} ensemble ({cfg.ensemble} members averaged in one graph)"
    log(f"exporting the {model_what} and the {run.record.loss.name} loss of {task} to "
        f"{' and '.join(FORMAT_NAMES[f] for f in want)}; each graph is then checked against eager PyTorch on "
        f"{len(model_grid)} model and {len(loss_grid)} loss input sets")
    rows, layout = [], None
    path = lambda graph_name, fmt: tmp / GRAPH_FILES[graph_name, fmt]  # noqa: E731
    if "onnx" in want:
        verify_model = lambda paths: verify_graph(  # noqa: E731
            "model", graph, engines(paths, (MODEL_INPUT,)), model_grid, outputs, config.atol, config.rtol,
            spec.decision, allowance)
        rows, layout = _export_model_onnx(graph, model, task, example_x, path("model", "onnx"), outputs,
                                          {MODEL_INPUT: x_axes}, config.opset, meta, verify_model, config.saliency)
        files["loss"]["onnx"] = export_loss_onnx(loss, example_loss, path("loss", "onnx"), config.opset, meta,
                                                 loss_what)
        files["model"]["onnx"] = path("model", "onnx")
    if "torchscript" in want:
        files["model"]["torchscript"], methods["model"] = export_torchscript(graph, example_x,
                                                                             path("model", "torchscript"), "model")
        files["loss"]["torchscript"], methods["loss"] = export_torchscript(
            torchscript_loss(loss), example_loss, path("loss", "torchscript"), loss_what)
    if "pt2" in want or "aoti" in want:
        exported = _export_programs(graph, loss, example_x, example_loss, x_axes, want, path, config.device,
                                    loss_what, files, log)
    pte = None
    if "pte" in want:
        fast = conv2d_layout(model)
        candidates = ([model_graph(fast, task, config.saliency)] if fast is not None else []) + [graph]
        pte = export_pte(candidates, loss_candidates(loss), example_x, example_loss, loss_axes(example_loss), cfg.length,
                         config.pte_max_batch, {g: path(g, "pte") for g in ("model", "loss")}, loss_what, log)
        rows += verify_pte(tmp, pte, graph, loss, model_grid, loss_grid, outputs, LOSS_OUTPUTS, config.atol,
                           config.rtol, spec.decision, allowance)
        if int8_data is not None:
            from export.pte_int8 import export_int8_pte

            model_int8, int8_pte = export_int8_pte(candidates, example_x, int8_data, pte.model, tmp, task,
                                                   config.max_metric_drop, log)
            pte = dataclasses.replace(pte, model_int8=model_int8, int8=int8_pte)
    pte_train = None
    if "pte-train" in want:
        from export.pte_train import export_and_verify

        n = config.finetune_batch
        x = model_grid[len(BATCH_SIZES) - 1].inputs[0]  # series at the training length, batch 64
        x = x.repeat((n + len(x) - 1) // len(x), 1, 1)[:n]
        target = loss_grid[len(BATCH_SIZES) - 1].inputs[1]
        target = target.repeat((n + len(target) - 1) // len(target), *([1] * (target.dim() - 1)))[:n]
        pte_train, train_rows = export_and_verify(model, loss, x, target, config.finetune, tmp, config.atol,
                                                  config.rtol, log)
        rows += train_rows
    others = {fmt: p for fmt, p in files["model"].items() if fmt not in ("onnx", "pte")}
    rows += verify_graph("model", graph, engines(others, (MODEL_INPUT,), config.device), model_grid, outputs,
                         config.atol, config.rtol, spec.decision, allowance)
    rows += verify_graph("loss", loss, engines(files["loss"], LOSS_INPUTS, config.device), loss_grid, LOSS_OUTPUTS,
                         config.atol, config.rtol)
    verification = _verification(tmp, rows, config)
    golden = {"model": golden_data(graph, model_grid, (MODEL_INPUT,), outputs),
              "loss": golden_data(loss, loss_grid, LOSS_INPUTS, LOSS_OUTPUTS),
              "atol": golden_atol(model, model_grid, config.atol), "rtol": config.rtol}
    int8 = None
    if int8_data is not None and "onnx" in want:
        int8 = quantize_bundle(tmp, int8_data, task, config.max_metric_drop, log)
        golden[GOLDEN_INT8] = golden_onnx(tmp / MODEL_INT8, golden["model"], outputs)
    if pte is not None and pte.model_int8 is not None:
        golden[GOLDEN_INT8_PTE] = golden_pte(tmp, pte.model_int8, golden["model"], outputs)
    (tmp / GOLDEN_FILE).write_text(json.dumps(golden) + "\n")
    (tmp / README_FILE).write_text(readme_text(run.record, want, config.saliency))
    (tmp / SCHEMA_FILE).write_text(schema_text())
    graphs = Graphs(methods, verification, layout, exported, int8, call_bound(model), pte, pte_train)
    manifest = build_manifest(tmp, run.record, run.weights, config, graphs, source)
    (tmp / MANIFEST_FILE).write_text(manifest.to_json())
    return rows


def _verification(tmp: Path, rows: list[Row], config: ExportConfig) -> Verification:
    """Every row passed (else a VerificationError listing the failures): their summary, and verification.json."""
    failures = [r for r in rows if r.problem]
    if failures:
        raise VerificationError(failures, config.atol, config.rtol)
    verification = Verification(atol=config.atol, rtol=config.rtol, passed=True, checks=len(rows),
                                max_abs=max((r.max_abs or 0.0) for r in rows),
                                max_rel=max((r.max_rel or 0.0) for r in rows))
    (tmp / VERIFICATION_FILE).write_text(json.dumps({**dataclasses.asdict(verification),
                                                     "rows": [r.to_dict() for r in rows]}, indent=1)
                                         + "\n")
    return verification


def _export_programs(graph, loss, example_x: tuple, example_loss: tuple, x_axes: dict, want: tuple[str, ...],
                     path, device: str, loss_what: str, files: dict, log=print) -> TorchExport:
    """model.pt2/loss.pt2 and/or the AOTInductor packages of both graphs (see export_program_files)."""
    dims = {}
    for name, candidates, example, axes, what in (
            ("model", [graph], example_x, {MODEL_INPUT: x_axes}, "model"),
            ("loss", loss_candidates(loss), example_loss, loss_axes(example_loss), loss_what)):
        paths = {fmt: path(name, fmt) for fmt in ("pt2", "aoti") if fmt in want}
        written, dims[name] = export_program_files(candidates, example, axes, paths, device, what, log)
        files[name].update(written)
    return TorchExport(dims={g: {d: DimRange(lo, hi) for d, (lo, hi) in r.items()} for g, r in dims.items()},
                       aoti=AotiTarget(**aoti_target(device)) if "aoti" in want else None)


def export_program_files(candidates: list, example: tuple, axes: dict[str, dict[int, str]], paths: dict[str, Path],
                         device: str = "cpu", what: str = "graph", log=print) -> tuple[dict[str, Path], dict]:
    """One graph from one torch.export: its .pt2 program (paths["pt2"]) and/or its AOTInductor package
    (paths["aoti"], compiled for `device`; the program moves there first). ({format: path}, dim ranges)."""
    names = tuple(axes)
    program, dims = _first_export(candidates, example, names, axes, what)
    written = {}
    if "pt2" in paths:
        written["pt2"] = export_pt2(program, paths["pt2"])
    if "aoti" in paths:
        if device != "cpu":
            program, _ = _first_export([copy.deepcopy(c).to(device) for c in candidates],
                                       tuple(t.to(device) for t in example), names, axes, what)
        log(f"compiling the {what} with AOTInductor for {device}")
        written["aoti"] = export_aoti(program, paths["aoti"], what)
    return written, dims


def _first_export(candidates: list, example: tuple, names: tuple[str, ...], axes: dict, what: str):
    """torch.export of the first candidate module that captures (see loss_candidates)."""
    return _first_that_exports(candidates, lambda c: torch_export(c, example, names, axes, what))


def _first_that_exports(candidates: list, attempt):
    """attempt(candidate) for each candidate in turn: the first result, else the first candidate's ExportError
    (the plain module's error says most about the user's code)."""
    first_error = None
    for candidate in candidates:
        try:
            return attempt(candidate)
        except ExportError as exc:
            first_error = first_error or exc
    raise first_error


def loss_axes(example: tuple) -> dict[str, dict[int, str]]:
    """The loss graph's dynamic axes: the batch, and for per-step scores (N, K, W) also the steps (the target's
    last axis: (N, W) or (N, K, W))."""
    prediction, target = example
    if prediction.dim() != 3:
        return {name: {0: "batch"} for name in LOSS_INPUTS}
    return {LOSS_INPUTS[0]: {0: "batch", 2: "length"}, LOSS_INPUTS[1]: {0: "batch", target.dim() - 1: "length"}}


def export_loss_onnx(loss, example: tuple, path: Path, opset: int, meta: dict, what: str) -> Path:
    """The loss graph with a dynamic batch: the first candidate (see loss_candidates) that exports."""
    axes = loss_axes(example)
    return _first_that_exports(loss_candidates(loss), lambda c: export_onnx(
        c, example, path, LOSS_INPUTS, LOSS_OUTPUTS, axes, opset, meta, what))


def _export_model_onnx(graph, model, task: str, example_x: tuple, path: Path, outputs: tuple[str, ...],
                       axes: dict, opset: int, meta: dict, verify_model,
                       saliency: bool = False) -> tuple[list[Row], str]:
    """The model graph in the 2D layout onnxruntime runs fastest, or the plain 1D graph when that
    layout does not exist for the model or does not verify; returns the verification rows and the layout."""
    fast = conv2d_layout(model)
    if fast is not None:
        export_onnx(model_graph(fast, task, saliency), example_x, path, (MODEL_INPUT,), outputs, axes, opset, meta,
                    "model")
        rows = verify_model({"onnx": path})
        if not any(r.problem for r in rows):
            return rows, "conv2d"
    export_onnx(graph, example_x, path, (MODEL_INPUT,), outputs, axes, opset, meta, "model")
    return verify_model({"onnx": path}), "conv1d"
