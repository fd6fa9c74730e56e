"""Re-check a bundle's graphs against eager PyTorch rebuilt from the run's checkpoint (`pipeline verify`)."""

from __future__ import annotations

from pathlib import Path

import torch

from export.bundle import rebuild, sha256
from export.engines import engines
from export.grid import loss_cases, model_cases
from export.graphs import model_graph
from export.thresholds import allowance_for
from export.verify import verify_graph
from pipeline.errors import PipelineError
from runtime.golden import check_layout, golden_rows, int8_rows, read_golden
from runtime.manifest import GOLDEN_FILE, GOLDEN_INT8_PTE, GRAPH_FILES, LOSS_INPUTS, LOSS_OUTPUTS, MODEL_INPUT, Manifest
from runtime.tasks import TASKS


def find_checkpoint(bundle_dir: Path, manifest: Manifest, run_dir: Path | None) -> Path | None:
    """The run folder the bundle came from: --run, else the one recorded at export, else the bundle's parent."""
    checkpoint = manifest.source.checkpoint
    candidates = [run_dir] if run_dir is not None else [manifest.source.run_dir, Path(bundle_dir).resolve().parent]
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / checkpoint).is_file():
            return Path(candidate)
    if run_dir is not None:
        raise PipelineError(f"--run {run_dir}: has no {checkpoint}; pass the run folder the bundle was exported from")
    return None


def recheck(bundle_dir: Path, manifest: Manifest, run_dir: Path, atol: float, rtol: float) -> list[dict]:
    """Rows of the export verification grid, run again on the bundle's files against eager PyTorch."""
    checkpoint = run_dir / manifest.source.checkpoint
    if sha256(checkpoint) != manifest.source.checkpoint_sha256:
        raise PipelineError(f"{checkpoint}: is not the checkpoint this bundle was exported from (sha256 differs; "
                            "the run was trained further?); re-export the run, or pass --run with the right run")
    run = rebuild(run_dir)
    cfg, model, loss, task = run.cfg, run.model, run.loss, manifest.task
    files, device = bundle_files(bundle_dir, manifest), aoti_device(manifest)
    rows = verify_graph("model", model_graph(model, task), engines(files["model"], (MODEL_INPUT,), device),
                        model_cases(model, cfg), TASKS[task].outputs, atol, rtol, TASKS[task].decision,
                        allowance_for(model, TASKS[task].scores))
    rows += verify_graph("loss", loss, engines(files["loss"], LOSS_INPUTS, device), loss_cases(task, cfg),
                         LOSS_OUTPUTS, atol, rtol)
    if manifest.pte is not None:
        from export.pte import verify_pte

        rows += verify_pte(bundle_dir, manifest.pte, model_graph(model, task), loss, model_cases(model, cfg),
                           loss_cases(task, cfg), TASKS[task].outputs, LOSS_OUTPUTS, atol, rtol, TASKS[task].decision,
                           allowance_for(model, TASKS[task].scores))
    return rows


def bundle_files(bundle_dir: Path, manifest: Manifest) -> dict[str, dict[str, Path]]:
    """{'model': {format: path}, 'loss': {...}} for the graph files the manifest lists."""
    files: dict[str, dict[str, Path]] = {"model": {}, "loss": {}}
    for (graph, fmt), name in GRAPH_FILES.items():
        if manifest.has(name):
            files[graph][fmt] = Path(bundle_dir) / name
    return files


def aoti_device(manifest: Manifest) -> str:
    """The device the bundle's AOTInductor packages were compiled for ('cpu' when it has none)."""
    exported = manifest.torch_export
    return exported.aoti.device if exported is not None and exported.aoti is not None else "cpu"


def torch_golden(bundle_dir: Path, manifest: Manifest, atol: float | None, rtol: float | None) -> list[dict]:
    """The golden inputs through the bundle's torch graphs (TorchScript, torch.export, AOTInductor), as
    libtorch or Python with torch would run them."""
    golden = check_layout(read_golden(bundle_dir), manifest, Path(bundle_dir) / GOLDEN_FILE)
    rows = []
    for graph, paths in bundle_files(bundle_dir, manifest).items():
        names = (MODEL_INPUT,) if graph == "model" else LOSS_INPUTS
        torch_paths = {fmt: p for fmt, p in paths.items() if fmt != "onnx"}
        for engine, run in engines(torch_paths, names, aoti_device(manifest)).items():
            rows += golden_rows(golden, graph, engine,
                                lambda feeds, run=run, names=names: run([torch.from_numpy(feeds[n]) for n in names]),
                                atol, rtol)
    if manifest.pte is not None:  # ExecuTorch runs the same golden inputs (they fit its shapes)
        from export.pte import PteRunner

        for graph, program, names in (("model", manifest.pte.model, (MODEL_INPUT,)),
                                      ("loss", manifest.pte.loss, LOSS_INPUTS)):
            run = PteRunner(Path(bundle_dir) / program.file, program)
            rows += golden_rows(golden, graph, "executorch",
                                lambda feeds, run=run, names=names: run([feeds[n] for n in names]), atol, rtol)
        if manifest.pte.model_int8 is not None:  # model.int8.pte against its own outputs, at its tolerance
            run = PteRunner(Path(bundle_dir) / manifest.pte.model_int8.file, manifest.pte.model_int8)
            rows += int8_rows(golden, manifest.pte.int8, lambda feeds: run([feeds[MODEL_INPUT]]), GOLDEN_INT8_PTE,
                              "executorch")
    return rows
