"""Long recordings (train --window): reading per-sample .csv / .npz / folders, the window label rules against a
plain reference, validation held out without leakage, bad recordings refused with exact text, and the CLI's
windowed train -> export -> predict -> evaluate."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.settings.config import DataConfig
from pipeline.data.load import load_datasets
from pipeline.data.recordings import cut_windows, read_recordings
from pipeline.errors import DataError, PipelineError
from runtime.windows import window_labels, window_starts
from tests.conftest import make_recordings, run_pipeline, write_recordings_csv


def reference_label(labels: list, start: int, length: int, rule: str):
    """A window's label by a plain loop: the last, the center (length // 2), or the most frequent (ties: the tied
    label seen last in the window)."""
    window = labels[start:start + length]
    if rule == "last":
        return window[-1]
    if rule == "center":
        return window[length // 2]
    counts = Counter(window)
    best = max(counts.values())
    return next(v for v in reversed(window) if counts[v] == best)


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.integers(0, 3), min_size=1, max_size=80), length=st.integers(1, 20),
       stride=st.integers(1, 9), rule=st.sampled_from(["last", "majority", "center"]))
def test_window_starts_and_labels_match_a_plain_loop(labels, length, stride, rule):
    starts = window_starts(len(labels), length, stride)
    assert starts.tolist() == list(range(0, len(labels) - length + 1, stride))
    got = window_labels(np.array(labels), starts, length, rule)
    assert got.tolist() == [reference_label(labels, s, length, rule) for s in starts]


def test_majority_over_several_label_columns_counts_whole_rows():
    labels = np.array([[0, 1], [1, 1], [0, 1], [1, 0], [1, 1]])
    assert window_labels(labels, np.array([0, 1]), 4, "majority").tolist() == [[0, 1], [1, 1]]


def _csv(tmp_path, task="multiclass", count=3, samples=120, **kwargs):
    recordings, labels = make_recordings(task, count=count, samples=samples)
    return write_recordings_csv(tmp_path / "rec.csv", recordings, labels, **kwargs), recordings, labels


def test_a_per_sample_csv_reads_as_recordings_of_unequal_length_and_cuts_windows(tmp_path):
    path, recordings, labels = _csv(tmp_path)
    recs = read_recordings(path, recording_column="recording", time_column="time")
    assert recs.ids == ["r0", "r1", "r2"] and recs.lengths().tolist() == [120, 137, 154] and recs.per_step
    for r, x in enumerate(recordings):
        np.testing.assert_allclose(recs.samples[:, recs.offsets[r]:recs.offsets[r + 1]], x, rtol=0, atol=0)
    data = cut_windows(recs, 16, 5, "center")
    expected = [(r, s) for r, x in enumerate(recordings) for s in range(0, x.shape[1] - 15, 5)]
    assert len(data.X) == len(expected)
    for i in (0, 7, len(expected) - 1):
        r, s = expected[i]
        np.testing.assert_array_equal(data.X[i], recordings[r][:, s:s + 16])
        assert data.y[i] == labels[r][s + 8]
        assert data.lines[i] == 2 + sum(x.shape[1] for x in recordings[:r]) + s + 8  # the labelling row's line
    np.testing.assert_array_equal(np.asarray(data.X)[3], recordings[0][:, 15:31])


def test_npz_recordings_with_labels_per_recording_or_per_step_and_a_folder_of_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 2, 50)).astype(np.float32)
    np.savez(tmp_path / "per_rec.npz", X=X, y=np.array(["a", "b", "a", "b"]))
    data = cut_windows(read_recordings(tmp_path / "per_rec.npz"), 20, 10, "last")
    assert data.y.tolist() == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4
    steps = np.tile(np.arange(50) % 3, (4, 1))
    np.savez(tmp_path / "per_step.npz", X=X, y=steps)
    data = cut_windows(read_recordings(tmp_path / "per_step.npz"), 20, 10, "last")
    assert data.y.tolist() == [19 % 3, 29 % 3, 39 % 3, 49 % 3] * 4
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, T in enumerate((40, 65)):
        np.savez(folder / f"rec{i}.npz", X=rng.normal(size=(2, T)), y=np.arange(T) % 2)
    recs = read_recordings(folder)
    assert recs.ids == ["rec0", "rec1"] and recs.lengths().tolist() == [40, 65] and recs.per_step


def _leak_free(datasets) -> None:
    """No validation window shares a sample (recording, index) with a training window."""
    X = datasets.train.X

    def samples(rows):
        return {(int(X.recording[i]), int(X.starts[i]) + k) for i in rows for k in range(X.length)}

    assert samples(datasets.train.rows).isdisjoint(samples(datasets.val.rows))


def test_validation_holds_out_whole_recordings(tmp_path):
    path, _, _ = _csv(tmp_path, count=6)
    cfg = DataConfig(data=str(path), window=16, stride=2, recording_column="recording", time_column="time")
    datasets = load_datasets(cfg, "fcn", seed=0)
    _leak_free(datasets)
    X = datasets.train.X
    held = set(X.recording[datasets.val.rows].tolist())
    assert held.isdisjoint(X.recording[datasets.train.rows].tolist()) and len(held) == 1  # 0.2 of 6 recordings
    assert datasets.window["split"].startswith("by recording: 1 of 6 recordings held out (r")
    assert len(datasets.train) + len(datasets.val) == len(X)


def test_one_recording_is_split_by_time_with_a_gap_of_one_window(tmp_path):
    path, _, _ = _csv(tmp_path, count=1, samples=400)
    cfg = DataConfig(data=str(path), window=16, stride=3, val_split=0.25, recording_column="recording",
                     time_column="time")
    datasets = load_datasets(cfg, "fcn", seed=0)
    _leak_free(datasets)
    X = datasets.train.X
    last_train_end = int(X.starts[datasets.train.rows].max()) + 16
    first_val = int(X.starts[datasets.val.rows].min())
    assert last_train_end <= 300 and first_val >= 300 + 16  # the cut at 0.75 of 400, then a window's gap
    assert datasets.window == {"length": 16, "stride": 3, "label": "last", "split": (
        "by time: the last 0.25 of the one recording (samples 316 on) after a gap of one window; training windows "
        "end by sample 300"), "recording_column": "recording", "time_column": "time",
        "channel_columns": ["ch0", "ch1"]}


def test_a_text_column_not_declared_is_one_problem_with_the_flag_that_fixes_it(tmp_path):
    path, _, _ = _csv(tmp_path, count=2)
    with pytest.raises(DataError) as err:
        load_datasets(DataConfig(data=str(path), window=16), "fcn", seed=0)
    assert err.value.problems == ["rec.csv: line 2 column 'recording': 'r0' is not a number; samples must be numeric "
                                  "(a column that names recordings is --recording-column, a time column "
                                  "--time-column)"]


@pytest.mark.parametrize("edit, message", [
    ("short", "rec.csv: recording 'r1' has 5 samples: shorter than one window of --window 16; lower --window or "
              "drop recordings that short"),
    ("kind", "rec.csv: line 12 column 'label': '7' is a number but the labels above it are names; a label column "
             "holds one kind (fix the cell, or make every label a name)"),
    ("nan", "rec.csv: line 9 column 'ch1': the sample is nan; fill or drop missing samples (every sample of a "
            "recording must be a number)"),
    ("time", "rec.csv: line 21 column 'time': time 0.18 does not come after 0.19; sort each recording's rows by "
             "time (the windows follow the row order)"),
])
def test_bad_recordings_are_refused_in_one_line_naming_file_line_and_fix(tmp_path, edit, message):
    recordings, labels = make_recordings("multiclass", count=2, samples=60)
    if edit == "short":
        recordings[1], labels[1] = recordings[1][:, :5], labels[1][:5]
    path = write_recordings_csv(tmp_path / "rec.csv", recordings, labels)
    lines = path.read_text().splitlines()
    if edit == "kind":
        lines[11] = lines[11].rsplit(",", 1)[0] + ",7"
    elif edit == "nan":
        cells = lines[8].split(",")
        cells[3] = "nan"
        lines[8] = ",".join(cells)
    elif edit == "time":
        lines[19], lines[20] = lines[20], lines[19]
    path.write_text("\n".join(lines) + "\n")
    result = run_pipeline(["train", "--data", path, "--window", "16", "--recording-column", "recording",
                           "--time-column", "time", "--out", tmp_path / "run"], tmp_path)
    assert result.returncode == 2 and result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_window_flags_without_window_and_majority_for_regression_are_refused(tmp_path):
    with pytest.raises(PipelineError, match=r"^--stride, --window-label cut recordings into windows and need "
                                            r"--window LENGTH too$"):
        DataConfig(stride=4, window_label="center")
    path, _, _ = _csv(tmp_path, task="regression")
    with pytest.raises(DataError) as err:
        load_datasets(DataConfig(data=str(path), window=16, window_label="majority", recording_column="recording",
                                 time_column="time"), "fcn", seed=0)
    assert err.value.problems == ["--window-label majority picks the most frequent label, which a --task regression "
                                  "target does not have; use last (causal) or center"]


@pytest.mark.slow
def test_windowed_train_export_predict_evaluate_from_the_command_line(tmp_path):
    """The user's path: a multi-channel per-sample .csv -> train --window -> export -> predict (a row per window)
    -> evaluate (windows labelled as in training); config, metrics and the manifest record the windows."""
    recordings, labels = make_recordings("multiclass", count=5, samples=200)
    train = write_recordings_csv(tmp_path / "train.csv", recordings, labels)
    test_recs, test_labels = make_recordings("multiclass", count=2, samples=150, seed=1)
    test = write_recordings_csv(tmp_path / "test.csv", test_recs, test_labels)
    flags = ["--window", "24", "--stride", "6", "--recording-column", "recording", "--time-column", "time"]
    result = run_pipeline(["train", "--data", train, "--test-data", test, *flags, "--epochs", "15", "--width", "0.25",
                           "--no-progress", "--out", tmp_path / "run"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "validation: " in result.stdout and "windows held out by recording: 1 of 5 recordings" in result.stdout
    window = {"length": 24, "stride": 6, "label": "last", "recording_column": "recording", "time_column": "time"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    settings = {k: config["data"][k] for k in ("window", "stride", "window_label")}
    assert settings == {"window": 24, "stride": 6, "window_label": "last"}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {k: metrics["window"][k] for k in window} == window and metrics["window"]["split"].startswith("by recording")
    assert config["window"] == metrics["window"]
    assert metrics["test"]["accuracy"] > 0.6  # 3 classes: chance is about 0.33
    assert run_pipeline(["export", tmp_path / "run", "--format", "onnx"], tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["window"] == metrics["window"]
    readme = (tmp_path / "run" / "bundle" / "README.txt").read_text()
    assert "Windows: trained on windows of 24 samples every 6 samples of long recordings" in " ".join(readme.split())
    predicted = run_pipeline(["predict", tmp_path / "run" / "bundle", "--data", test, "--out", tmp_path / "p.csv"],
                             tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "row,recording,start,end,label,probability_cat,probability_dog,probability_eel"
    expected = [(f"r{r}", s) for r, x in enumerate(test_recs) for s in range(0, x.shape[1] - 23, 6)]
    assert [tuple(line.split(",")[1:3]) for line in rows[1:]] == [(r, str(s)) for r, s in expected]
    assert all(int(line.split(",")[3]) - int(line.split(",")[2]) == 24 for line in rows[1:])
    assert manifest["window"]["channel_columns"] == ["ch0", "ch1"]  # hosts match a .csv's columns by name
    folder = tmp_path / "recordings"  # a folder of per-recording files reads as the same recordings, the second
    folder.mkdir()  # with its channel columns in the other order (matched by name, not swapped)
    for r in range(2):
        write_recordings_csv(folder / f"part{r}.csv", test_recs[r:r + 1], test_labels[r:r + 1], order=[r, 1 - r])
    by_folder = run_pipeline(["predict", tmp_path / "run" / "bundle", "--data", folder], tmp_path)
    assert by_folder.returncode == 0, by_folder.stderr
    assert [line.split(",")[2:] for line in by_folder.stdout.splitlines()] == [line.split(",")[2:] for line in rows]
    scored = run_pipeline(["evaluate", tmp_path / "run" / "bundle", "--data", test, "--json"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["windows"] == len(expected)
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)


def test_csv_channel_columns_are_matched_by_name_in_any_order_and_a_missing_one_is_named(tmp_path):
    recordings, labels = make_recordings("regression", count=2, samples=30, channels=3)
    plain = read_recordings(write_recordings_csv(tmp_path / "a.csv", recordings, labels, time=False), "label",
                            "recording")
    assert plain.channel_names == ("ch0", "ch1", "ch2")
    shuffled = write_recordings_csv(tmp_path / "b.csv", recordings, labels, time=False, order=[2, 0, 1])
    matched = read_recordings(shuffled, "label", "recording", channels=("ch0", "ch1", "ch2"))
    np.testing.assert_array_equal(matched.samples, np.concatenate(recordings, axis=1).astype(np.float32))
    assert matched.channel_names == ("ch0", "ch1", "ch2")
    folder = tmp_path / "folder"  # a folder's files follow its first .csv's names
    folder.mkdir()
    write_recordings_csv(folder / "1.csv", recordings[:1], labels[:1], time=False)
    write_recordings_csv(folder / "2.csv", recordings[1:], labels[1:], time=False, order=[1, 2, 0])
    np.testing.assert_array_equal(read_recordings(folder, "label", "recording").samples, plain.samples)
    with pytest.raises(DataError) as err:
        read_recordings(shuffled, "label", "recording", channels=("ch0", "ch1", "pressure"))
    assert err.value.problems == ["b.csv: no column 'pressure'; the model reads the channels 'ch0', 'ch1', "
                                  "'pressure' (matched by header name, in any order); this file's signal columns "
                                  "are 'ch2', 'ch0', 'ch1'"]
