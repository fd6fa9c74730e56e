"""ExecuTorch beside onnxruntime and AOTInductor (full mode): the run exported with --format onnx,aoti,pte, then
each engine in its own process (so none inherits another's pages or thread pool) with the same threads: batch-1
latency and batch-64 throughput on the same series, in the same run. The ratios are against onnxruntime's.
Without the executorch extra the rows say so. Run as `python -m pipeline.bench.pte onnxruntime|executorch|aoti
SPEC_JSON` for one engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = {"onnxruntime": "onnxruntime model.onnx", "executorch": "ExecuTorch model.pte (XNNPACK)",
           "aoti": "AOTInductor model.aoti.pt2", "onnxruntime-int8": "onnxruntime model.int8.onnx",
           "executorch-int8": "ExecuTorch model.int8.pte (XNNPACK int8)"}
# The bench's run learns random labels: its int8 graphs are timed here, not judged (export's metric check)
BENCH_MAX_DROP = 100.0
NOT_INSTALLED = "executorch not installed (pip install 'pipeline[executorch]')"


TRAIN_ENGINES = {"executorch-train": "ExecuTorch train.pte", "eager-train": "eager PyTorch (torch.optim.SGD)"}


def _train_step(engine: str, bundle: Path, threads: int):
    """One full-batch SGD step of the head on the fine-tuning program's batch: on the device, or in eager."""
    import torch

    from export.pte_train import PteTrainer, TrainingGraph, trainable
    from runtime.manifest import Manifest

    torch.set_num_threads(threads)
    spec = Manifest.read(bundle).pte_train
    x, target = spec.inputs
    rng = np.random.default_rng(0)
    X = rng.standard_normal(x.shape, dtype=np.float32)
    y = (rng.integers(0, 2, target.shape) if target.dtype == "int64" else rng.standard_normal(target.shape)).astype(
        target.dtype)
    if engine == "executorch-train":
        trainer = PteTrainer(bundle / spec.file, x.shape[0], spec.features)
        return lambda _: trainer.finetune(X, y, 1, 1e-3)
    from export.bundle import rebuild

    run = rebuild(json.loads((bundle / "manifest.json").read_text())["source"]["run_dir"])
    trainable(run.model, spec.finetune)
    graph = TrainingGraph(run.model.eval(), run.loss)
    optimizer = torch.optim.SGD([p for p in run.model.parameters() if p.requires_grad], lr=1e-3)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step(_):
        optimizer.zero_grad()
        graph(xt, yt)[0].backward()
        optimizer.step()

    return step


def _predictor(engine: str, bundle: Path, threads: int):
    if engine in TRAIN_ENGINES:
        return _train_step(engine, bundle, threads)
    if engine.startswith("onnxruntime"):
        import runtime

        session = runtime.load(bundle, threads=threads, precision="int8" if engine.endswith("int8") else "fp32")
        return lambda x: session.model_session.run(None, {"x": x})
    import torch

    torch.set_num_threads(threads)
    if engine == "aoti":
        import torch._inductor

        runner = torch._inductor.aoti_load_package(str(bundle / "model.aoti.pt2"))

        def run(x):
            with torch.inference_mode():
                return runner(torch.from_numpy(x))

        return run
    from executorch.extension.pybindings import portable_lib

    from export.pte import PteRunner
    from runtime.manifest import Manifest

    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool: as many threads as the others use
    pte = Manifest.read(bundle).pte
    program = pte.model_int8 if engine.endswith("int8") else pte.model
    runner = PteRunner(bundle / program.file, program)
    return lambda x: runner([x])


def measure(predict, shape: tuple[int, int], batches: tuple[int, ...], rounds: int, calls: int) -> dict:
    """Per batch, the median over `rounds` of the mean seconds of `calls` calls (after warm-up calls)."""
    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        for _ in range(3):
            predict(x)
        means = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                predict(x)
            means.append((time.perf_counter() - start) / calls)
        out[str(batch)] = float(np.median(means))
    return out


def run_child(engine: str, spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.pte", engine, json.dumps(spec)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, metric: str, unit: str, value: float | None, **extra) -> dict:
    return {"section": "pte", "name": name, "metric": metric, "unit": unit, "value": value, **extra}


def pte_rows(run_dir: Path, work: Path, threads: int, rounds: int, calls: int, batch: int = 64, log=print,
             engines: tuple[str, ...] = tuple(ENGINES)) -> list[dict]:
    """Export time of --format pte, then latency and throughput of the engines (onnxruntime first) side by side;
    each throughput row also says the GFLOP/s it reaches (the model's FLOPs per series times its rate)."""
    from export.bundle import ExportConfig, export_run, rebuild
    from export.pte import available
    from pipeline.bench.inference import model_flops

    if not available():
        return [_row(ENGINES["executorch"], "throughput", "series/s", None, note=NOT_INSTALLED)]
    start = time.perf_counter()
    bundle = export_run(run_dir, ExportConfig(fmt="pte,pte-train", pte_max_batch=batch), out=work / "bundle-pte",
                        force=True, log=lambda _: None)
    seconds = time.perf_counter() - start
    int8 = {"quantize": "int8", "max_metric_drop": BENCH_MAX_DROP} if "executorch-int8" in engines else {}
    if int8:
        export_run(run_dir, ExportConfig(fmt="pte", pte_max_batch=batch, **int8), out=work / "bundle-pte-int8",
                   force=True, log=lambda _: None)
    peers = export_run(run_dir, ExportConfig(fmt="onnx,aoti" if "aoti" in engines else "onnx",
                                             **(int8 if "onnxruntime-int8" in engines else {})),
                       out=work / "bundle-pte-peers", force=True, log=lambda _: None)
    x = json.loads((bundle / "manifest.json").read_text())["pte"]["model"]["inputs"][0]["shape"]
    run = rebuild(run_dir)
    flops = model_flops(run.model, run.cfg.in_channels, run.cfg.length)
    rows = [_row("export --format pte", "lowering + verification", "s", seconds,
                 note="the model lowered to XNNPACK and the loss, both checked against eager in executorch.runtime")]
    folders = {"executorch": bundle, "executorch-int8": work / "bundle-pte-int8"}
    spec = {"threads": threads, "shape": x[1:], "batches": [1, batch], "rounds": rounds,
            "calls": calls}
    log(f"ExecuTorch: latency and throughput of {', '.join(engines)}, each in its own process")
    results = {engine: run_child(engine, {**spec, "bundle": str(folders.get(engine, peers))}) for engine in engines}
    base = results["onnxruntime"]
    for engine, result in results.items():
        if "error" in result:
            rows.append(_row(ENGINES[engine], "throughput", "series/s", None, note=f"failed: {result['error']}"))
            continue
        ok = "error" not in base
        rows.append(_row(ENGINES[engine], "latency, batch 1", "ms", result["1"] * 1e3,
                         ratio=result["1"] / base["1"] if ok else None, note="ratio: against onnxruntime's"))
        rate = batch / result[str(batch)]
        rows.append(_row(ENGINES[engine], f"throughput, batch {batch}", "series/s", rate,
                         ratio=base[str(batch)] / result[str(batch)] if ok else None, gflops=rate * flops / 1e9,
                         note="ratio: against onnxruntime's (fp32); gflops: the model's FLOPs per series x rate"))
    train_batch = json.loads((bundle / "manifest.json").read_text())["pte_train"]["inputs"][0]["shape"][0]
    steps = {engine: run_child(engine, {**spec, "bundle": str(bundle), "batches": [1]}) for engine in TRAIN_ENGINES}
    eager = steps["eager-train"]
    for engine, result in steps.items():
        if "error" in result:
            rows.append(_row(TRAIN_ENGINES[engine], "fine-tuning step", "ms", None, note=f"failed: {result['error']}"))
            continue
        rows.append(_row(TRAIN_ENGINES[engine], f"fine-tuning step (head, SGD), batch {train_batch}", "ms",
                         result["1"] * 1e3, ratio=result["1"] / eager["1"] if "error" not in eager else None,
                         note="forward, loss, backward and the update; ratio: against eager PyTorch's step"))
    return rows


if __name__ == "__main__":
    engine, spec_text = sys.argv[1], sys.argv[2]
    spec = json.loads(spec_text)
    predict = _predictor(engine, Path(spec["bundle"]), spec["threads"])
    print(json.dumps(measure(predict, tuple(spec["shape"]), tuple(spec["batches"]), spec["rounds"], spec["calls"])))
