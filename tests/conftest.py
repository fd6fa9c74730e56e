"""Shared helpers: small learnable data sets per task, and small trained+exported bundles per task."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# scikit-learn's estimator checks run their array-API check only where SciPy was imported with this set
# (tests/pipeline/test_sklearn.py); numpy arrays behave the same with it
os.environ.setdefault("SCIPY_ARRAY_API", "1")

# Under pytest-xdist every worker is one process of several on the machine: one intra-op thread each, so the
# workers do not oversubscribe the cores (set before any test module imports torch).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_threads] = "1"


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """Each test starts with one torch thread under xdist (a test may set more: `pipeline bench --threads`)."""
    yield
    torch = sys.modules.get("torch")
    if os.environ.get("PYTEST_XDIST_WORKER") and torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def shared(tmp_path_factory, name: str, build):
    """What `build(folder)` returns, built once per test session however many xdist workers ask: the first
    builds it in a folder of the session's temporary root under a file lock, the others wait and read it
    back (the value is pickled: paths and small dataclasses). Without xdist this is a plain build."""
    import pickle

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above every worker's own
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        done = folder / ".value.pickle"
        if done.exists():
            return pickle.loads(done.read_bytes())
        if folder.exists():  # a build that raised: start again
            import shutil

            shutil.rmtree(folder)
        folder.mkdir()
        value = build(folder)
        done.write_bytes(pickle.dumps(value))
        return value


PROJECT = Path(__file__).resolve().parents[1]
# docs/hosts.md's two lines that build the C++ kit (tests/test_readme.py checks they are the page's lines)
CPP_CONFIGURE = ("cmake -S runtime/hosts/cpp -B build/cpp -DCMAKE_PREFIX_PATH=\"$(python -c 'import torch.utils; "
                 "print(torch.utils.cmake_prefix_path)')\"")
CPP_BUILD = "cmake --build build/cpp -j2"
# docs/hosts.md's lines that build the C++ .pte kit on ExecuTorch's torch-free runtime libraries
PTE_FETCH = ("pip download executorch==1.5.1 --no-deps --only-binary :all: -d build/executorch && "
             "python -m zipfile -e build/executorch/executorch-1.5.1-*.whl build/executorch/wheel")
PTE_CONFIGURE = "cmake -S runtime/hosts/pte -B build/pte -DCMAKE_PREFIX_PATH=$PWD/build/executorch/wheel/executorch"
PTE_BUILD = "cmake --build build/pte -j2"


def copy_project(folder: Path) -> Path:
    """A copy of the project as a fresh clone has it (examples/ included; no build outputs, node_modules,
    artifacts or git), with an empty artifacts/ folder."""
    import shutil

    box = folder / "project"
    ignore = shutil.ignore_patterns("node_modules", "build", "__pycache__", "artifacts", ".git", "*.egg-info")
    shutil.copytree(PROJECT, box, ignore=ignore)
    (box / "artifacts").mkdir()
    return box


def project_bash(line: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """A README line run by bash in `cwd`, with this environment's `pipeline` and `python` first on PATH."""
    env = {**subprocess_env(), "ONNXRUNTIME_NODE_INSTALL": "skip", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_cpp_project(folder: Path) -> Path:
    box = copy_project(folder)
    for line in (CPP_CONFIGURE, CPP_BUILD):
        done = project_bash(line, box)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return box


@pytest.fixture(scope="session")
def cpp_project(tmp_path_factory) -> Path:
    """A copy of the project with the C++ kit built by docs/hosts.md's two cmake lines, once per session:
    the C++ host tests run its build/cpp/selfcheck, and the README test runs every README command in it (its
    cmake lines then find the build done)."""
    import shutil

    for tool, fix in (("cmake", "install CMake 3.18+ (Debian: apt-get install cmake g++)"),
                      ("g++", "install a C++17 compiler (Debian: apt-get install g++)")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; {fix}", pytrace=False)
    return shared(tmp_path_factory, "cpp-project", _build_cpp_project)


@pytest.fixture(scope="session")
def pte_kit(cpp_project, tmp_path_factory) -> Path:
    """build/pte/pte_selfcheck in the session's project copy, built by docs/hosts.md's lines once per session
    (the README test runs them again there and finds it built)."""

    def build(_scratch: Path) -> Path:
        for line in (PTE_FETCH, PTE_CONFIGURE, PTE_BUILD):
            done = project_bash(line, cpp_project)
            assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return cpp_project / "build" / "pte" / "pte_selfcheck"

    return shared(tmp_path_factory, "pte-kit", build)


def make_task_data(task: str, n: int = 96, length: int = 24, channels: int = 1, seed: int = 0):
    """(X, y) where y depends on X, so a model can learn it in a few epochs."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, channels, length)).astype(np.float32)
    level = X[:, 0, : length // 2].mean(axis=1) - X[:, 0, length // 2:].mean(axis=1)  # (N,)
    if task == "regression":
        y = np.stack([3.0 * level + 1.0, -2.0 * level], axis=1)
    elif task == "binary":
        y = (level > 0).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(level, np.quantile(level, [1 / 3, 2 / 3])).astype(np.int64)
    elif task == "multilabel":
        y = np.stack([level > 0, X[:, 0].mean(axis=1) > 0, level < -0.2], axis=1).astype(np.int64)
    elif task == "count":
        y = rng.poisson(np.exp(1.0 + 2.0 * level)).astype(np.int64)
    else:
        raise ValueError(task)
    return X, y


@pytest.fixture
def npz_file(tmp_path):
    """Write (X, y) of a task to tmp_path/<name>.npz and return its path."""

    def write(task: str, name: str = "train", **kwargs):
        X, y = make_task_data(task, **kwargs)
        path = tmp_path / f"{name}.npz"
        np.savez(path, X=X, y=y)
        return path

    return write


TASKS = ("regression", "binary", "multiclass", "multilabel", "count")
CLASS_NAMES = np.array(["cat", "dog", "eel"])  # multiclass labels are names, so outputs must show them
LOSS_OPTIONS = {"multiclass": dict(class_weights=(0.5, 2.0, 1.0), label_smoothing=0.1),
                "binary": dict(pos_weight=(1.5,))}


@dataclass(frozen=True)
class TaskBundle:
    task: str
    run_dir: Path
    bundle: Path
    train_file: Path
    test_file: Path


FILTER = np.array([0.8, -1.1, 0.4, 1.3, -0.6])  # prices' signal: a short filter's mean response


def prices_signal(X: np.ndarray) -> np.ndarray:
    """A plain linear function of each series that convolutions find anywhere in it (a short filter's mean
    response), scaled to unit variance for i.i.d. N(0, 1) samples."""
    positions = X.shape[-1] - len(FILTER) + 1
    response = np.stack([np.convolve(x, FILTER, mode="valid").mean() for x in X[:, 0]])
    # the response is sum_i c_i x_i: its std is the norm of those coefficients
    return response / np.linalg.norm(np.convolve(np.ones(positions), FILTER) / positions)


def prices(n: int, seed: int, offset: float = 1000.0, spread: float = 50.0, length: int = 32):
    """(X, y): N(0, 1) series and targets around `offset` (std `spread`), linear in the series."""
    X = np.random.default_rng(seed).normal(size=(n, 1, length)).astype(np.float32)
    return X, (offset + spread * prices_signal(X)).astype(np.float32)


@pytest.fixture(scope="session")
def learned_regression(tmp_path_factory) -> TaskBundle:
    """A regression run that has learned (prices around 1000, test R^2 about 0.9) and its ONNX bundle: where a
    broken graph's predictions fall back towards the targets' mean, this run loses by it."""
    return shared(tmp_path_factory, "learned-regression", _learned_regression)


def _learned_regression(folder: Path) -> TaskBundle:
    from export.bundle import ExportConfig, export_run
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    files = []
    for name, n, seed in (("train", 200, 0), ("test", 37, 1)):
        X, y = prices(n, seed)
        np.savez(folder / f"{name}.npz", X=X, y=y)
        files.append(folder / f"{name}.npz")
    run = train(RunSettings(DataConfig(data=str(files[0]), test_data=str(files[1]), task="regression"), LossConfig(),
                ModelConfig(width=0.5), TrainConfig(epochs=30, seed=0, progress=False)), out=folder / "run",
                log=lambda _: None)
    bundle = export_run(run.run_dir, ExportConfig(fmt="onnx"), log=lambda _: None)
    return TaskBundle("regression", run.run_dir, bundle, files[0], files[1])


def _labels(task: str, y: np.ndarray) -> np.ndarray:
    return CLASS_NAMES[y] if task == "multiclass" else y


def write_task_files(folder: Path, task: str, n_train: int = 48, n_test: int = 37, length: int = 16):
    """train.npz and test.npz for `task`; the test series come from another seed."""
    paths = []
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        X, y = make_task_data(task, n=n, length=length, seed=seed)
        path = folder / f"{name}.npz"
        np.savez(path, X=X, y=_labels(task, y))
        paths.append(path)
    return paths


def _build_bundle(folder: Path, task: str, fmt: str = "onnx", model: str = "fcn", ensemble: int = 1,
                  saliency: bool = False) -> TaskBundle:
    from export.bundle import ExportConfig, export_run
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    folder.mkdir(parents=True, exist_ok=True)
    train_file, test_file = write_task_files(folder, task)
    run = train(RunSettings(DataConfig(data=str(train_file), test_data=str(test_file), task=task, val_split=0.0),
                LossConfig(**LOSS_OPTIONS.get(task, {})), ModelConfig(name=model, width=0.25, ensemble=ensemble),
                TrainConfig(epochs=3, lr=1e-2, batch_size=8, seed=2, progress=False)), out=folder / "run",
                log=lambda _: None)
    bundle = export_run(run.run_dir, ExportConfig(fmt=fmt, saliency=saliency), log=lambda _: None)
    return TaskBundle(task, run.run_dir, bundle, train_file, test_file)


def make_recordings(task: str, count: int = 3, samples: int = 240, channels: int = 2, seed: int = 0):
    """Recordings of unequal lengths ((channels, T) each) with a label per time step that depends on the last 8
    samples of channel 0, so windows labelled by their last step are learnable."""
    rng = np.random.default_rng(seed)
    recordings, labels = [], []
    for r in range(count):
        T = samples + 17 * r
        x = rng.normal(size=(channels, T)).astype(np.float32)
        x[0] += np.repeat(rng.choice([-1.5, 0.0, 1.5], size=T // 40 + 1), 40)[:T]  # a level that changes every 40
        level = np.convolve(x[0], np.ones(8) / 8)[:T]  # causal mean of the last 8 samples
        if task == "regression":
            y = (10.0 * level + 100.0).astype(np.float64)
        else:
            y = CLASS_NAMES[np.digitize(level, [-0.75, 0.75])]
        recordings.append(x)
        labels.append(y)
    return recordings, labels


def write_recordings_csv(path: Path, recordings, labels, time: bool = True, order=None) -> Path:
    """One row per time step: recording, time, one column per channel (named ch0, ch1, ..., written in `order`,
    default 0, 1, ...), label."""
    channels = recordings[0].shape[0]
    order = list(range(channels)) if order is None else list(order)
    with open(path, "w") as f:
        f.write("recording," + ("time," if time else "") + ",".join(f"ch{c}" for c in order) + ",label\n")
        for r, (x, y) in enumerate(zip(recordings, labels)):
            for t in range(x.shape[1]):
                values = ",".join(repr(float(v)) for v in x[order, t])
                f.write(f"r{r}," + (f"{t * 0.01:.2f}," if time else "") + f"{values},{y[t]}\n")
    return path


WINDOW, STRIDE = 16, 4  # the windowed bundles' windows


@dataclass(frozen=True)
class WindowedBundle:
    task: str
    run_dir: Path
    bundle: Path
    train_file: Path
    recordings: list  # the training recordings, (channels, T) each
    labels: list  # their per-step labels


def eager_windows(run_dir: Path, recording: np.ndarray, length: int = WINDOW, stride: int = STRIDE) -> dict:
    """Eager PyTorch's outputs on the windows of one recording, cut here by a plain loop (not runtime.windows):
    {"start": [...], <output>: array}."""
    import torch

    from export.bundle import rebuild
    from export.graphs import as_tuple, model_graph
    from runtime.tasks import TASKS as RUNTIME_TASKS

    run = rebuild(run_dir)
    starts = list(range(0, recording.shape[1] - length + 1, stride))
    x = torch.from_numpy(np.stack([recording[:, s:s + length] for s in starts]).astype(np.float32))
    with torch.inference_mode():
        outputs = as_tuple(model_graph(run.model, run.task)(x))
    return {"start": starts, **{name: o.numpy() for name, o in zip(RUNTIME_TASKS[run.task].outputs, outputs)}}


def stream_case(run_dir: Path, recording: np.ndarray, chunkings: list[list[int]], atol: float = 1e-5,
                rtol: float = 1e-5, length: int = WINDOW, stride: int = STRIDE) -> dict:
    """A stream case in the golden.json layout every host kit checks: the recording, its chunkings, and eager's
    start sample and outputs for every window."""
    import torch

    from export.golden import tensor_json

    eager = eager_windows(run_dir, recording, length, stride)
    outputs = {"start": {"shape": [len(eager["start"])], "dtype": "int64", "data": eager.pop("start")}}
    outputs.update({name: tensor_json(torch.from_numpy(value)) for name, value in eager.items()})
    return {"stream": {"recording": tensor_json(torch.from_numpy(recording.astype(np.float32))),
                       "chunkings": chunkings, "outputs": outputs}, "atol": atol, "rtol": rtol}


@pytest.fixture(scope="session")
def windowed_bundles(tmp_path_factory) -> dict[str, WindowedBundle]:
    """fcn trained on windows of recordings (multiclass, regression), exported in every format."""
    return shared(tmp_path_factory, "windowed", _windowed_bundles)


def _windowed_bundles(root: Path) -> dict[str, WindowedBundle]:
    from export.bundle import ExportConfig, export_run
    from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from pipeline.training.run_config import RunSettings
    from pipeline.training.train import train

    out = {}
    for task in ("multiclass", "regression"):
        folder = root / task
        folder.mkdir()
        recordings, labels = make_recordings(task)
        data = write_recordings_csv(folder / "train.csv", recordings, labels)
        run = train(RunSettings(DataConfig(data=str(data), task=task, window=WINDOW, stride=STRIDE,
                                           recording_column="recording", time_column="time"),
                                LossConfig(), ModelConfig(width=0.25),
                                TrainConfig(epochs=3, lr=1e-2, batch_size=16, seed=2, progress=False)),
                    out=folder / "run", log=lambda _: None)
        bundle = export_run(run.run_dir, ExportConfig(fmt="all"), log=lambda _: None)
        out[task] = WindowedBundle(task, run.run_dir, bundle, data, recordings, labels)
    return out


STEPS = {"window": 16, "stride": 6}  # the shared per-step bundles' windows: every sample in two or three windows
# (task, model, labels) of the shared per-step bundles (--window-label each)
STEP_RUNS = (("multiclass", "fcn"), ("binary", "unet"), ("multilabel", "tcn"))


def step_labels(task: str, recordings: list) -> list:
    """Per-sample labels of `recordings` for `task` that a window can see: the level of channel 0 over the last 8
    samples (multiclass: three names; binary: above 0.75; multilabel: two 0/1 columns, above and below)."""
    out = []
    for x in recordings:
        level = np.convolve(x[0], np.ones(8) / 8)[:x.shape[1]]
        if task == "multiclass":
            out.append(CLASS_NAMES[np.digitize(level, [-0.75, 0.75])])
        elif task == "binary":
            out.append((level > 0.75).astype(np.int64))
        else:
            out.append(np.stack([level > 0.75, level < -0.75], axis=1).astype(np.int64))
    return out


def write_step_csv(path: Path, recordings: list, labels: list) -> Path:
    """One row per time step: recording, ch0, ch1, then the label column(s) (multilabel: up, down)."""
    multilabel = labels[0].ndim == 2
    with open(path, "w") as f:
        f.write("recording,ch0,ch1," + ("up,down" if multilabel else "label") + "\n")
        for r, (x, y) in enumerate(zip(recordings, labels)):
            for t in range(x.shape[1]):
                cells = ",".join(str(int(v)) for v in y[t]) if multilabel else str(y[t])
                f.write(f"r{r},{float(x[0, t])!r},{float(x[1, t])!r},{cells}\n")
    return path


@dataclass(frozen=True)
class StepBundle:
    task: str
    model: str
    run_dir: Path
    bundle: Path
    train_file: Path
    recordings: list
    labels: list


@pytest.fixture(scope="session")
def step_bundles(tmp_path_factory) -> dict[str, StepBundle]:
    """Per-step bundles (--window-label each), one per class task (STEP_RUNS), exported to ONNX and TorchScript."""
    def build(root: Path) -> dict[str, StepBundle]:
        from export.bundle import ExportConfig, export_run
        from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
        from pipeline.training.run_config import RunSettings
        from pipeline.training.train import train

        out = {}
        for task, model in STEP_RUNS:
            folder = root / task
            folder.mkdir()
            recordings, _ = make_recordings("multiclass", seed=3)
            labels = step_labels(task, recordings)
            data = write_step_csv(folder / "train.csv", recordings, labels)
            target = {"target_column": "up,down"} if task == "multilabel" else {}
            run = train(RunSettings(DataConfig(data=str(data), task=task, window_label="each",
                                               recording_column="recording", **STEPS, **target),
                                    LossConfig(), ModelConfig(name=model, width=0.125),
                                    TrainConfig(epochs=3, lr=1e-2, batch_size=16, seed=2, progress=False)),
                        out=folder / "run", log=lambda _: None)
            bundle = export_run(run.run_dir, ExportConfig(fmt="onnx,torchscript"), log=lambda _: None)
            out[task] = StepBundle(task, model, run.run_dir, bundle, data, recordings, labels)
        return out

    return shared(tmp_path_factory, "steps", build)


def eager_steps(run_dir: Path, recording: np.ndarray, length: int = STEPS["window"],
                stride: int = STEPS["stride"]) -> dict:
    """Eager PyTorch's per-step probabilities on the windows of one recording, stitched here by a plain loop (not
    runtime.segments): windows every `stride` and, when they stop short of the end, one more ending at the last
    sample that answers only the samples after them; each sample's mean over its windows, and its label (the
    most probable class, or probability > 0.5). {"sample", "probabilities" (n, K), "label"}."""
    import torch

    from export.bundle import rebuild
    from export.graphs import as_tuple, model_graph

    run = rebuild(run_dir)
    T = recording.shape[1]
    starts = list(range(0, T - length + 1, stride))
    x = torch.from_numpy(np.stack([recording[:, s:s + length] for s in starts + [T - length]]).astype(np.float32))
    with torch.inference_mode():
        probabilities = as_tuple(model_graph(run.model, run.task)(x))[1].double().numpy()  # (windows, K, W)
    sums, counts = {}, {}
    for i, s in enumerate(starts):
        for j in range(length):
            sums[s + j] = sums.get(s + j, 0.0) + probabilities[i, :, j]
            counts[s + j] = counts.get(s + j, 0) + 1
    covered = starts[-1] + length
    for t in range(covered, T):  # the tail window: only the samples no other window covers
        sums[t], counts[t] = probabilities[-1, :, t - (T - length)], 1
    sample = sorted(sums)
    mean = np.array([sums[t] / counts[t] for t in sample]).astype(np.float32)
    label = mean.argmax(axis=1) if run.task == "multiclass" else (mean > 0.5).astype(np.int64)
    return {"sample": np.array(sample, dtype=np.int64), "probabilities": mean, "label": label.astype(np.int64)}


def steps_case(run_dir: Path, recording: np.ndarray, chunkings: list[list[int]], atol: float = 1e-5,
               rtol: float = 1e-5) -> dict:
    """A per-step stream case in the golden.json layout every host kit checks: the recording, its chunkings, and
    eager's stitched samples (eager_steps)."""
    import torch

    from export.golden import tensor_json

    eager = eager_steps(run_dir, recording)
    return {"steps": {"recording": tensor_json(torch.from_numpy(recording.astype(np.float32))), "chunkings": chunkings,
                      "outputs": {k: tensor_json(torch.from_numpy(v)) for k, v in eager.items()}},
            "atol": atol, "rtol": rtol}


FORECAST = {"window": 24, "horizon": 6, "season": 6, "stride": 3}  # the shared forecaster's windows


def seasonal_npz(path: Path, recordings: int = 4, samples: int = 150, seed: int = 0) -> Path:
    """Recordings (R, 2, T) at levels from 10 to 1000: channel 0 a 6-sample season with noise, channel 1 a
    covariate that leads it, as an .npz (X only: forecasting reads every channel)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    X = np.empty((recordings, 2, samples), dtype=np.float32)
    for r in range(recordings):
        level = 10.0 * 100.0 ** (r / max(recordings - 1, 1))
        X[r, 0] = level * (1 + 0.3 * np.sin(2 * np.pi * t / 6) + 0.02 * rng.normal(size=samples))
        X[r, 1] = np.sin(2 * np.pi * (t + 2) / 6) + 0.1 * rng.normal(size=samples)
    np.savez(path, X=X)
    return path


def eager_rollout(run_dir: Path, history: np.ndarray, steps: int) -> np.ndarray:
    """Eager PyTorch's rollout, written here as a plain loop (not runtime.forecast): the last window's forecast, its
    median appended to the window, again until `steps` samples; (targets, steps, quantiles)."""
    import torch

    from export.bundle import rebuild

    run = rebuild(run_dir)
    cfg = run.cfg
    t, h, q = len(cfg.targets), cfg.horizon, cfg.quantiles
    window, parts = torch.from_numpy(history[:, -cfg.length:]).float(), []
    with torch.no_grad():
        while sum(p.shape[1] for p in parts) < steps:
            out = run.model(window[None])[0].reshape(t, h, q)
            parts.append(out.numpy())
            ahead = torch.empty(history.shape[0], h)
            ahead[list(cfg.targets)] = out[:, :, q // 2]
            window = torch.cat([window, ahead], dim=1)[:, -cfg.length:]
    return np.concatenate(parts, axis=1)[:, :steps]


@dataclass
class ForecastBundle:
    run_dir: Path
    bundle: Path
    data: Path  # the training recordings (.npz)


@pytest.fixture(scope="session")
def forecast_bundle(tmp_path_factory) -> ForecastBundle:
    """A quantile tcn forecasting both channels of seasonal_npz (so it rolls out), ONNX and TorchScript."""
    def build(folder: Path) -> ForecastBundle:
        from export.bundle import ExportConfig, export_run
        from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
        from pipeline.training.run_config import RunSettings
        from pipeline.training.train import train

        data = seasonal_npz(folder / "recordings.npz")
        run = train(RunSettings(DataConfig(data=str(data), task="forecast", **FORECAST), LossConfig(name="quantile"),
                                ModelConfig(name="tcn", width=0.125), TrainConfig(epochs=2, batch_size=8, seed=0,
                                                                                  progress=False)),
                    out=folder / "run", log=lambda _: None)
        return ForecastBundle(run.run_dir, export_run(run.run_dir, ExportConfig(fmt="onnx,torchscript"),
                                                      log=lambda _: None), data)

    return shared(tmp_path_factory, "forecast", build)


@pytest.fixture(scope="session")
def build_bundle(tmp_path_factory):
    """Train and export a small run of `task`: build_bundle(task, fmt=, model=), once per session for the same
    arguments (tests read it; one that changes a bundle copies it first)."""

    def build(task: str, fmt: str = "onnx", model: str = "fcn") -> TaskBundle:
        return shared(tmp_path_factory, f"{task}-{fmt}-{model}",
                      lambda folder: _build_bundle(folder, task, fmt, model))

    return build


@pytest.fixture(scope="session")
def task_bundles(tmp_path_factory) -> dict[str, TaskBundle]:
    """Every task's bundle; multiclass and regression (the host kits' bundles) in both formats, the rest ONNX."""
    both = ("multiclass", "regression")
    return shared(tmp_path_factory, "bundles", lambda root: {
        task: _build_bundle(root / task, task, fmt="all" if task in both else "onnx") for task in TASKS})


ENSEMBLE_MEMBERS = 3


@pytest.fixture(scope="session")
def ensemble_bundles(tmp_path_factory) -> dict[str, TaskBundle]:
    """A 3-member fcn ensemble of each host task (multiclass, regression) and binary, exported in both formats."""
    return shared(tmp_path_factory, "ensembles", lambda root: {
        task: _build_bundle(root / task, task, fmt="all", ensemble=ENSEMBLE_MEMBERS)
        for task in ("multiclass", "regression", "binary")})


@pytest.fixture(scope="session")
def saliency_bundles(tmp_path_factory) -> dict[str, TaskBundle]:
    """export --saliency of an fcn (multiclass: the predicted class's map) and a 3-member resnet ensemble
    (multilabel: a map per label), both formats."""
    return shared(tmp_path_factory, "saliency", lambda root: {
        "multiclass": _build_bundle(root / "multiclass", "multiclass", fmt="all", saliency=True),
        "multilabel": _build_bundle(root / "multilabel", "multilabel", fmt="all", model="resnet",
                                    ensemble=ENSEMBLE_MEMBERS, saliency=True)})


# each kernel model's bundle in both formats: a classification and a regression among them
KERNEL_BUNDLES = {"minirocket": "multiclass", "hydra": "regression", "multirocket-hydra": "multiclass"}


@pytest.fixture(scope="session")
def kernel_bundles(tmp_path_factory) -> dict[str, TaskBundle]:
    """One bundle per kernel model (pipeline.models.kernels; ridge head: the default for small sets), ONNX and TorchScript."""
    return shared(tmp_path_factory, "kernels", lambda root: {
        model: _build_bundle(root / model, task, fmt="all", model=model) for model, task in KERNEL_BUNDLES.items()})


@pytest.fixture(scope="session")
def aoti_bundles(task_bundles, tmp_path_factory) -> dict[str, TaskBundle]:
    """The host kits' runs (multiclass, regression) exported again as torch.export programs and AOTInductor
    packages only: the session's AOTInductor compiles (a model and a loss each), shared by every test."""
    from export.bundle import ExportConfig, export_run

    def build(_folder: Path) -> dict[str, TaskBundle]:
        out = {}
        for task in ("multiclass", "regression"):
            tb = task_bundles[task]
            bundle = export_run(tb.run_dir, ExportConfig(fmt="pt2,aoti"), out=tb.run_dir.parent / "aoti-bundle",
                                log=lambda _: None)
            out[task] = TaskBundle(task, tb.run_dir, bundle, tb.train_file, tb.test_file)
        return out

    return shared(tmp_path_factory, "aoti", build)


@pytest.fixture(scope="session")
def int8_bundles(task_bundles, tmp_path_factory) -> dict[str, TaskBundle]:
    """Every task's run exported again with --quantize int8 (ONNX only). The runs are tiny (3 epochs on 48
    series, 37 test series: one series is 2.7 points), so the drop limit is wide; the default limit and its
    refusal are tested on their own."""
    from export.bundle import ExportConfig, export_run

    def build(_folder: Path) -> dict[str, TaskBundle]:
        out = {}
        for task, tb in task_bundles.items():
            bundle = export_run(tb.run_dir, ExportConfig(fmt="onnx", quantize="int8", max_metric_drop=100.0),
                                out=tb.run_dir.parent / "int8-bundle", log=lambda _: None)
            out[task] = TaskBundle(task, tb.run_dir, bundle, tb.train_file, tb.test_file)
        return out

    return shared(tmp_path_factory, "int8", build)


def subprocess_env() -> dict[str, str]:
    """The environment for `pipeline` child processes: one thread each (the same float sums in every
    process), and never inside a torchrun job the test itself might run under."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def run_pipeline(args, cwd) -> subprocess.CompletedProcess:
    """`pipeline ARGS` in a new process, as a user runs it; output captured as text."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=subprocess_env(), timeout=600)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def background(command: list[str], url: str, cwd: Path, env: dict | None = None, timeout: float = 180):
    """A server process, started in its own process group, stopped (with its workers) when the block ends;
    yields once `url` answers 200."""
    import urllib.request

    log = open(Path(cwd) / f"server-{free_port()}.log", "w+")
    proc = subprocess.Popen(command, cwd=cwd, env=env or subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(url, timeout=5).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"{' '.join(command)} did not answer at {url}:\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def mlflow_command() -> str:
    return str(Path(sys.executable).parent / "mlflow")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on localhost: sqlite backend and artifact store in a temporary folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with background([mlflow_command(), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
                     "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port",
                     str(port), "--workers", "1"], f"{url}/health", folder):
        yield url


@dataclass(frozen=True)
class Keys:
    """PEM key files for the signature tests: `name.key.pem` / `name.pub.pem` for p256, other (another P-256),
    p384 and p521; rsa.pub.pem and ed25519.pub.pem (key types bundles are not signed with)."""

    folder: Path

    def private(self, name: str = "p256") -> Path:
        return self.folder / f"{name}.key.pem"

    def public(self, name: str = "p256") -> Path:
        return self.folder / f"{name}.pub.pem"


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Keys:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    folder = tmp_path_factory.mktemp("keys")
    made = {"p256": ec.generate_private_key(ec.SECP256R1()), "other": ec.generate_private_key(ec.SECP256R1()),
            "p384": ec.generate_private_key(ec.SECP384R1()), "p521": ec.generate_private_key(ec.SECP521R1()),
            "rsa": rsa.generate_private_key(65537, 2048), "ed25519": ed25519.Ed25519PrivateKey.generate()}
    for name, key in made.items():
        (folder / f"{name}.key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (folder / f"{name}.pub.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return Keys(folder)


@pytest.fixture(scope="session")
def signed_bundles(task_bundles, keys, tmp_path_factory) -> dict[str, Path]:
    """The host kits' bundles (multiclass, regression; ONNX and TorchScript), copied and signed with keys.p256."""
    import shutil

    from export.signing import sign_bundle

    out = {}
    for task in ("multiclass", "regression"):
        copy = tmp_path_factory.mktemp(f"signed-{task}") / "bundle"
        shutil.copytree(task_bundles[task].bundle, copy)
        sign_bundle(copy, keys.private())
        out[task] = copy
    return out


# The longest tests start first, so that no worker is left with one of them when the others are done (their
# durations: `--durations=30` at the end of every run); then every other slow test, then the rest, each group in
# collection order.
LONGEST_FIRST = (
    "tests/test_readme.py::test_every_readme_command_runs",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        if any(item.nodeid.startswith(prefix) for prefix in LONGEST_FIRST):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: collection order within each group
