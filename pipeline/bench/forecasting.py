"""The forecasting rows of `pipeline bench`: a tcn forecaster (window 96, horizon 24, quantiles 0.1/0.5/0.9) trained
briefly on synthetic seasonal recordings and exported as ONNX, then through the runtime as a service calls it:
throughput at batch 64, batch-1 latency, and `Bundle.forecast` rolled out over 10 horizons against ten batch-1
calls of the same graph, side by side in the same rounds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import runtime

WINDOW, HORIZON, ROLLOUT = 96, 24, 10
BATCH = 64


def seasonal_recordings(path: Path, recordings: int = 4, samples: int = 600, seed: int = 0) -> Path:
    """Recordings (R, 2, T) at different levels, a 24-sample season and noise, as an .npz of X."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    X = np.empty((recordings, 2, samples), dtype=np.float32)
    for r in range(recordings):
        X[r] = (10.0 * (r + 1) * (1 + 0.3 * np.sin(2 * np.pi * (t[None] + 6 * np.arange(2)[:, None]) / HORIZON))
                + rng.normal(size=(2, samples)))
    np.savez(path, X=X)
    return path


def _median_seconds(call, rounds: int, calls: int) -> float:
    call()  # warm-up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - start) / calls)
    return float(np.median(samples))


def forecasting_rows(work: Path, threads: int, rounds: int, quick: bool, log) -> list[dict]:
    from export.bundle import ExportConfig, export_run
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    data = seasonal_recordings(work / "forecast-recordings.npz")
    log(f"forecasting: a tcn of window {WINDOW}, horizon {HORIZON}, 3 quantiles, trained briefly, exported as ONNX")
    run = train(RunSettings(DataConfig(data=str(data), task="forecast", window=WINDOW, horizon=HORIZON, season=HORIZON),
                            LossConfig(name="quantile"), ModelConfig(name="tcn", width=0.25 if quick else 1.0),
                            TrainConfig(epochs=1, seed=0, progress=False, threads=threads)),
                out=work / "forecast-run", log=lambda _: None)
    bundle = runtime.load(export_run(run.run_dir, ExportConfig(fmt="onnx"), log=lambda _: None), threads=threads)
    recording = np.load(data)["X"][0]
    batch = np.stack([recording[:, s:s + WINDOW] for s in range(BATCH)])
    one = batch[:1]
    calls = 5 if quick else 50
    throughput_s = _median_seconds(lambda: bundle.predict(batch), rounds, max(1, calls // 5))
    latency_s = _median_seconds(lambda: bundle.predict(one), rounds, calls)
    rollout_s = _median_seconds(lambda: bundle.forecast(recording[:, :WINDOW], steps=ROLLOUT * HORIZON), rounds,
                                max(1, calls // 5))
    ten_calls = 10 * latency_s
    return [
        {"section": "forecasting", "name": "Bundle.predict", "metric": f"throughput, {BATCH} windows",
         "unit": "windows/s", "value": BATCH / throughput_s, "ratio": latency_s * BATCH / throughput_s,
         "note": "the forecast graph (tcn, quantiles); ratio: windows/s over one window per call"},
        {"section": "forecasting", "name": "Bundle.predict", "metric": "latency, one window", "unit": "ms",
         "value": latency_s * 1e3, "ratio": 1.0, "note": f"one window, its {HORIZON} x 3 forecast"},
        {"section": "forecasting", "name": "Bundle.forecast", "metric": f"rollout of {ROLLOUT} horizons",
         "unit": "ms", "value": rollout_s * 1e3, "ratio": rollout_s / ten_calls,
         "note": f"{ROLLOUT * HORIZON} samples ahead, the median fed back; ratio: time over {ROLLOUT} batch-1 "
                 "predict calls"},
    ]
