"""Data integrity and nothing lost, through the real CLI: files that would have trained on garbage or ended
in a traceback, the same line numbers from every command, and commands that only replace what they own."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main

TINY = ["--epochs", "1", "--width", "0.125", "--no-progress"]


def run(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)


def assert_one_line_error(result, message: str):
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _absurd_header(array: np.ndarray) -> bytes:
    """A valid .npy of `array` whose header claims a terabyte-sized first axis (same header length)."""
    raw = _npy_bytes(array)
    old = f"'shape': ({array.shape[0]}, {array.shape[1]}), ".encode()
    new = f"'shape': ({10 ** 12}, {array.shape[1]}), ".encode()
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].replace(old, new)
    header = header[:-1].rstrip(b" ")
    header = header + b" " * (header_end - 1 - len(header)) + b"\n"
    assert len(header) == header_end and b"1000000000000" in header
    return header + raw[header_end:]


def test_npz_with_more_labels_than_series_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 5), np.float32), y=np.arange(12) % 2)
    result = run(["train", "--data", tmp_path / "d.npz", "--out", tmp_path / "run"])
    assert_one_line_error(result, "d.npz: X holds 10 series but y holds 12 labels; save one label per series (the "
                                  "same number of rows in both)")
    assert not (tmp_path / "run").exists()


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    X = np.empty(4, dtype=object)
    X[:] = [[1.0, 2.0], [3.0], [4.0, 5.0], [6.0]]
    np.savez(tmp_path / "d.npz", X=X, y=np.array([0, 1, 0, 1]))  # numpy pickles object arrays
    result = run(["train", "--data", tmp_path / "d.npz", "--out", tmp_path / "run"])
    assert_one_line_error(result, "d.npz: array 'X' holds Python objects (dtype object), which are not loaded "
                                  "because unpickling can run code; save numbers, e.g. X.astype(np.float32)")


def test_absurd_npz_and_npy_headers_are_refused_before_any_allocation(tmp_path):
    X = np.zeros((4, 8), np.float32)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("X.npy", _absurd_header(X))
        archive.writestr("y.npy", _npy_bytes(np.array([0, 1, 0, 1])))
    (tmp_path / "huge.npy").write_bytes(_absurd_header(X))
    declared = f"{10 ** 12 * 8 * 4:,}"
    result = run(["train", "--data", tmp_path / "huge.npz", "--out", tmp_path / "run"])
    assert_one_line_error(result, f"huge.npz: array 'X' declares shape ({10 ** 12}, 8) of float32 ({declared} bytes) "
                                  "but the file holds 128 bytes; it is truncated or altered, save it again with numpy")
    np.savez(tmp_path / "ok.npz", X=np.random.default_rng(0).normal(size=(20, 8)), y=np.arange(20) % 2)
    run(["train", "--data", tmp_path / "ok.npz", "--out", tmp_path / "run", *TINY])
    run(["export", tmp_path / "run", "--format", "onnx"])
    result = run(["predict", tmp_path / "run" / "bundle", "--data", tmp_path / "huge.npy"])
    assert_one_line_error(result, f"huge.npy: the file declares shape ({10 ** 12}, 8) of float32 ({declared} bytes) "
                                  "but the file holds 128 bytes; it is truncated or altered, save it again with numpy")


@pytest.mark.parametrize("task, labels, only", [("multiclass", [2] * 12, "2"), ("binary", [1] * 12, "1"),
                                                (None, [0] * 12, "0"), ("multiclass", ["cat"] * 12, "cat")])
def test_a_class_task_with_one_class_is_refused(tmp_path, task, labels, only):
    np.savez(tmp_path / "d.npz", X=np.zeros((12, 8), np.float32), y=np.array(labels))
    args = ["train", "--data", tmp_path / "d.npz", "--out", tmp_path / "run"] + (["--task", task] if task else [])
    result = run(args)
    shown = task or "binary"  # all zeros infers binary
    assert_one_line_error(result, f"d.npz: array 'y': every training label is the same class ('{only}'); --task "
                                  f"{shown} needs at least two classes to learn from (check --target-column, or use "
                                  "--task regression for a constant target)")


def _csv(path, X, labels, header=True):
    with open(path, "w") as f:
        if header:
            f.write(",".join([f"v{j}" for j in range(X.shape[1])] + ["y"]) + "\n")
        for row, label in zip(X, labels):
            f.write(",".join(f"{v:.5f}" for v in row) + f",{label}\n")
    return path


def test_a_bad_label_value_is_named_with_its_file_line_by_train_and_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8))
    values = [f"{v:.4f}" for v in X[:, :4].mean(1) * 3]
    good = _csv(tmp_path / "good.csv", X, values)
    values[40], values[77] = "abc", "NA"  # data rows 41 and 78: file lines 42 and 79 (after the header)
    bad = _csv(tmp_path / "bad.csv", X, values)
    # without --task: the column is numbers with two bad cells, not a 300-class task
    result = run(["train", "--data", bad, "--out", tmp_path / "run"])
    assert_one_line_error(result, "bad.csv: column 'y' lines 42, 79: 'abc', 'NA' are not numbers; the other labels "
                                  "are numbers, so fix or drop those rows (or pass --task multiclass if the labels are "
                                  "class names)")
    result = run(["train", "--data", bad, "--task", "regression", "--out", tmp_path / "run"])
    same = "bad.csv: column 'y' lines 42, 79: 'abc', 'NA' are not numbers; regression labels are real numbers, one "\
           "column per target"  # train and evaluate share one label check: the same words, the same lines
    assert_one_line_error(result, same)
    assert run(["train", "--data", good, "--out", tmp_path / "run", *TINY]).exit_code == 0
    assert run(["export", tmp_path / "run", "--format", "onnx"]).exit_code == 0
    result = run(["evaluate", tmp_path / "run" / "bundle", "--data", bad])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == f"Error: {same}"


def test_a_nan_series_gets_the_same_file_line_from_train_evaluate_and_predict(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 6))
    labels = (X[:, 0] > 0).astype(int)
    ok = _csv(tmp_path / "ok.csv", X, labels)
    X[4, 2] = np.nan  # data row 5: file line 6
    nan = _csv(tmp_path / "nan.csv", X, labels)
    result = run(["train", "--data", nan, "--out", tmp_path / "run"])
    assert_one_line_error(result, "nan.csv: series line 6 contain NaN or Inf; fill or drop missing values (or pass "
                                  "--pad for unequal-length .ts files)")
    assert run(["train", "--data", ok, "--out", tmp_path / "run", *TINY]).exit_code == 0
    assert run(["export", tmp_path / "run", "--format", "onnx"]).exit_code == 0
    for command in ("evaluate", "predict"):
        result = run([command, tmp_path / "run" / "bundle", "--data", nan])
        assert result.exit_code == 2
        assert result.output.splitlines()[-1] == ("Error: nan.csv: NaN or Inf in series line 6 (or values too large "
                                                  "for float32); fill or drop missing values first")


def test_labels_that_are_all_distinct_are_not_taken_for_classes(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 6))
    _csv(tmp_path / "ids.csv", X, [f"id{i}" for i in range(40)])
    result = run(["train", "--data", tmp_path / "ids.csv", "--out", tmp_path / "run"])
    assert_one_line_error(result, "ids.csv: column 'y' holds 40 different names for 40 series, too many to be "
                                  "classes; pass --task (and --target-column if this is not the label)")
    np.savez(tmp_path / "amounts.npz", X=X, y=np.arange(40) * 3)  # 40 distinct integers: amounts, not classes
    result = run(["train", "--data", tmp_path / "amounts.npz", "--out", tmp_path / "run", *TINY])
    assert result.exit_code == 0 and "task: regression (inferred" in result.output


@pytest.mark.parametrize("header", [True, False])
def test_predict_leaves_out_the_training_label_column_of_a_csv(tmp_path, header):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 6))
    y = X[:, :3].mean(1) * 2
    data = _csv(tmp_path / "d.csv", X, [f"{v:.4f}" for v in y], header=header)
    assert run(["train", "--data", data, "--model", "linear", "--out", tmp_path / "run", *TINY]).exit_code == 0
    assert run(["export", tmp_path / "run", "--format", "onnx"]).exit_code == 0
    bundle = tmp_path / "run" / "bundle"
    result = run(["predict", bundle, "--data", data, "--out", tmp_path / "p.npy"])
    assert result.exit_code == 0, result.output
    column = "'y'" if header else "6 (0-based)"
    assert result.output.splitlines()[0] == (f"note: column {column} of d.csv holds the labels, as in the training "
                                             "data (--target-column chooses others)")
    import runtime

    series = np.loadtxt(data, delimiter=",", skiprows=1 if header else 0, dtype=np.float32)[:, :6]
    expected = runtime.load(bundle).predict(series)["prediction"]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6, rtol=1e-6)
    # the series alone (no label column) predict the same, with nothing left out
    np.savetxt(tmp_path / "x.csv", series, delimiter=",", fmt="%.5f")
    result = run(["predict", bundle, "--data", tmp_path / "x.csv", "--out", tmp_path / "q.npy"])
    assert result.exit_code == 0 and "note:" not in result.output
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_one_value_per_series_trains_and_exports(tmp_path, model):
    """Seed tutorial 002: y = 2x + 1 with X of shape (N, 1)."""
    x = np.random.default_rng(0).uniform(-1, 1, size=(400, 1)).astype(np.float32)
    np.savez(tmp_path / "line.npz", X=x, y=2 * x[:, 0] + 1)
    result = run(["train", "--data", tmp_path / "line.npz", "--model", model, "--epochs", "30", "--lr", "0.02",
                  "--out", tmp_path / "run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert run(["export", tmp_path / "run"]).exit_code == 0
    import runtime

    got = runtime.load(tmp_path / "run" / "bundle").predict(np.array([[0.0], [0.5]], np.float32))["prediction"]
    np.testing.assert_allclose(got[:, 0], [1.0, 2.0], atol=0.15)  # it learned the line, roughly
    assert json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())["input"]["length"] == {"fixed": 1}


@pytest.fixture
def exported(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).normal(size=(20, 8)), y=np.arange(20) % 2)
    assert run(["train", "--data", tmp_path / "d.npz", "--out", tmp_path / "run", *TINY]).exit_code == 0
    assert run(["export", tmp_path / "run", "--format", "onnx"]).exit_code == 0
    return tmp_path / "run"


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_force_never_replaces_the_run_its_parents_or_a_foreign_folder(exported, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    result = run(["export", exported, "--out", exported, "--force"])
    assert_one_line_error(result, f"--out {exported} is the run folder; a bundle needs a folder of its own (default "
                                  "RUN_DIR/bundle), and nothing else is ever replaced")
    result = run(["export", exported, "--out", tmp_path, "--force"])
    assert_one_line_error(result, f"--out {tmp_path} holds the run folder {exported}; a bundle needs a folder of its "
                                  "own (default RUN_DIR/bundle), and nothing else is ever replaced")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("1,2\n")
    before = _tree(tmp_path)
    result = run(["export", exported, "--out", tmp_path / "mine", "--force"])
    assert_one_line_error(result, f"--out {tmp_path / 'mine'} is not a bundle (no bundle manifest.json in it); "
                                  "export replaces only a folder written by pipeline export, so choose another --out")
    assert _tree(tmp_path) == before and (tmp_path / "notes.txt").read_text() == "mine"
    # an earlier bundle is what --force replaces
    result = run(["export", exported, "--format", "onnx", "--force"])
    assert result.exit_code == 0 and result.output.splitlines()[-1] == f"wrote {exported / 'bundle'}"


def test_bundle_folders_get_the_permissions_of_the_users_umask(exported, tmp_path):
    old = os.umask(0o022)
    try:
        assert run(["export", exported, "--format", "onnx", "--out", tmp_path / "shared"]).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "shared" / "model.onnx").stat().st_mode) == 0o644


def test_train_force_refuses_a_folder_that_is_not_a_run(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((12, 8), np.float32), y=np.arange(12) % 2)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "metrics.json").write_text('{"mine": 1}')
    result = run(["train", "--data", tmp_path / "d.npz", "--out", tmp_path / "work", "--force"])
    assert_one_line_error(result, f"--out {tmp_path / 'work'} holds metrics.json but is not a run folder (no "
                                  "config.json written by pipeline train); --force replaces only a run's own files, so "
                                  "choose another --out")
    assert (tmp_path / "work" / "metrics.json").read_text() == '{"mine": 1}'


def test_predict_and_bench_never_replace_a_folder(exported, tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.files import check_output_file

    (tmp_path / "some").mkdir()
    with pytest.raises(PipelineError, match="is a folder; pass a file name"):  # for library callers too
        check_output_file(tmp_path / "some", force=True)
    (tmp_path / "out.csv").mkdir()
    (tmp_path / "out.csv" / "keep.txt").write_text("mine")
    for args in (["predict", exported / "bundle", "--data", tmp_path / "d.npz"], ["bench", "--quick"]):
        result = run([*args, "--out", tmp_path / "out.csv", "--force"])
        assert result.exit_code == 2  # click's own check of the --out path answers first
        assert result.output.splitlines()[-1] == (f"Error: Invalid value for '--out': File '{tmp_path / 'out.csv'}' "
                                                  "is a directory.")
    assert (tmp_path / "out.csv" / "keep.txt").read_text() == "mine"
