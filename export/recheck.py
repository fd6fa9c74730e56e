"""Re-check a bundle's graphs against eager PyTorch rebuilt from the run's checkpoint (`pipeline verify`)."""

from __future__ import annotations

from pathlib import Path

from export.bundle import engines, loss_cases, model_cases, rebuild, sha256
from export.graphs import DECISIONS, LOSS_INPUTS, LOSS_OUTPUTS, OUTPUT_NAMES, model_graph
from export.verify import verify_graph
from pipeline.errors import PipelineError


def find_checkpoint(bundle_dir: Path, manifest: dict, run_dir: Path | None) -> Path | None:
    """The run folder the bundle came from: --run, else the one recorded at export, else the bundle's parent."""
    checkpoint = manifest.get("source", {}).get("checkpoint", "best.pt")
    candidates = [run_dir] if run_dir is not None else [manifest.get("source", {}).get("run_dir"),
                                                        Path(bundle_dir).resolve().parent]
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / checkpoint).is_file():
            return Path(candidate)
    if run_dir is not None:
        raise PipelineError(f"--run {run_dir}: has no {checkpoint}; pass the run folder the bundle was exported from")
    return None


def recheck(bundle_dir: Path, manifest: dict, run_dir: Path, atol: float, rtol: float) -> list[dict]:
    """Rows of the export verification grid, run again on the bundle's files against eager PyTorch."""
    source = manifest.get("source", {})
    checkpoint = run_dir / source.get("checkpoint", "best.pt")
    if source.get("checkpoint_sha256") and sha256(checkpoint) != source["checkpoint_sha256"]:
        raise PipelineError(f"{checkpoint}: is not the checkpoint this bundle was exported from (sha256 differs; "
                            "the run was trained further?); re-export the run, or pass --run with the right run")
    state, cfg, model, loss = rebuild(run_dir)
    task = manifest["task"]
    files = {"model": {}, "loss": {}}
    for graph in files:
        for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
            if f"{graph}{suffix}" in manifest["files"]:
                files[graph][fmt] = Path(bundle_dir) / f"{graph}{suffix}"
    rows = verify_graph("model", model_graph(model, task), engines(files["model"], ("x",)),
                        model_cases(model, cfg), OUTPUT_NAMES[task], atol, rtol, DECISIONS.get(task))
    rows += verify_graph("loss", loss, engines(files["loss"], LOSS_INPUTS), loss_cases(task, cfg), LOSS_OUTPUTS,
                         atol, rtol)
    return rows
