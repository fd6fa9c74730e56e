"""What the saliency output costs: the runtime's model graph exported with and without `--saliency`, timed side
by side in the same rounds at batch 256 (the map is one MatMul of the head's weights with the last feature maps
and a scale per map, beside the pooling the graph does anyway)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.bench import inference

SALIENCY_BATCH = 256


def saliency_rows(run_dir: Path, bundle: Path, threads: int, rounds: int, calls: int, work: Path, log) -> list[dict]:
    """Throughput of the two onnxruntime sessions (ratio: without over with); none for a model without maps."""
    from export.bundle import ExportConfig, export_run, rebuild
    from pipeline.models.build import has_maps

    run = rebuild(run_dir)
    if not has_maps(run.model.net):
        return []
    with_maps = export_run(run_dir, ExportConfig(fmt="onnx", saliency=True), out=work / "bundle-saliency",
                           force=True, log=lambda _: None)
    engines = [inference.Engine(name, engine.run, engine.prepare, note=note) for name, engine, note in (
        ("runtime session.run", inference.runtime_engines(bundle, threads, torch.device("cpu"))[1],
         "model graph as exported by default"),
        ("runtime session.run --saliency", inference.runtime_engines(with_maps, threads, torch.device("cpu"))[1],
         "the same graph with the saliency output"))]
    cfg = run.cfg
    x = np.random.default_rng(0).normal(size=(SALIENCY_BATCH, cfg.in_channels, cfg.length)).astype(np.float32)
    log(f"saliency: the model graph with and without the saliency output, batch {SALIENCY_BATCH}, side by side")
    timings = inference.measure(engines, x, calls, 2, rounds)
    plain = timings[engines[0].name].median
    return [{"section": "saliency", "name": e.name, "metric": f"throughput, batch {SALIENCY_BATCH}",
             "unit": "series/s", "value": SALIENCY_BATCH / timings[e.name].median,
             "ratio": timings[e.name].median / plain, "note": e.note + "; ratio: time over the graph without it"}
            for e in engines]
