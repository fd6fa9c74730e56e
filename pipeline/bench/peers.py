"""The kernel models against aeon's (numba) on the same data: throughput at batch 1, 64 and 1024, batch-1
latency and the peak memory added by predicting 1024 series, at lengths 150 and 1000, one thread, each engine
in its own process (so no engine inherits another's pages or threads).

Ours is the exported onnxruntime bundle through the runtime (`Bundle.predict`, which cuts calls by the
manifest's batch_bound) and, in full mode, its AOTInductor package in calls of the same bound; aeon's is
its own classifier fitted on the same training series (its transform and ridge head: what its users would
deploy). aeon is an optional benchmark dependency (`pip install
'pipeline[aeon]'`, or `--peer-python` naming an interpreter of a virtualenv that has it); without it the rows
say "aeon not installed". Run as `python -m pipeline.bench.peers ours|aoti|aeon SPEC_JSON` for one engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

AEON_CLASSIFIERS = {"minirocket": "MiniRocketClassifier", "hydra": "HydraClassifier",
                    "multirocket-hydra": "MultiRocketHydraClassifier"}
FULL_SHAPES = {"lengths": (150, 1000), "batches": (1, 64, 1024), "seconds": 2.0}
QUICK_SHAPES = {"lengths": (150,), "batches": (1, 64), "seconds": 0.2}
TRAIN_SERIES, CLASSES = 64, 2
MEMORY_BATCH = 1024  # the peak memory added by predicting this many series
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}
NOT_INSTALLED = "aeon not installed"


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_added_mb(call) -> float:
    """The most resident memory above the start that `call()` reaches, sampled every millisecond (the
    process's own peak, ru_maxrss, may still hold an earlier, larger moment such as loading)."""
    base, peak, done = _resident_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _resident_mb())
            done.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    return max(0.0, max(peak[0], _resident_mb()) - base)


def measure(predict, length: int, batches: tuple[int, ...], seconds: float) -> dict:
    """Peak memory added by one MEMORY_BATCH predict (after a warm batch-1 call), then per batch the median
    seconds of calls repeated for `seconds`."""
    rng = np.random.default_rng(1)
    predict(rng.standard_normal((1, 1, length), dtype=np.float32))
    big = rng.standard_normal((MEMORY_BATCH, 1, length), dtype=np.float32)
    result = {"peak_added_mb": peak_added_mb(lambda: predict(big)), "seconds": {}}
    for batch in batches:
        x = rng.standard_normal((batch, 1, length), dtype=np.float32)
        predict(x)
        times, start = [], time.perf_counter()
        while not times or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            predict(x)
            times.append(time.perf_counter() - t)
        result["seconds"][str(batch)] = float(np.median(times))
    return result


def _ours(spec: dict) -> dict:
    import runtime

    bundle = runtime.load(spec["bundle"], threads=1)
    return measure(bundle.predict, spec["length"], tuple(spec["batches"]), spec["seconds"])


def _aoti(spec: dict) -> dict:
    """The bundle's AOTInductor package (as the C++ kit runs it: calls of at most batch_bound series)."""
    import torch
    import torch._inductor

    torch.set_num_threads(1)
    runner = torch._inductor.aoti_load_package(str(Path(spec["bundle"]) / "model.aoti.pt2"))
    rows = json.loads((Path(spec["bundle"]) / "manifest.json").read_text())["batch_bound"]["series_per_call"]

    def predict(x):
        with torch.inference_mode():
            series = torch.from_numpy(x)
            return [runner(series[i:i + rows]) for i in range(0, len(series), rows)]

    return measure(predict, spec["length"], tuple(spec["batches"]), spec["seconds"])


def _aeon(spec: dict) -> dict:
    import importlib

    module = importlib.import_module("aeon.classification.convolution_based")
    data = np.load(spec["data"])
    classifier = getattr(module, spec["classifier"])(n_jobs=1, random_state=0)
    classifier.fit(data["X"].astype(np.float32), data["y"])
    return measure(classifier.predict, spec["length"], tuple(spec["batches"]), spec["seconds"])


def run_child(python: str, engine: str, spec: dict) -> dict:
    """One engine's measurement in a fresh process with one thread; {"error": ...} if it failed."""
    proc = subprocess.run([python, "-m", "pipeline.bench.peers", engine, json.dumps(spec)], capture_output=True,
                          text=True, env={**os.environ, **ONE_THREAD,
                                          "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aeon_installed(python: str) -> bool:
    proc = subprocess.run([python, "-c", "import aeon"], capture_output=True)
    return proc.returncode == 0


def _row(name: str, metric: str, unit: str, value: float | None, **extra) -> dict:
    return {"section": "aeon", "name": name, "metric": metric, "unit": unit, "value": value, **extra}


def comparison_rows(model: str, length: int, ours: dict, theirs: dict | None, note: str,
                    engine: str = "onnxruntime bundle") -> list[dict]:
    """Ours beside aeon's per batch (ratio: ours over aeon's throughput; latency and memory: ours over
    aeon's, lower is better), or ours alone with the reason aeon's are missing."""
    rows, name = [], f"{model} {engine}"
    for batch, seconds in ours["seconds"].items():
        peer = None if theirs is None else theirs["seconds"][batch]
        if batch == "1":
            rows.append(_row(name, f"latency, batch 1, length {length}", "ms", seconds * 1e3,
                             ratio=None if peer is None else seconds / peer, peer=None if peer is None else peer * 1e3,
                             note=note))
        rows.append(_row(name, f"throughput, batch {batch}, length {length}", "series/s",
                         int(batch) / seconds, ratio=None if peer is None else peer / seconds,
                         peer=None if peer is None else int(batch) / peer, note=note))
    peer_mb = None if theirs is None else theirs["peak_added_mb"]
    rows.append(_row(name, f"peak memory added, {MEMORY_BATCH} series, length {length}",
                     "MB", ours["peak_added_mb"], peer=peer_mb,
                     ratio=None if not peer_mb else ours["peak_added_mb"] / peer_mb, note=note))
    return rows


def peer_rows(model: str, quick: bool, work: Path, log, python: str | None = None) -> list[dict]:
    """The aeon section: for each length, our model trained (ridge head) and exported, aeon's classifier fitted
    on the same series, each timed in its own one-thread process."""
    if model not in AEON_CLASSIFIERS:
        return []
    from export.bundle import ExportConfig, export_run
    from pipeline.bench import training

    python = python or sys.executable
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    installed = aeon_installed(python)
    rows = []
    for length in shapes["lengths"]:
        spec = training.TrainSpec(model, 1.0, 1, length, CLASSES, TRAIN_SERIES, TRAIN_SERIES, 0)
        data = training.synthetic_file(work, spec)
        run_dir = training.trained_run(data, spec, work / f"run-aeon-{model}-{length}")
        bundle = export_run(run_dir, ExportConfig(fmt="onnx" if quick else "onnx,aoti"),
                            out=work / f"bundle-aeon-{model}-{length}", force=True, log=lambda _: None)
        child = {"length": length, "batches": list(shapes["batches"]), "seconds": shapes["seconds"]}
        log(f"aeon: {model}, length {length}: the onnxruntime bundle and aeon's "
            f"{AEON_CLASSIFIERS[model]}, each in its own one-thread process")
        ours = run_child(sys.executable, "ours", {**child, "bundle": str(bundle)})
        if "error" in ours:
            raise RuntimeError(f"the bundle's measurement failed: {ours['error']}")
        theirs, note = None, NOT_INSTALLED
        if installed:
            theirs = run_child(python, "aeon", {**child, "data": str(data), "classifier": AEON_CLASSIFIERS[model]})
            note = f"peer: aeon {AEON_CLASSIFIERS[model]} fitted on the same {TRAIN_SERIES} series"
            if "error" in theirs:
                theirs, note = None, f"aeon failed: {theirs['error']}"
        rows += comparison_rows(model, length, ours, theirs, note)
        if not quick:  # the AOTInductor package too (a C++ host's fastest engine)
            aoti = run_child(sys.executable, "aoti", {**child, "bundle": str(bundle)})
            if "error" in aoti:
                raise RuntimeError(f"the AOTInductor package's measurement failed: {aoti['error']}")
            rows += comparison_rows(model, length, aoti, theirs, note, "AOTInductor package")
    return rows


if __name__ == "__main__":
    engine, spec_text = sys.argv[1], sys.argv[2]
    print(json.dumps({"ours": _ours, "aoti": _aoti, "aeon": _aeon}[engine](json.loads(spec_text))))
