"""The Python API: `pipeline.fit` trains on arrays (or files) with every setting the command line has, under
the same names (the flag without its dashes: model, loss, huber_delta, epochs, lr, ...), the same defaults and
the same one-line errors (PipelineError, naming the array and its rows); it returns a `Run`."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.data.arrays import ARRAY_NAMES, series_from_arrays
from pipeline.errors import DataError, PipelineError
from pipeline.training.run_config import RunConfig, new_run_settings
from pipeline.training.run_folder import HISTORY, MEMBERS_DIR, RunFolder
from pipeline.settings.fields import api_name, flagged, from_python
from runtime.inputs import InputError, SeriesSpec, batch_rows, batches
from runtime.manifest import MODEL_INPUT, SALIENCY_OUTPUT, InputSpec, LengthSpec

CONFIGS = (DataConfig, LossConfig, ModelConfig, TrainConfig)
SETTING_NAMES = tuple(api_name(f, flag) for cls in CONFIGS for f, flag in flagged(cls))


def _quiet(_: str) -> None:
    pass


@dataclass
class Run:
    """A trained run: its config, per-epoch history, metrics, the eager model (eval mode, CPU) and its folder
    (`out`, or a temporary folder removed with the Run when `out` was None)."""

    run_dir: Path
    config: RunConfig
    history: list[dict]
    metrics: dict
    model: Any  # pipeline.models.build.SequenceModel
    _cleanup: Any = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.config.task

    def predict(self, X, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """The named outputs of series X ((N, L) or (N, C, L)), as `runtime.Bundle.predict` gives them, from the
        eager model."""
        return predict_outputs(self.model, self.config, X, batch_size)

    def saliency(self, X, batch_size: int | None = None) -> np.ndarray:
        """Where the model looked: the saliency maps of series X, as `pipeline export --saliency` puts them in
        the bundle ((N, L): the predicted class's or the one output's; (N, outputs, L) for several)."""
        return predict_outputs(self.model, self.config, X, batch_size, saliency=True)[SALIENCY_OUTPUT]

    def export(self, out, formats: str = "onnx", quantize: str | None = None, force: bool = False,
               log: Callable[[str], None] = _quiet, **settings) -> Path:
        """Export and verify the run exactly as `pipeline export` does (the same ExportConfig settings:
        opset, atol, rtol, device, calibration_data, max_metric_drop); returns the bundle folder."""
        from export.bundle import export_run
        from export.options import ExportConfig

        given = {"format": formats, "quantize": quantize, **settings}
        kwargs = from_python(ExportConfig, given)
        if given:
            raise PipelineError(f"export: unknown setting {', '.join(sorted(given))}; the settings are "
                                f"{', '.join(api_name(f, flag) for f, flag in flagged(ExportConfig))}")
        return export_run(self.run_dir, ExportConfig(**kwargs), out=Path(out), force=force, log=log)


def predict_outputs(model, config: RunConfig, X, batch_size: int | None = None,
                    double: bool = False, saliency: bool = False) -> dict[str, np.ndarray]:
    """The task's named outputs of the eager model for series X, checked as the runtime checks a bundle's input
    (channels, lengths, NaN), in batches. `double`: computed in float64 by a copy of the model, so each
    series' outputs do not depend on the batch it is in (float32 kernels may sum in another order per batch
    size, at the 1e-7 level). `saliency`: the maps after them (refused for models without exact ones)."""
    import torch

    from export.graphs import as_tuple, model_graph
    from pipeline.models.build import check_saliency
    from runtime.tasks import TASKS

    cfg = config.model
    if saliency:
        check_saliency(model, cfg.name)
    length = LengthSpec(fixed=cfg.length) if cfg.fixed_length else LengthSpec(min=1, max=None, trained=cfg.length)
    spec = SeriesSpec(InputSpec(MODEL_INPUT, "float32", ["batch", "channels", "length"], cfg.in_channels, length))
    try:
        x = spec.check(X, "X")
        if double:
            model = copy.deepcopy(model).double()
        graph = model_graph(model, config.task, saliency)
        parts: list[tuple[np.ndarray, ...]] = []
        with torch.inference_mode():
            for _, batch in batches(x, batch_rows(x, batch_size), "X"):
                inputs = torch.from_numpy(batch if batch.flags.writeable else batch.copy())  # a read-only input
                inputs = inputs.double() if double else inputs
                parts.append(tuple(o.numpy() for o in as_tuple(graph(inputs))))
    except InputError as exc:
        raise PipelineError(str(exc)) from None
    names = TASKS[config.task].outputs + ((SALIENCY_OUTPUT,) if saliency else ())
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def run_settings(settings: dict[str, Any]):
    """The validated RunSettings of the keywords (the CLI's flags without dashes); an unknown one is refused."""
    given = dict(settings)
    parts = [from_python(cls, given) for cls in CONFIGS]
    if given:
        raise PipelineError(f"unknown setting {', '.join(repr(k) for k in sorted(given))}; the settings are the "
                            f"command line's flags without dashes: {', '.join(SETTING_NAMES)}")
    return new_run_settings(*parts)


def _arrays(X, y, X_val, y_val, X_test, y_test, settings: dict) -> dict | None:
    """The splits given as arrays, checked; None when training reads files."""
    given = {"train": (X, y), "val": (X_val, y_val), "test": (X_test, y_test)}
    if X is None:
        extra = [ARRAY_NAMES[s][i] for s, pair in given.items() for i, a in enumerate(pair) if a is not None]
        if extra:
            raise PipelineError(f"{', '.join(extra)}: given without X; pass the training series as X (and y), or "
                                "every split as files (data=, val_data=, test_data=)")
        return None
    for key in ("data", "val_data", "test_data"):
        if settings.get(key) is not None:
            raise PipelineError(f"X and {key}= both give series; pass arrays (X, y, X_val, y_val, X_test, y_test) "
                                "or files, not both")
    if X_val is not None and settings.get("val_split") is not None:
        raise PipelineError("X_val and val_split both choose validation data; pass only one")
    problems, arrays = [], {}
    for split, (x, labels) in given.items():
        if x is None and labels is not None:
            problems.append(f"{ARRAY_NAMES[split][1]}: given without {ARRAY_NAMES[split][0]}; pass both")
            continue
        if x is None:
            continue
        try:
            arrays[split] = series_from_arrays(x, labels, split)
        except PipelineError as exc:
            problems.extend(getattr(exc, "problems", [str(exc)]))
    if problems:
        raise DataError(problems)
    return arrays


@contextlib.contextmanager
def _bars(progress: bool | None):
    from pipeline.training.trainer import SHOW_BARS

    if progress is not None and not isinstance(progress, bool):
        raise PipelineError(f"progress={progress!r}: must be True, False or None (on a terminal only)")

    token = SHOW_BARS.set(progress)
    try:
        yield
    finally:
        SHOW_BARS.reset(token)


def fit(X=None, y=None, *, X_val=None, y_val=None, X_test=None, y_test=None, out=None, force: bool = False,
        progress: bool | None = None, log: Callable[[str], None] | None = print, **settings) -> Run:
    """Train a model and return the `Run`.

    X: series, (N, L) or (N, C, L); y: class names or labels (N,), a multi-hot (N, K) matrix, or values (N,) or
    (N, K). Or no arrays and files: data=, val_data=, test_data= (as --data ...). Every other keyword is a flag of
    `pipeline train` without its dashes (model="inception", ensemble=5, loss="huber", huber_delta=0.5,
    class_weights="balanced", epochs=100, lr=1e-3, seed=0, device="cpu", ...), with the same defaults.

    out=None keeps the run in a temporary folder removed with the Run; out=FOLDER writes the run folder
    `pipeline train --out FOLDER` writes (resumable with `pipeline train --resume FOLDER`). Progress bars:
    progress=True shows them, False hides them, None shows them on a terminal only (as the CLI). log=None is
    quiet."""
    from pipeline.training.train import train

    log = log or _quiet
    arrays = _arrays(X, y, X_val, y_val, X_test, y_test, settings)
    new = run_settings(settings)
    temporary = Path(tempfile.mkdtemp(prefix="pipeline-fit-")) if out is None else None
    try:
        with _bars(progress):
            result = train(new, out=Path(out) if temporary is None else temporary / "run", force=force, log=log,
                           arrays=arrays)
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    return _load(result.run_dir, result.metrics, temporary, result.history or None)


def load_run(run_dir) -> Run:
    """A finished run folder (from `pipeline train` or `fit(out=...)`) as a Run."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise PipelineError(f"{run_dir}: has no finished run (no metrics.json); pass a folder `pipeline train` "
                            "finished")
    return _load(run_dir, json.loads(metrics_path.read_text()), None)


def _load(run_dir: Path, metrics: dict, cleanup: Path | None, history: list[dict] | None = None) -> Run:
    from export.bundle import rebuild

    config = RunFolder(run_dir).read_config()
    model = rebuild(run_dir).model
    run = Run(run_dir, config, history or _history(run_dir, config), metrics, model)
    if cleanup is not None:
        run._cleanup = weakref.finalize(run, shutil.rmtree, str(cleanup), True)
    return run


def _history(run_dir: Path, config: RunConfig) -> list[dict]:
    """The per-epoch rows of history.csv (an ensemble's: every member's, each row with its member)."""
    import csv

    def rows(path: Path, extra: dict) -> list[dict]:
        with open(path, newline="") as f:
            return [{**extra, **{k: _number(v) for k, v in row.items()}} for row in csv.DictReader(f)]

    if config.model.ensemble == 1:
        return rows(run_dir / HISTORY, {})
    return [r for i in range(config.model.ensemble)
            for r in rows(run_dir / MEMBERS_DIR / f"member-{i}" / HISTORY, {"member": i})]


def _number(text: str):
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
