"""Score data files with an exported bundle: the library side of `pipeline predict`, `evaluate`, `verify`.

Only numpy, onnxruntime and our readers are needed, so these work in a runtime-only install; torch
is imported for the optional eager re-check of `verify` alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime
import runtime.bundle
import runtime.windows
from runtime import segments
from pipeline.data.readers import SeriesData, peek_csv_header, read_series
from pipeline.data.recordings import cut_forecast_windows, cut_windows, read_recordings
from pipeline.errors import TRAIN_EXTRA_HINT, DataError, PipelineError
from pipeline.files import check_output_file, write_atomic
from pipeline.settings.scoring_config import EvaluateConfig, PredictConfig, VerifyConfig
from runtime.compare import Row
from runtime.inputs import number_text
from runtime.golden import check_golden, int8_rows, read_golden
from runtime.manifest import MODEL_ONNX, SALIENCY_OUTPUT
from runtime.signature import PUBLIC_KEY_ENV, SIGNATURE_FILE, check_signature, signer_hint, trusted_key
from runtime.outputs import OUT_SUFFIXES, prediction_table, write_predictions, write_rows


def open_bundle(path: Path, threads: int | None = None, check: bool = True, precision: str = "fp32",
                log=None, public_key: Path | None = None) -> runtime.Bundle:
    try:
        bundle = runtime.load(path, threads=threads, check=check, precision=precision, public_key=public_key)
    except runtime.BundleError as exc:
        raise PipelineError(str(exc)) from None
    if log is not None and precision != "fp32":
        log(f"model graph: {bundle.model_file} ({bundle.precision})")
    return bundle


def _length_note(bundle: runtime.Bundle, data: SeriesData) -> str | None:
    length, trained = data.X.shape[2], bundle.series.trained_length
    if bundle.series.fixed is not None or length == trained:
        return None
    hint = "; if the file has a label column, pass --target-column to leave it out" if data.source.endswith(".csv") else ""
    return (f"note: {data.source} series have length {length}; the model was trained on length {trained} "
            f"(it accepts any length{hint})")


def training_label_columns(bundle: runtime.Bundle, data: Path, log) -> str | None:
    """The training file's label columns, when `data` is a .csv that has them (by header name, or, without a
    header, at the training file's width): the columns `pipeline train` read the labels from."""
    labels = bundle.manifest.csv_labels
    if data.is_dir() and bundle.window is not None:  # a folder of recordings: its .csv files are laid out alike
        data = next(iter(sorted(data.glob("*.csv"))), data)
    if data.suffix.lower() != ".csv" or not labels:
        return None
    header, width = peek_csv_header(data)
    if header is not None and all(c in header for c in labels["columns"]):
        names = ", ".join(f"'{c}'" for c in labels["columns"])
    elif header is None and width == labels["width"] and all(c.isdigit() for c in labels["columns"]):
        names = ", ".join(f"{c} (0-based)" for c in labels["columns"])
    else:
        return None
    log(f"note: column {names} of {data.name} holds the labels, as in the training data (--target-column "
        "chooses others)")
    return ",".join(labels["columns"])


def _recordings(bundle: runtime.Bundle, data: Path, target_column: str | None, labels: bool):
    """The recordings of `data` read as training read them (the manifest's window: recording and time columns)."""
    w = bundle.window
    return read_recordings(data, target_column, w.recording_column, w.time_column, labels=labels,
                           channels=w.channel_columns)


def _predict_recordings(bundle: runtime.Bundle, data: Path, target_column: str | None, log) -> tuple[dict, dict, int]:
    """Every window of every recording: (outputs, the recording/start/end columns, windows)."""
    recs = _recordings(bundle, data, target_column, labels=False)
    w = bundle.window
    short = [n for n, size in zip(recs.names, recs.lengths()) if size < w.length]
    if short:
        raise DataError([f"{'; '.join(short[:5])}: shorter than one window of {w.length} samples (the bundle's "
                         "window); no prediction can be made for it"])
    parts, where = [], {"recording": [], "start": [], "end": []}
    origin_times = bool(w.horizon) and recs.times is not None  # a forecast's rows say when each origin is
    if origin_times:
        where["time"] = []
    for r in range(recs.count):
        one = recs.samples[:, recs.offsets[r]:recs.offsets[r + 1]]
        out = bundle.predict_windows(one, name=recs.names[r])
        where["recording"].append(np.full(len(out["start"]), recs.ids[r], dtype=object))
        if origin_times:  # the time of each window's last sample: the forecast is of the samples after it
            where["time"].append(recs.times[recs.offsets[r] + out["end"] - 1])
        where["start"].append(out.pop("start"))
        where["end"].append(out.pop("end"))
        parts.append(out)
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    where = {k: np.concatenate(v) for k, v in where.items()}
    log(f"windows: {len(where['start'])} of {w.length} samples every {w.stride} from "
        f"{recs.count} recording(s) of {recs.source}")
    return outputs, where, len(where["start"])


def predict_file(bundle_dir: Path, cfg: PredictConfig, out: Path | None, force: bool = False, log=print) -> int:
    """Predict every series of `cfg.data`; write `out` atomically (.csv/.jsonl/.npy/.npz) or CSV to stdout, and
    the bundle's saliency maps to `cfg.saliency` (.npy) where asked."""
    data, target_column, saliency = cfg.data, cfg.target_column, cfg.saliency
    suffix = out.suffix.lower() if out is not None else ".csv"
    if suffix not in OUT_SUFFIXES:
        raise PipelineError(f"--out {out}: unsupported type '{suffix}'; use one of {', '.join(OUT_SUFFIXES)}")
    check_output_file(out, force)
    if saliency is not None and saliency.suffix.lower() != ".npy":
        raise PipelineError(f"--saliency {saliency}: the maps are written as one .npy array; name a .npy file")
    check_output_file(saliency, force, "--saliency")
    bundle = open_bundle(bundle_dir, cfg.threads, precision=cfg.precision, log=log, public_key=cfg.public_key)
    if saliency is not None and SALIENCY_OUTPUT not in bundle.outputs:
        raise PipelineError(f"--saliency: {bundle_dir} has no '{SALIENCY_OUTPUT}' output; export the run with "
                            "pipeline export RUN_DIR --saliency")
    if target_column is None:
        target_column = training_label_columns(bundle, data, log)
    elif target_column.strip().lower() == "none":  # every column is a series value
        target_column = None
    if bundle.steps:
        return _write_samples(bundle, cfg, out, suffix, target_column, log)
    if cfg.segments:
        raise PipelineError(f"--segments: {bundle_dir} answers one label per "
                            f"{'window' if bundle.window is not None else 'series'}; segments need a bundle trained "
                            "with --window-label each")
    if bundle.window is not None:
        return _write_windows(bundle, cfg, out, suffix, target_column, log, saliency)
    series = read_series(data, target_column, pad=cfg.pad, labels=False)
    note = _length_note(bundle, series)
    if note:
        log(note)
    try:
        outputs = bundle.predict(series.X, batch_size=cfg.batch_size, name=series.source, lines=series.lines)
    except runtime.InputError as exc:
        raise PipelineError(str(exc)) from None
    _write_saliency(saliency, outputs, log)
    if out is None:
        write_rows(prediction_table(bundle, outputs), sys.stdout, ".csv")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda tmp: write_predictions(bundle, outputs, tmp, suffix))
        log(f"wrote {out} ({series.n} series)")
    return series.n


def _write_saliency(path: Path | None, outputs: dict, log) -> None:
    """--saliency: the maps as one float32 .npy, (series or windows[, outputs], length), written atomically."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    maps = outputs[SALIENCY_OUTPUT]
    write_atomic(path, lambda tmp: _save_npy(tmp, maps))
    log(f"wrote {path} (saliency maps {'x'.join(map(str, maps.shape))})")


def _save_npy(path: Path, array) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _write_windows(bundle: runtime.Bundle, cfg: PredictConfig, out: Path | None, suffix: str,
                   target_column: str | None, log, saliency: Path | None = None) -> int:
    """`pipeline predict` of a windowed bundle: one row per window (recording, start and end sample, then the
    usual columns); .npz gets the arrays recording, start and end beside the outputs."""
    try:
        outputs, where, n = _predict_recordings(bundle, cfg.data, target_column, log)
    except runtime.InputError as exc:
        raise PipelineError(str(exc)) from None
    _write_saliency(saliency, outputs, log)
    table = {**where, **prediction_table(bundle, outputs)}
    if "time" in table:  # as the file wrote it: 71, not 71.0
        table["time"] = np.array([number_text(v) for v in table["time"].tolist()], dtype=object)
    arrays = {**outputs, **{k: v.astype(str) if k == "recording" else v for k, v in where.items()}}
    if _emit(table, out, suffix, lambda tmp: write_predictions(bundle, arrays, tmp, suffix)):
        log(f"wrote {out} ({n} windows)")
    return n


def _emit(table: dict, out: Path | None, suffix: str, write_arrays) -> bool:
    """A prediction table as CSV on stdout (no --out; False), or written atomically to `out` (True): .csv and .jsonl
    as the table, .npy and .npz by write_arrays(temporary path)."""
    if out is None:
        write_rows(table, sys.stdout, ".csv")
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".csv", ".jsonl"):
        write_atomic(out, lambda tmp: _write_table(table, tmp, suffix))
    else:
        write_atomic(out, write_arrays)
    return True


def _write_samples(bundle: runtime.Bundle, cfg: PredictConfig, out: Path | None, suffix: str,
                   target_column: str | None, log) -> int:
    """`pipeline predict` of a per-step bundle (--window-label each): one row per sample some window covers
    (recording, sample, its time, the label and the stitched probabilities; runtime.segments), or with
    --segments one row per segment (recording, start, end, label, mean probability)."""
    if cfg.segments and suffix not in (".csv", ".jsonl"):
        raise PipelineError(f"--out {out}: --segments writes a table of segments; name a .csv or .jsonl file")
    recs = _recordings(bundle, cfg.data, target_column, labels=False)
    w = bundle.window
    short = [n for n, size in zip(recs.names, recs.lengths()) if size < w.length]
    if short:
        raise DataError([f"{'; '.join(short[:5])}: shorter than one window of {w.length} samples (the bundle's "
                         "window); no prediction can be made for it"])
    names = list(bundle.classes) if bundle.classes else [str(j) for j in range(bundle.n_outputs)]
    tables, arrays = [], []
    for r in range(recs.count):
        one = recs.samples[:, recs.offsets[r]:recs.offsets[r + 1]]
        try:
            found = bundle.label_samples(one, name=recs.names[r])
        except runtime.InputError as exc:
            raise PipelineError(str(exc)) from None
        times = None if recs.times is None else recs.times[recs.offsets[r]:recs.offsets[r + 1]]
        if cfg.segments:
            rows = segments.segment_table(found, bundle.spec.scores, names)
            where = {"recording": np.full(len(rows["start"]), recs.ids[r], dtype=object), "start": rows["start"],
                     "end": rows["end"]}
            if times is not None:
                where.update(start_time=times[rows["start"]], end_time=times[rows["end"] - 1])
            tables.append({**where, "label": rows["label"], "probability": rows["probability"]})
        else:
            where = {"recording": np.full(len(found["sample"]), recs.ids[r], dtype=object), "sample": found["sample"]}
            if times is not None:
                where["time"] = times[found["sample"]]
            tables.append({**where, **bundle.spec.step_columns(found, bundle.classes, bundle.n_outputs)})
            arrays.append({**where, "probabilities": found["probabilities"], "label": found["label"]})
    table = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    for key in ("time", "start_time", "end_time"):
        if key in table:  # as the file wrote it: 71, not 71.0
            table[key] = np.array([number_text(v) for v in table[key].tolist()], dtype=object)
    n = len(table["recording"])
    what = f"{n} segments" if cfg.segments else f"{n} samples"
    log(f"windows of {w.length} samples every {w.stride} from {recs.count} recording(s) of {recs.source}, stitched "
        f"per sample (the mean of every window covering it): {what}")
    merged = {} if cfg.segments else {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
    if merged:
        merged["recording"] = merged["recording"].astype(str)
    if _emit(table, out, suffix, lambda tmp: _save_samples(tmp, merged, suffix)):
        log(f"wrote {out} ({what})")
    return n


def _save_samples(path: Path, arrays: dict, suffix: str) -> None:
    with open(path, "wb") as f:
        if suffix == ".npy":
            np.save(f, arrays["probabilities"])
        else:
            np.savez(f, **arrays)


def _write_table(table: dict, path: Path, suffix: str) -> None:
    with open(path, "w", newline="") as f:
        write_rows(table, f, suffix)


def evaluate_file(bundle_dir: Path, cfg: EvaluateConfig, log=print) -> dict:
    """Loss and task metrics of the bundle on a labelled file, as the trainer reports them."""
    data, target_column = cfg.data, cfg.target_column
    bundle = open_bundle(bundle_dir, cfg.threads, precision=cfg.precision, log=log, public_key=cfg.public_key)
    if target_column is None:
        target_column = training_label_columns(bundle, data, log)
    if bundle.window is not None and bundle.window.horizon:  # forecasts: each window's next samples
        w = bundle.window
        recs = _recordings(bundle, data, None, labels=False)
        series = cut_forecast_windows(recs, w.length, w.stride, w.horizon, list(w.targets))
        log(f"windows: {series.n} of {w.length} samples every {w.stride}, each forecasting the next {w.horizon}")
    elif bundle.steps:  # a label per sample: every step of every window, and the stitched samples
        return _evaluate_samples(bundle, data, target_column, log)
    elif bundle.window is not None:  # windows labelled by the rule training used
        w = bundle.window
        series = cut_windows(_recordings(bundle, data, target_column, labels=True), w.length, w.stride, w.label)
        log(f"windows: {series.n} of {w.length} samples every {w.stride}, labelled by the {w.label} time step"
            if series.windows.recordings.per_step else f"windows: {series.n}, each labelled by its recording")
    else:
        series = read_series(data, target_column, pad=cfg.pad, labels=True)
    try:
        metrics = bundle.evaluate(series.X, series.y, batch_size=cfg.batch_size, x_name=series.source,
                                  y_name=f"{series.source}: {series.label_field}", lines=series.lines)
    except runtime.InputError as exc:
        raise PipelineError(str(exc)) from None
    counted = {"windows": series.n} if bundle.window is not None else {"series": series.n}
    return {"data": str(data), **counted, "task": bundle.task, "precision": bundle.precision, **metrics}


def _evaluate_samples(bundle: runtime.Bundle, data: Path, target_column: str | None, log) -> dict:
    """evaluate of a per-step bundle: Bundle.evaluate_recordings on every recording of `data`."""
    recs = _recordings(bundle, data, target_column, labels=True)
    if not recs.per_step:
        raise PipelineError(f"{recs.source}: {recs.label_field} holds one label per recording; {data} needs a label "
                            "per time step to score a bundle trained with --window-label each")
    parts = [recs.samples[:, recs.offsets[r]:recs.offsets[r + 1]] for r in range(recs.count)]
    labels = [recs.labels[recs.offsets[r]:recs.offsets[r + 1]] for r in range(recs.count)]
    lines = None if recs.lines is None else [recs.lines[recs.offsets[r]:recs.offsets[r + 1]] for r in range(recs.count)]
    try:
        metrics = bundle.evaluate_recordings(parts, labels, [f"{n}: {recs.label_field}" for n in recs.names], lines)
    except runtime.InputError as exc:
        raise PipelineError(str(exc)) from None
    w = bundle.window
    windows = sum(len(runtime.windows.window_starts(int(n), w.length, w.stride)) for n in recs.lengths())
    log(f"windows: {windows} of {w.length} samples every {w.stride}, labelled at every time step; samples stitched "
        "from every window covering them")
    return {"data": str(data), "windows": windows, "task": bundle.task, "precision": bundle.precision, **metrics}


@dataclass
class VerifyReport:
    golden: list[Row]
    eager: list[Row] | None  # None when the eager re-check did not run (see `note`)
    note: str | None
    signature: str = ""  # one line: verified with a key, signed but not checked, or not signed

    @property
    def passed(self) -> bool:
        return not any(r.problem for r in self.golden + (self.eager or []))


def verify_bundle(bundle_dir: Path, cfg: VerifyConfig = VerifyConfig()) -> VerifyReport:
    """Golden data through every graph of the bundle (ONNX by onnxruntime, TorchScript where torch is
    installed); then, with torch, the full export grid against eager PyTorch rebuilt from the run."""
    run_dir, atol, rtol, threads = cfg.run_dir, cfg.atol, cfg.rtol, cfg.threads
    try:
        signature = signature_status(Path(bundle_dir), cfg.public_key)
        manifest = runtime.Manifest.read(bundle_dir)
        runtime.bundle.check_files(bundle_dir, manifest)
    except runtime.BundleError as exc:
        raise PipelineError(str(exc)) from None
    has_onnx = manifest.has(MODEL_ONNX)
    # every file's sha256 was checked just above: the sessions open without hashing them again
    golden = check_golden(open_bundle(bundle_dir, threads, check=False), atol, rtol) if has_onnx else []
    if manifest.int8 is not None:  # the int8 graph against its own golden outputs
        int8 = open_bundle(bundle_dir, threads, check=False, precision="int8").model_session
        golden += int8_rows(read_golden(Path(bundle_dir)), manifest.int8, lambda feeds: int8.run(None, feeds))
    atol = manifest.verification.atol if atol is None else atol
    rtol = manifest.verification.rtol if rtol is None else rtol
    try:
        from export.recheck import find_checkpoint, recheck, torch_golden
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "onnx", "onnxscript"):
            raise
        if not has_onnx:
            raise PipelineError(f"{bundle_dir}: holds no ONNX graph, and checking its torch graphs (TorchScript, "
                                f".pt2) needs torch, which the runtime-only install leaves out; {TRAIN_EXTRA_HINT}") from None
        return VerifyReport(golden, None, "eager re-check skipped: the training extra is not installed "
                                          f"({TRAIN_EXTRA_HINT} to re-check against PyTorch)", signature)
    golden += torch_golden(Path(bundle_dir), manifest, atol, rtol)
    found = find_checkpoint(Path(bundle_dir), manifest, run_dir)
    if found is None:
        return VerifyReport(golden, None, "eager re-check skipped: the run folder the bundle was exported from "
                                          "is not here; pass --run RUN_DIR", signature)
    return VerifyReport(golden, recheck(Path(bundle_dir), manifest, found, atol, rtol),
                        f"eager re-check against {found}", signature)


def signature_status(bundle_dir: Path, public_key: Path | None) -> str:
    """One line about the bundle's signature: checked with the trusted key (a BundleError when it does not
    verify), present but unchecked (no key given), or absent."""
    key = trusted_key(public_key)
    if key is not None:
        signed = check_signature(bundle_dir, key, sha256=runtime.bundle.file_sha256)
        return (f"signature: verified with {key} (key {signed.fingerprint[:16]}), covering all "
                f"{len(signed.digests)} files")
    if (bundle_dir / SIGNATURE_FILE).exists():
        hint = signer_hint(bundle_dir)
        return (f"signature: {SIGNATURE_FILE} signed by key {hint[:16] if hint else '(no hint)'}, not checked: pass "
                f"--public-key PUBLIC.pem (or set ${PUBLIC_KEY_ENV}) to check it")
    return f"signature: none (pipeline sign {bundle_dir} --key KEY.pem signs it)"
