"""Load, check and encode the train/val/test files of a run, reporting every problem at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pipeline.settings.config import AUTO_VAL_FRACTION, AUTO_VAL_MIN_SERIES, MODELS, PER_STEP_MODELS, DataConfig
from pipeline.data.prepare import (LabelEncoding, check_classes, check_series, encode_labels, fit_encoding,
                                   infer_task, stratified_split)
from pipeline.data.readers import SeriesData, read_series
from pipeline.data.recordings import cut_forecast_windows, cut_windows, read_recordings, target_channels
from pipeline.data.synthetic import waveforms
from pipeline.errors import DataError
from runtime.inputs import plural
from runtime.segments import step_targets
from runtime.tasks import TASKS


@dataclass
class Split:
    """Series of one split: the array (possibly memory-mapped), which rows, and encoded targets."""

    X: np.ndarray  # (N_file, C, L) float32
    rows: np.ndarray  # indices into X that belong to this split
    targets: np.ndarray  # (len(rows),) int64 or (len(rows), K) float32; per step: (len(rows)[, K], W)
    source: str
    # --window-label each: every sample's encoded label, aligned with the recordings X cuts windows from (the
    # end-of-run report stitches whole recordings, the samples after the last window included)
    sample_targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Datasets:
    encoding: LabelEncoding
    train: Split
    val: Split | None
    test: Split | None
    notes: list[str] = field(default_factory=list)  # what was inferred, said to the user
    csv_labels: dict | None = None  # a .csv training file's label columns and width, for `pipeline predict`
    window: dict | None = None  # --window: length, stride, label rule, how validation was split, the .csv columns

    @property
    def channels(self) -> int:
        return int(self.train.X.shape[1])

    @property
    def length(self) -> int:
        return int(self.train.X.shape[2])


def _read(path: str | None, cfg: DataConfig, channels: tuple[str, ...] = ()) -> SeriesData:
    """One file's series; recordings cut into windows, their .csv columns matched by name to `channels` (the
    training file's, for --val-data and --test-data)."""
    if cfg.window is not None:
        if path is None:
            raise DataError(["--window cuts long recordings: pass them with --data (a per-sample .csv, an .npz of "
                             "recordings, or a folder of them); the embedded waveforms are already cut"])
        forecast = cfg.task == "forecast"  # every column is a signal, the targets among them
        recordings = read_recordings(path, cfg.target_column, cfg.recording_column, cfg.time_column,
                                     labels=not forecast, channels=channels)
        if forecast:
            targets, _ = target_channels(recordings, cfg.forecast_columns)
            return cut_forecast_windows(recordings, cfg.window, cfg.window_stride, cfg.horizon, targets)
        return cut_windows(recordings, cfg.window, cfg.window_stride, cfg.window_label)
    if path is None:
        return waveforms()
    return read_series(path, cfg.target_column, pad=cfg.pad)


def load_datasets(cfg: DataConfig, model_name: str, seed: int, encoding: LabelEncoding | None = None,
                  given: dict[str, SeriesData] | None = None) -> Datasets:
    """Read every file (or take the arrays `given` per split: train, val, test), infer or check the task,
    validate everything, split validation data."""
    problems: list[str] = []
    if given and cfg.window is not None:
        raise DataError(["window: cuts recordings read from files (--data); cut arrays into windows yourself, or "
                         "save them as an .npz of recordings, X=(recordings, channels, samples)"])
    files = {role: given[role] for role in ("train", "val", "test") if role in (given or {})}
    for role, path in (("train", cfg.data), ("val", cfg.val_data), ("test", cfg.test_data)):
        if role in files or (role != "train" and path is None):
            continue
        train_windows = files["train"].windows if "train" in files else None
        try:
            files[role] = _read(path, cfg, train_windows.recordings.channel_names if train_windows else ())
        except DataError as exc:
            problems.extend(exc.problems)
    if "train" not in files:
        raise DataError(problems)
    train = files["train"]
    notes = []
    if train.windows is not None:
        recs = train.windows.recordings
        labelled = f"labelled by the {cfg.window_label} time step" if recs.per_step else "each labelled by its recording"
        if cfg.window_label == "each" and recs.per_step:
            labelled = "each labelled at every time step"
        if cfg.task == "forecast":
            _, names = target_channels(recs, cfg.forecast_columns)
            labelled = f"each forecasting the next {plural(cfg.horizon, 'sample')} of {', '.join(names)}"
        notes.append(f"windows: {train.n} of {cfg.window} samples every {cfg.window_stride} from "
                     f"{plural(recs.count, 'recording')} of {train.source}, {labelled}")
    if cfg.data is None and not given:
        notes.append(f"data: {train.source}, {train.n} series of length {train.X.shape[2]}")
    if encoding is None:
        task = cfg.task
        if task is None:
            task, reason = infer_task(train)
            notes.append(f"task: {task} (inferred: {reason}; pass --task to choose)")
        encoding = fit_encoding(task, train)
    fixed = None if MODELS[model_name].any_length else model_name
    targets = {}
    for role, data in files.items():
        reference = None if role == "train" else train
        check_series(data, problems, channels=reference and reference.X.shape[1],
                     length=reference and reference.X.shape[2], fixed_length_model=fixed)
        targets[role] = encode_labels(encoding, data, problems)
    if targets["train"] is not None:
        check_classes(encoding, train, targets["train"], problems)
    if cfg.window is not None and cfg.window_label == "majority" and not TASKS[encoding.task].has_classes:
        problems.append(f"--window-label majority picks the most frequent label, which a --task {encoding.task} "
                        "target does not have; use last (causal) or center")
    if cfg.window is not None and cfg.window_label == "each":
        problems.extend(_step_problems(encoding.task, model_name, files))
        if not problems:  # each window's targets: its samples' encoded labels (runtime.segments layout)
            per_sample = dict(targets)
            targets = {role: step_targets(targets[role], files[role].windows.first, cfg.window) for role in files}
    shortest = MODELS[model_name].min_length
    if train.X.shape[2] < shortest:
        problems.append(f"{train.source}: series of length {train.X.shape[2]} are too short for --model "
                        f"{model_name}, which needs {shortest} or more (--model linear and mlp take any length, "
                        "even one value per series)")
    if problems:
        raise DataError(problems)
    all_rows = lambda d: np.arange(d.n)  # noqa: E731
    if "val" in files:
        train_rows = all_rows(train)
        val = Split(files["val"].X, all_rows(files["val"]), targets["val"], files["val"].source)
    elif train.windows is not None:
        train_rows, val, how = _hold_out_windows(cfg, train, targets["train"], encoding.task, seed, notes,
                                                 MODELS[model_name].kernel)
    else:
        train_rows, val = _hold_out(cfg, train, targets["train"], encoding.task, seed, notes,
                                    kernel=MODELS[model_name].kernel)
    test = None
    if "test" in files:
        test = Split(files["test"].X, all_rows(files["test"]), targets["test"], files["test"].source)
    train_split = Split(train.X, train_rows, targets["train"][train_rows], train.source)
    if cfg.window is not None and cfg.window_label == "each":
        val = val and dataclasses.replace(val, sample_targets=per_sample["val" if "val" in files else "train"])
        test = test and dataclasses.replace(test, sample_targets=per_sample["test"])
    if len(train_split) < 2:
        raise DataError([f"{train.source}: only {len(train_split)} series left for training; "
                         "training needs at least 2 (lower --val-split)"])
    csv_labels = {"columns": list(train.label_columns), "width": train.columns} if train.label_columns else None
    window = None
    if cfg.window is not None:
        if "val" in files:
            how = f"by recording: the recordings of {files['val'].source} (--val-data)"
        names = list(train.windows.recordings.channel_names) or None  # a .csv's header names, in channel order
        window = {"length": cfg.window, "stride": cfg.window_stride, "label": cfg.window_label, "split": how,
                  "recording_column": cfg.recording_column, "time_column": cfg.time_column,
                  "channel_columns": names}
        if cfg.task == "forecast":
            targets, target_names = target_channels(train.windows.recordings, cfg.forecast_columns)
            window.update(horizon=cfg.horizon, targets=targets, target_names=target_names, season=cfg.season)
        window = {k: v for k, v in window.items() if v is not None}
    return Datasets(encoding, train_split, val, test, notes, csv_labels, window)


def _step_problems(task: str, model_name: str, files: dict[str, SeriesData]) -> list[str]:
    """--window-label each: a class task, a model that scores every step, labels per time step."""
    problems = []
    if not TASKS[task].labels_steps:
        problems.append(f"--window-label each labels every time step with a class; --task {task} has no classes "
                        "(use --task binary, multiclass or multilabel, or another --window-label)")
    if not MODELS[model_name].per_step:
        why = "reduces a window to features" if MODELS[model_name].kernel else "mixes every step of a window"
        problems.append(f"--window-label each: --model {model_name} {why} and cannot label each time step; choose "
                        f"one of {', '.join(PER_STEP_MODELS)}")
    for data in files.values():
        if not data.windows.recordings.per_step:
            problems.append(f"{data.labels_text}: one label per recording; --window-label each needs a label per "
                            "time step (a label column in a per-sample .csv, or y shaped (recordings, samples))")
    return problems


def _hold_out_windows(cfg: DataConfig, train: SeriesData, targets: np.ndarray, task: str, seed: int,
                      notes: list[str], kernel: bool) -> tuple[np.ndarray, Split | None, str]:
    """Validation windows held out of recordings without leakage: whole recordings (stratified by a recording's
    class, when recordings have one), or, from a single recording, its last --val-split of samples with a gap of
    one window before it, so no training window shares a sample with a validation window."""
    windows = train.windows
    recs, length = windows.recordings, windows.length
    fraction = cfg.val_split
    if fraction is None and kernel:
        train_rows, val = _hold_out(cfg, train, targets, task, seed, notes, kernel=True)
        return train_rows, val, "none (kernel models choose the ridge penalty by leave-one-out)"
    fraction = AUTO_VAL_FRACTION if fraction is None else fraction
    if fraction == 0:
        notes.append("validation: none (--val-split 0); the best checkpoint is chosen by training loss")
        return np.arange(train.n), None, "none (--val-split 0)"
    if recs.count >= 2:
        by_recording = targets[np.searchsorted(windows.recording, np.arange(recs.count))]
        stratify = TASKS[task].has_classes and not recs.per_step
        keep, held = stratified_split(by_recording, fraction, seed, stratify)
        if len(keep) == 0:
            keep, held = held[:1], held[1:]
        val_rows = np.flatnonzero(np.isin(windows.recording, held))
        named = ", ".join(recs.ids[r] for r in held[:5]) + (", ..." if len(held) > 5 else "")
        how = f"by recording: {len(held)} of {recs.count} recordings held out ({named}), --val-split {fraction:g}"
    else:
        samples = int(recs.lengths()[0])
        cut = int(round(samples * (1 - fraction)))
        val_rows = np.flatnonzero(windows.starts >= cut + length)  # a gap of one window after the cut
        if cut < length or not len(val_rows):
            needs = int(np.ceil(max(2 * length / fraction, length / (1 - fraction))))
            raise DataError([f"{recs.names[0]}: one recording of {samples} samples is too short to hold out its last "
                             f"{fraction:g} for validation after a gap of one --window {length} (that needs about "
                             f"{needs} samples); pass --val-data, or --val-split 0"])
        ahead = f" and their {windows.horizon} forecast samples" if windows.horizon else ""
        how = (f"by time: the last {fraction:g} of the one recording (samples {cut + length} on) after a gap of one "
               f"window; training windows{ahead} end by sample {cut}")
        train_rows = np.flatnonzero(windows.starts + length + windows.horizon <= cut)
        notes.append(f"validation: {len(val_rows)} windows held out {how}")
        return train_rows, Split(train.X, val_rows, targets[val_rows], f"{train.source} (validation split)"), how
    train_rows = np.setdiff1d(np.arange(train.n), val_rows)
    notes.append(f"validation: {len(val_rows)} windows held out {how}")
    return train_rows, Split(train.X, val_rows, targets[val_rows], f"{train.source} (validation split)"), how


def _hold_out(cfg: DataConfig, train: SeriesData, targets: np.ndarray, task: str, seed: int,
              notes: list[str], kernel: bool = False) -> tuple[np.ndarray, Split | None]:
    """The training rows and the validation split held out of the training file (--val-split, or the default
    for the set's size and task), with a note saying which and why."""
    stratify = TASKS[task].has_classes
    fraction = cfg.val_split
    if fraction is None and kernel:
        notes.append("validation: none by default for the kernel models: the ridge head chooses its regularisation "
                     "by leave-one-out cross-validation on every training series, the linear head stops on the "
                     "training loss (pass --val-split or --val-data to hold data out)")
        return np.arange(train.n), None
    if fraction is None:
        fraction = AUTO_VAL_FRACTION if train.n >= AUTO_VAL_MIN_SERIES else TASKS[task].small_set_val_split
    train_rows, val_rows = stratified_split(targets, fraction, seed, stratify)
    if len(val_rows):
        small = cfg.val_split is None and train.n < AUTO_VAL_MIN_SERIES
        notes.append(f"validation: {len(val_rows)} of {train.n} series held out "
                     f"({'stratified ' if stratify else ''}--val-split {fraction}"
                     + (f"; {task} sets of fewer than {AUTO_VAL_MIN_SERIES} series hold out {fraction:.0%}, as "
                        "selecting by training loss keeps the most overfit epoch" if small else "") + ")")
        return train_rows, Split(train.X, val_rows, targets[val_rows], f"{train.source} (validation split)")
    if cfg.val_split is None:
        notes.append(f"validation: none, as the training data has fewer than {AUTO_VAL_MIN_SERIES} series; "
                     "the best checkpoint is chosen by training loss (pass --val-split or --val-data to "
                     "hold data out)")
    else:
        notes.append("validation: none (--val-split 0); the best checkpoint is chosen by training loss")
    return train_rows, None
