"""Run every benchmark in one process and return one report: rows, the machine, and the targets."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.bench import inference, memory, training
from pipeline.bench.config import BenchConfig
from pipeline.bench.forecasting import forecasting_rows
from pipeline.bench.peers import peer_rows
from pipeline.bench.pte import pte_rows
from pipeline.bench.saliency import saliency_rows
from pipeline.bench.signing import signature_rows
from pipeline.bench.streaming import stream_rows
from pipeline.bench.report import check_targets
from pipeline.bench.timing import default_threads, machine
from runtime.inputs import plural


def _cold_compiles() -> None:
    """Compile times as a first run sees them: inductor's on-disk caches would hide them on a rerun."""
    import torch._functorch.config
    import torch._inductor.config

    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; then it stays as it is
        pass


def _row(section: str, name: str, metric: str, unit: str, value: float, **extra) -> dict:
    return {"section": section, "name": name, "metric": metric, "unit": unit, "value": value, **extra}


def _model_source(cfg: BenchConfig, work: Path, log) -> tuple[Path | None, dict]:
    """The run to export: the user's, or None (then the benchmarked model's training run is used)."""
    if cfg.run_dir is None:
        return None, {"model": cfg.model, "width": cfg.width, "channels": cfg.channels, "length": cfg.length,
                      "classes": cfg.classes}
    from export.bundle import rebuild

    run = rebuild(Path(cfg.run_dir))
    model_cfg = run.cfg
    log(f"model: {model_cfg.name} from {cfg.run_dir} ({run.task})")
    return Path(cfg.run_dir), {"model": model_cfg.name, "width": model_cfg.width,
                               "channels": model_cfg.in_channels, "length": model_cfg.length,
                               "classes": max(2, model_cfg.n_outputs)}


def training_rows(cfg: BenchConfig, shape: dict, work: Path, log) -> tuple[list[dict], Path | None]:
    """Tutorial loop, bare step loop and `pipeline train`'s epoch (and compiled variants) per training model."""
    device = cfg.device
    batch = cfg.train_batch or (256 if device == "cuda" else 64)
    names = cfg.train_models or (shape["model"], "simple-cnn")
    if cfg.run_dir is None:  # the benchmarked model's own training run is the one exported below
        names = (shape["model"], *names)
    names = tuple(dict.fromkeys(names))
    s = cfg.settings
    rows, bench_run, whole = [], None, []
    for name in names:
        spec = training.TrainSpec(name, shape["width"], shape["channels"], shape["length"], shape["classes"],
                                  s["train_series"], batch, s["train_epochs"], device)
        data = training.synthetic_file(work, spec)
        if name == shape["model"] and cfg.run_dir is None:
            bench_run = training.trained_run(data, spec, work / f"run-{name}")
        loops = [training.tutorial_loop(data, spec), training.bare_loop(data, spec),
                 training.pipeline_loop(data, spec)]
        loops += [training.pipeline_loop(data, replace(spec, **variant), f"pipeline train {label}")
                  for label, variant in _variants(cfg, name, shape)]
        log(f"training: {name}, {spec.series} series per epoch, batch {batch}, {len(loops)} loops round-robin")
        times = training.measure_loops(loops, spec.series, spec.epochs, s["train_min_seconds"])
        base = times["tutorial loop"].samples_per_second
        for loop in loops:
            t = times[loop.name]
            note = loop.note if t.extra is None else f"{loop.note}; {_compile_note(t.extra)}"
            rows.append(_row("training", loop.name, f"training {name}, batch {batch}", "series/s",
                             t.samples_per_second, p90=t.p90_samples_per_second, warmup_s=t.warmup,
                             ratio=t.samples_per_second / base, epochs=len(t.seconds), note=note,
                             compile=t.extra))
        seconds, note = training.default_training(data, spec, float(np.median(times["pipeline train"].seconds)))
        whole.append((name, seconds, note))
    for name, seconds, note in whole:  # side by side: the benchmarked model's whole training first
        rows.append(_row("training", "default recipe", f"whole training {name}, {s['train_series']} series", "s",
                         seconds, ratio=seconds / whole[0][1], note=note))
    return rows, bench_run


def _variants(cfg: BenchConfig, name: str, shape: dict) -> list[tuple[str, dict]]:
    """`pipeline train` (precision auto) is always timed; so is `--precision fp32` (the bare step loop's
    arithmetic). Full mode and CUDA add bf16, `--compile on` and bf16 + compile for the benchmarked model,
    `--compile on` for the others; CUDA also reduce-overhead."""
    variants = [("--precision fp32", {"precision": "fp32"})]
    if cfg.quick and cfg.device == "cpu":
        return variants
    if name != shape["model"]:
        return variants + [("--compile on", {"compile": "on"})]
    variants += [("--precision bf16", {"precision": "bf16"}), ("--compile on", {"compile": "on"}),
                 ("--compile on --precision bf16", {"compile": "on", "precision": "bf16"})]
    if cfg.device == "cuda":
        variants.append(("--compile on --compile-mode reduce-overhead", {"compile": "on",
                                                                         "compile_mode": "reduce-overhead"}))
    return variants


def _compile_note(info: dict) -> str:
    return f"{plural(info['graphs'], 'graph')} compiled, {info['recompiles_after_epoch_1']} after the warm-up epoch"


BENCH_MAX_DROP = 100.0  # the bench's model learns random labels: its int8 graph is timed, not judged


def export_rows(cfg: BenchConfig, run_dir: Path, work: Path, log) -> tuple[list[dict], Path, Path]:
    """Export time with verification: --format all, and (full mode) each format on its own; then
    --quantize int8. Returns the rows, the --format all bundle and the int8 bundle."""
    from export.bundle import ExportConfig, export_run

    rows, bundle = [], None
    formats = ("all",) if cfg.quick else ("all", "onnx", "torchscript", "pt2", "aoti")
    for fmt in formats:
        start = time.perf_counter()
        out = export_run(run_dir, ExportConfig(fmt=fmt), out=work / f"bundle-{fmt}", force=True, log=lambda _: None)
        seconds = time.perf_counter() - start
        bundle = bundle or out
        rows.append(_row("start-up", f"export --format {fmt}", "export + verification", "s", seconds,
                         note="graphs written and checked against eager on every shape"))
        log(f"export --format {fmt}: {seconds:.1f} s")
    start = time.perf_counter()
    int8 = export_run(run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=BENCH_MAX_DROP),
                      out=work / "bundle-int8", force=True, log=lambda _: None)
    seconds = time.perf_counter() - start
    rows.append(_row("start-up", "export --format onnx --quantize int8", "export + verification + int8", "s",
                     seconds, note="the ONNX graphs, then calibration and both graphs measured on held-out data"))
    log(f"export --format onnx --quantize int8: {seconds:.1f} s")
    return rows, bundle, int8


def inference_rows(cfg: BenchConfig, run_dir: Path, bundle: Path, int8_bundle: Path, threads: int, work: Path,
                   log) -> tuple[list[dict], dict]:
    from export.bundle import rebuild
    from export.graphs import model_graph

    run = rebuild(run_dir)
    model_cfg, model = run.cfg, run.model
    device = torch.device(cfg.device)
    length = model_cfg.length
    flops = inference.model_flops(model, model_cfg.in_channels, length)  # on CPU, before the model moves
    graph = model_graph(model, run.task)
    aoti, aoti_seconds = [], None
    if not cfg.quick:  # a C++ build of the model (10-30 s): full mode only
        log("inference: compiling the model with AOTInductor (as export --format aoti does)")
        engine, aoti_seconds = inference.aoti_engine(graph, model_cfg.in_channels, length, model_cfg.fixed_length,
                                                     work, device)  # before torch_engines moves the graph
        aoti = [engine]
    engines = (inference.torch_engines(graph, bundle, device, cfg.compile_mode) + aoti
               + inference.runtime_engines(bundle, threads, device) + inference.int8_engines(int8_bundle, threads))
    s = cfg.settings
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch, calls in ((1, s["latency_calls"]), (cfg.batch, s["throughput_calls"])):
        x = torch.randn(batch, model_cfg.in_channels, length, generator=g).numpy()
        log(f"inference: batch {batch}, {len(engines)} engines x {s['rounds']} rounds x {calls} calls")
        timings = inference.measure(engines, x, calls, s["warmup"] if batch == 1 else max(2, s["warmup"] // 3),
                                    s["rounds"])
        for engine in engines:
            engine.warmup[batch] = timings[engine.name].warmup
        eager = timings["eager PyTorch"]
        for engine in engines:
            t = timings[engine.name]
            if batch == 1:
                rows.append(_row("inference", engine.name, "latency, batch 1", "ms", t.median * 1e3,
                                 p90=t.p90 * 1e3, warmup_s=t.warmup, ratio=t.median / eager.median,
                                 calls=t.calls, note=engine.note))
            else:
                rate = batch / t.median
                rows.append(_row("inference", engine.name, f"throughput, batch {batch}", "series/s", rate,
                                 p90=batch / t.p90, warmup_s=t.warmup, ratio=eager.median / t.median,
                                 calls=t.calls, gflops=rate * flops / 1e9, note=engine.note))
    compiled = next(e for e in engines if e.name == "torch.compile")
    rows.append(_row("start-up", "torch.compile", f"first calls at batch 1 and {cfg.batch}", "s",
                     sum(compiled.warmup.values()), note="compile (cold: inductor caches off) + warm-up"))
    if aoti_seconds is not None:
        rows.append(_row("start-up", "AOTInductor", "torch.export + package compile of the model", "s",
                         aoti_seconds, note="once, at export (cold: inductor caches off); a C++ host then loads it "
                         "in milliseconds"))
    peak = {"flops_per_series": flops, "eager_warmup_s": sum(engines[0].warmup.values())}
    if device.type == "cpu":
        peak.update(inference.onnxruntime_matmul_peak(threads, s["peak_sizes"]))
        int8_peak = inference.onnxruntime_int8_matmul_peak(threads, s["peak_sizes"])
        peak.update(int8_gops=int8_peak["gops"], int8_n=int8_peak["n"])
    return rows, peak


def comparison_rows(cfg: BenchConfig, run_dir: Path, bundle: Path, shape: dict, threads: int, work: Path,
                    log) -> list[dict]:
    """The benchmarked model against fcn of the same shape: parameters, FLOPs per series and the runtime's
    batch-1 latency and throughput, the two sessions timed side by side in the same rounds."""
    if shape["model"] == "fcn" or cfg.device != "cpu":
        return []
    from export.bundle import ExportConfig, export_run, rebuild

    spec = training.TrainSpec("fcn", shape["width"], shape["channels"], shape["length"], shape["classes"], 64, 64, 0)
    fcn_run = training.trained_run(training.synthetic_file(work, spec), spec, work / "run-fcn")
    fcn_bundle = export_run(fcn_run, ExportConfig(fmt="onnx"), out=work / "bundle-fcn", force=True,
                            log=lambda _: None)
    models = []
    for name, folder, graph in ((shape["model"], run_dir, bundle), ("fcn", fcn_run, fcn_bundle)):
        run = rebuild(folder)
        model_cfg, model = run.cfg, run.model
        engine = inference.runtime_engines(graph, threads, torch.device("cpu"))[1]
        models.append((name, inference.model_flops(model, model_cfg.in_channels, model_cfg.length),
                       sum(p.numel() for p in model.parameters() if p.requires_grad),
                       inference.Engine(f"{name} runtime session.run", engine.run, engine.prepare)))
    s = cfg.settings
    g = torch.Generator().manual_seed(1)
    rows = []
    log(f"models: {shape['model']} against fcn, the runtime's sessions side by side")
    for batch, calls in ((1, s["latency_calls"]), (cfg.batch, s["throughput_calls"])):
        x = torch.randn(batch, shape["channels"], shape["length"], generator=g).numpy()
        timings = inference.measure([m[3] for m in models], x, calls, s["warmup"] if batch == 1 else 2, s["rounds"])
        fcn_time = timings[models[1][3].name].median
        for name, flops, params, engine in models:
            t = timings[engine.name].median
            note = f"{params:,} trainable parameters, {flops / 1e6:.2f} MFLOP per series"
            if batch == 1:
                rows.append(_row("models", engine.name, "latency, batch 1", "ms", t * 1e3, ratio=t / fcn_time,
                                 params=params, flops_per_series=flops, note=note))
            else:
                rows.append(_row("models", engine.name, f"throughput, batch {batch}", "series/s", batch / t,
                                 ratio=fcn_time / t, params=params, flops_per_series=flops,
                                 gflops=batch / t * flops / 1e9, note=note))
    return rows


def memory_rows(cfg: BenchConfig, work: Path, log) -> list[dict]:
    """`pipeline predict` on memory-mapped .npy files of growing size (a linear model: I/O bound)."""
    spec = training.TrainSpec("linear", 1.0, 1, 128, 3, 64, 8, 0)
    data = training.synthetic_file(work, spec)
    run_dir = training.trained_run(data, spec, work / "run-memory")
    from export.bundle import ExportConfig, export_run

    bundle = export_run(run_dir, ExportConfig(fmt="onnx"), out=work / "bundle-memory", force=True,
                        log=lambda _: None)
    sizes = list(cfg.settings["memory_mib"])
    log(f"memory: pipeline predict on {', '.join(map(str, sizes))} MiB memory-mapped .npy files")
    results = memory.stream_sizes(bundle, work, 128, sizes)
    base = results[0]["seconds_per_gib"]
    return [_row("memory", "pipeline predict", f"{r['mib']} MiB .npy ({r['series']} series)", "MB peak RSS",
                 r["peak_rss_mb"], seconds=r["seconds"], seconds_per_gib=r["seconds_per_gib"],
                 ratio=r["seconds_per_gib"] / base, note="ratio: seconds per GiB against the smallest file")
            for r in results]


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Everything in one process: training loops, export, inference engines, memory; with targets."""
    threads = cfg.threads or default_threads()
    _set_threads(threads)
    _cold_compiles()
    report = {"machine": machine(threads, cfg.device), "config": asdict(cfg), "mode": "quick" if cfg.quick else "full"}
    log(f"bench on {report['machine']['cpu']}{' + ' + report['machine']['gpu'] if report['machine']['gpu'] else ''}"
        f", {threads} threads for every engine")
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        work = Path(tmp)
        run_dir, shape = _model_source(cfg, work, log)
        rows, bench_run = training_rows(cfg, shape, work, log)
        run_dir = run_dir or bench_run
        export, bundle, int8_bundle = export_rows(cfg, run_dir, work, log)
        inference_, peak = inference_rows(cfg, run_dir, bundle, int8_bundle, threads, work, log)
        for row in export + [r for r in inference_ if r["section"] == "start-up"]:
            row["ratio"] = row["value"] / peak["eager_warmup_s"]  # against eager's warm-up for the same batches
        rows += inference_ + export
        rows += comparison_rows(cfg, run_dir, bundle, shape, threads, work, log)
        if cfg.device == "cpu":
            rows += saliency_rows(run_dir, bundle, threads, cfg.settings["rounds"], cfg.settings["throughput_calls"],
                                  work, log)
        rows += signature_rows(bundle, work, 5 if cfg.quick else 20, cfg.settings["rounds"], log)
        rows += stream_rows(bundle, threads, cfg.quick, cfg.settings["rounds"], log)
        rows += forecasting_rows(work, threads, cfg.settings["rounds"], cfg.quick, log)
        rows += peer_rows(shape["model"], cfg.quick, work, log, cfg.peer_python)
        if not cfg.quick and cfg.device == "cpu":  # ExecuTorch is a CPU (XNNPACK) engine here
            pte = pte_rows(run_dir, work, threads, cfg.settings["rounds"], cfg.settings["throughput_calls"],
                           cfg.batch, log)
            for row in pte:  # how near each engine runs to the fp32 rate onnxruntime's MatMul reaches here
                if row.get("gflops") and peak.get("gflops"):
                    row["of_fp32_peak"] = row["gflops"] / peak["gflops"]
            rows += pte
        if cfg.memory:
            rows += memory_rows(cfg, work, log)
    report["model"] = {**shape, **peak}
    report["rows"] = rows
    report["targets"] = check_targets(report)
    return report
