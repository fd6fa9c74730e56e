"""Our `tcn` forecaster against darts' TCNModel on the same recordings, windows and split, side by side in one run
(docs/forecasting.md). darts is a peer, never a dependency: it runs in its own interpreter (a virtualenv with
darts, `--peer-python`), this file as its script, reading the .csv with the standard library and numpy only.

    python -m pipeline.bench.darts_peer --peer-python /path/to/darts-venv/bin/python

Both train on the same training recordings of examples/demand.csv (our run's validation recording held out of
both), both forecast the same test windows of examples/demand_test.csv (72 past samples, the next 12, one window
every 12 samples, the temperature as a past covariate), and both are scored by runtime.forecast.report, so the
MASE (each window's error over its own in-sample seasonal-naive error, season 12) is computed once, the same way.
darts' model is as its users get it by default (TCNModel's defaults) with its reversible instance normalisation
on, which the recordings' levels (20 to 2000) need, and 100 epochs (its default)."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TRAIN, TEST = ROOT / "examples" / "demand.csv", ROOT / "examples" / "demand_test.csv"
WINDOW, HORIZON, SEASON = 72, 12, 12


def read_sites(path: Path) -> dict[str, np.ndarray]:
    """site -> (2, T) load and temperature, in file order."""
    sites: dict[str, list] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            sites.setdefault(row["site"], []).append((float(row["load"]), float(row["temp"])))
    return {site: np.asarray(rows, dtype=np.float32).T for site, rows in sites.items()}


def test_windows() -> tuple[np.ndarray, np.ndarray]:
    """The test windows (N, 2, W) and their targets (N, H): every HORIZON samples, as `pipeline evaluate` cuts."""
    xs, ys = [], []
    for x in read_sites(TEST).values():
        for start in range(0, x.shape[1] - WINDOW - HORIZON + 1, HORIZON):
            xs.append(x[:, start:start + WINDOW])
            ys.append(x[0, start + WINDOW:start + WINDOW + HORIZON])
    return np.stack(xs), np.stack(ys)


def darts_forecasts(train_sites: list[str], seed: int, epochs: int) -> dict:
    """In darts' interpreter: TCNModel fitted on the training sites, forecasting every test window."""
    import torch
    from darts import TimeSeries
    from darts.models import TCNModel

    torch.set_num_threads(1)
    sites = read_sites(TRAIN)
    target = [TimeSeries.from_values(sites[s][0].astype(np.float32)) for s in train_sites]
    covariate = [TimeSeries.from_values(sites[s][1].astype(np.float32)) for s in train_sites]
    model = TCNModel(input_chunk_length=WINDOW, output_chunk_length=HORIZON, n_epochs=epochs, random_state=seed,
                     use_reversible_instance_norm=True, pl_trainer_kwargs={"accelerator": "cpu",
                                                                           "enable_progress_bar": False,
                                                                           "enable_model_summary": False})
    started = time.perf_counter()
    model.fit(target, past_covariates=covariate, verbose=False)
    seconds = time.perf_counter() - started
    X, _ = test_windows()
    forecasts = model.predict(n=HORIZON, series=[TimeSeries.from_values(x[0]) for x in X],
                              past_covariates=[TimeSeries.from_values(x[1]) for x in X], verbose=False)
    return {"forecast": [f.values()[:, 0].tolist() for f in forecasts], "train_seconds": seconds}


def ours(seed: int, folder: Path) -> dict:
    """Our tcn with default flags, exported; its forecasts of the test windows from the bundle, and from eager."""
    import torch

    import runtime
    from export.bundle import ExportConfig, export_run, rebuild
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    torch.set_num_threads(1)
    data = DataConfig(data=str(TRAIN), recording_column="site", time_column="t", task="forecast", window=WINDOW,
                      horizon=HORIZON, season=SEASON, forecast_columns="load")
    started = time.perf_counter()
    run = train(RunSettings(data, LossConfig(), ModelConfig(name="tcn"), TrainConfig(seed=seed, progress=False)),
                out=folder / "run", log=lambda _: None)
    seconds = time.perf_counter() - started
    bundle = runtime.load(export_run(run.run_dir, ExportConfig(fmt="onnx"), log=lambda _: None))
    X, _ = test_windows()
    got = bundle.predict(X)["forecast"][:, 0]
    with torch.no_grad():
        eager = rebuild(run.run_dir).model(torch.from_numpy(X)).numpy()
    spread = X[:, 0].std(axis=1, keepdims=True)
    held = run.metrics["window"]["split"]
    return {"forecast": got, "train_seconds": seconds, "held_out": held, "epochs": run.metrics["epochs_run"],
            "bundle_vs_eager": float((np.abs(got - eager) / spread).max())}


def compare(peer_python: str, seed: int = 0, epochs: int = 100, log=print) -> dict:
    """Both forecasters on the same test windows, scored by runtime.forecast.report."""
    from runtime import forecast

    with tempfile.TemporaryDirectory() as tmp:
        mine = ours(seed, Path(tmp))
        held = mine["held_out"].split("(")[1].split(")")[0].split(", ")  # "by recording: 1 of 6 ... held out (site3)"
        train_sites = [s for s in read_sites(TRAIN) if s not in held]
        spec = json.dumps({"train_sites": train_sites, "seed": seed, "epochs": epochs})
        done = subprocess.run([peer_python, __file__, "--darts", spec], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"darts failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
    X, y = test_windows()
    history = X[:, :1].astype(np.float64)
    reports = {"ours (tcn)": forecast.report(history, mine["forecast"], y, HORIZON, SEASON),
               "darts TCNModel": forecast.report(history, np.asarray(theirs["forecast"]), y, HORIZON, SEASON)}
    rows = {name: r["model"] for name, r in reports.items()}
    rows["seasonal_naive"] = reports["ours (tcn)"]["seasonal_naive"]
    result = {"rows": rows, "mase_ratio": rows["ours (tcn)"]["mase"] / rows["darts TCNModel"]["mase"],
              "train_seconds": {"ours": mine["train_seconds"], "darts": theirs["train_seconds"]},
              "our_epochs": mine["epochs"], "darts_epochs": epochs, "held_out": held,
              "bundle_vs_eager_per_spread": mine["bundle_vs_eager"], "windows": len(X)}
    for line in forecast.report_text(rows):
        log(line)
    log(f"ours / darts MASE: {result['mase_ratio']:.3f}; training {mine['train_seconds']:.0f} s "
        f"({mine['epochs']} epochs) / {theirs['train_seconds']:.0f} s ({epochs} epochs), one thread each; our bundle "
        f"vs eager: {mine['bundle_vs_eager']:.2e} of each window's spread")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="an interpreter whose environment has darts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--darts", help=argparse.SUPPRESS)  # the peer's side: a JSON spec
    args = parser.parse_args()
    if args.darts:
        spec = json.loads(args.darts)
        print(json.dumps(darts_forecasts(spec["train_sites"], spec["seed"], spec["epochs"])))
        return
    if not args.peer_python:
        parser.error("--peer-python: name the python of a virtualenv with darts (pip install torch==2.13.0 darts)")
    result = compare(args.peer_python, args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
