"""Bad input through the real CLI: exact one-line messages, exit status 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _npz(path, X, y):
    np.savez(path, X=np.asarray(X, dtype=np.float32), y=np.asarray(y))
    return str(path)


def assert_usage_error(result, message: str, out_dir=None):
    assert result.exit_code == 2, result.output
    assert result.output == f"Error: {message}\n"
    assert "Traceback" not in result.output
    if out_dir is not None:
        assert not out_dir.exists()


@pytest.fixture
def base(tmp_path):
    X = np.random.default_rng(0).normal(size=(12, 1, 8))
    return tmp_path, X


def test_wrong_shape(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X[:, :, :, None], np.zeros(12))
    result = run(["train", "--data", data, "--out", str(tmp / "run")])
    assert_usage_error(result, "train.npz: X has shape (12, 1, 8, 1); it must be (N, C, L) or (N, L)", tmp / "run")


def test_nan_in_series(base):
    tmp, X = base
    X[3, 0, 2] = np.nan
    X[5, 0, 0] = np.inf
    data = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    result = run(["train", "--data", data, "--out", str(tmp / "run")])
    assert_usage_error(result, "train.npz: series rows 3, 5 contain NaN or Inf; fill or drop missing values (or "
                               "pass --pad for unequal-length .ts files)", tmp / "run")


def test_class_index_out_of_range_in_validation_file(base):
    tmp, X = base
    train = _npz(tmp / "train.npz", X, np.arange(12) % 3)
    val = _npz(tmp / "val.npz", X[:4], [0, 1, 5, 2])
    result = run(["train", "--data", train, "--val-data", val, "--task", "multiclass", "--out", str(tmp / "run")])
    assert_usage_error(result, "val.npz: array 'y' row 2: class '5' is not one of the classes of the training "
                               "data (0, 1, 2)", tmp / "run")


def test_non_binary_labels(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, [0, 1, 2, 1, 0, 1, 0, 1, 0.5, 1, 0, 1])
    result = run(["train", "--data", data, "--task", "binary", "--out", str(tmp / "run")])
    assert_usage_error(result, "train.npz: array 'y' rows 2, 8: class '2' is not one of the classes of the "
                       "training data (0, 1)",
                       tmp / "run")


def test_negative_and_fractional_counts_reported_together(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, [0, 1, -2, 1, 0, 3, 0, 1.5, 0, 1, 0, 1])
    result = run(["train", "--data", data, "--task", "count", "--out", str(tmp / "run")])
    assert result.exit_code == 2
    assert result.output == (
        "Error: 2 problems in the input data:\n"
        "  - train.npz: array 'y' row 2: -2 is negative; count labels are non-negative integers\n"
        "  - train.npz: array 'y' row 7: 1.5 is fractional; count labels are non-negative integers (use "
        "--task regression for amounts)\n")


def test_channel_mismatch_and_label_problem_in_test_file_together(base):
    tmp, X = base
    train = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    test = _npz(tmp / "test.npz", np.zeros((3, 2, 8)), [0, 1, 7])
    result = run(["train", "--data", train, "--test-data", test, "--out", str(tmp / "run")])
    assert result.exit_code == 2
    assert result.output == (
        "Error: 2 problems in the input data:\n"
        "  - test.npz: series have 2 channels but the training data has 1; all files must have the same channels\n"
        "  - test.npz: array 'y' row 2: class '7' is not one of the classes of the training data (0, 1)\n")
    assert not (tmp / "run").exists()


def test_fixed_length_model_with_other_length_test_file(base):
    tmp, X = base
    train = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    test = _npz(tmp / "test.npz", np.zeros((3, 1, 10)), [0, 1, 1])
    result = run(["train", "--data", train, "--test-data", test, "--model", "simple-cnn", "--out", str(tmp / "r")])
    assert_usage_error(result, "test.npz: series have length 10 but --model simple-cnn was built for the training "
                               "length 8; use --model fcn or resnet for any length", tmp / "r")


def test_loss_that_does_not_fit_the_task(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    result = run(["train", "--data", data, "--loss", "mse", "--out", str(tmp / "run")])
    assert_usage_error(result, "--loss 'mse' does not fit --task binary ('mse' is a loss for --task regression, "
                               "forecast); "
                               "choose one of bce_with_logits, bce, hinge, or a custom loss as "
                               "package.module:ClassName", tmp / "run")


def test_parameter_for_another_loss(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.arange(12) % 3)
    result = run(["train", "--data", data, "--huber-delta", "2", "--out", str(tmp / "run")])
    assert_usage_error(result, "--huber-delta does not apply to --loss cross_entropy; it takes --class-weights, "
                               "--label-smoothing", tmp / "run")


def test_wrong_number_of_class_weights(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.arange(12) % 3)
    result = run(["train", "--data", data, "--class-weights", "1,2", "--out", str(tmp / "run")])
    assert_usage_error(result, "--class-weights has 2 values but the data has 3 classes (0, 1, 2); give one weight "
                               "per class", tmp / "run")


def test_bad_choice_lists_valid_names(base):
    result = run(["train", "--task", "ranking"])
    assert result.exit_code == 2
    assert "'ranking' is not one of 'regression', 'binary', 'multiclass', 'multilabel', 'count'" in result.output


def test_bad_flag_value(base):
    assert_usage_error(run(["train", "--val-split", "1.5"]), "--val-split must be in [0, 1); got 1.5")
    assert_usage_error(run(["train", "--epochs", "0"]), "--epochs must be > 0; got 0")


def test_existing_out_folder_is_not_overwritten(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    (tmp / "run").mkdir()
    (tmp / "run" / "keep.txt").write_text("mine")
    result = run(["train", "--data", data, "--out", str(tmp / "run")])
    assert_usage_error(result, f"{tmp / 'run'} already exists and is not empty; pass --force to overwrite it or "
                               "choose another --out")
    assert (tmp / "run" / "keep.txt").read_text() == "mine"


def test_resume_refuses_flags_fixed_by_the_run(base):
    tmp, _ = base
    result = run(["train", "--resume", str(tmp), "--lr", "0.1"])
    assert_usage_error(result, "--resume continues a run with its saved settings; --lr cannot be changed (allowed "
                               "with --resume: --epochs, --patience, --compile, --compile-mode, --device, "
                               "--threads, --precision, --progress, --nproc, --mlflow-optional)")


@pytest.mark.parametrize("command", [[], ["train"]])
def test_every_command_has_help_with_an_example(command):
    result = run(command + ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "pipeline train" in result.output


def test_every_registered_command_has_help_with_an_example():
    for name, command in main.commands.items():
        result = run([name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"`pipeline {name} --help` has no example"
        assert f"pipeline {name}" in command.help, name


def _truncated_npz(path):
    np.savez(path, X=np.zeros((4, 8)), y=np.zeros(4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_FILES = {
    "truncated.npz": (_truncated_npz, "truncated.npz: not a readable .npz archive (File is not a zip file); save it "
                                      "with numpy.savez"),
    "semicolons.csv": ("1;2;3\n4;5;6\n", "semicolons.csv: values are not comma separated; a .csv needs ',' between "
                                         "values (UCR tab-separated files must end in .tsv)"),
    "ragged.csv": ("t0,t1,y\n1,2,0\n1,2\n1,3,1\n", "ragged.csv: line 3 has 2 values, expected 3; every row must "
                                                   "have the same number of columns (pad unequal series yourself)"),
    "text.csv": ("t0,t1,y\n1,2,0\n1,oops,1\n", "text.csv: line 3 column 't1': 'oops' is not a number; series "
                                              "values must be numeric"),
    "empty.csv": ("", "empty.csv: is empty; it needs one series per row"),
    "nolabel.csv": ("t0,t1,y\n1,2,0\n1,3,\n", "nolabel.csv: line 3 column 'y': the label is missing; every series "
                                             "needs one (drop unlabelled rows, or use pipeline predict for them)"),
    "latin1.csv": (b"t0,t1,y\n1,2,0\n1,3,caf\xe9\n", "latin1.csv: line 3 is not UTF-8 text; save the file as UTF-8 "
                                                   "(text files must be UTF-8)"),
    "nolabel.tsv": ("1\t0.5\t0.25\n\t1\t2\n", "nolabel.tsv: line 2: the label (the first value) is missing; every "
                                              "series needs one"),
    "text.tsv": ("1\t0.5\t0.25\n2\tx\t2\n", "text.tsv: line 2: 'x' is not a number; series values must be numeric"),
    "header.ts": ("hello\n1,2:a\n", "header.ts: line 1: expected an '@' header line or '@data' before the series; "
                                    "this is not a valid .ts file"),
    "nolabel.ts": ("@problemName x\n@classLabel true a b\n@data\n1,2,3:a\n1,2,3\n",
                   "nolabel.ts: line 5: the label is missing; with @classLabel/@targetLabel true each series ends "
                   "in ':label'"),
    "nolabels.npz": (lambda p: np.savez(p, X=np.zeros((4, 8))),
                     "nolabels.npz: has no array 'y' (found ['X']); save labels as y=(N,) or (N, K)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_reader_refuses_a_bad_file_with_one_line_naming_file_and_row(tmp_path, name):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if callable(content):
        content(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "run"
    result = run(["train", "--data", str(path), "--epochs", "1", "--out", str(out), "--no-progress"])
    assert_usage_error(result, message, out_dir=out)


@pytest.mark.parametrize("value", ["1.0", "1.5"])
def test_a_loss_flag_is_given_whatever_its_value(base, value):
    """--huber-delta at its default value is as much a flag as any other value: both are refused for mse."""
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.linspace(0, 1, 12))
    result = run(["train", "--data", data, "--task", "regression", "--huber-delta", value, "--out", str(tmp / "run")])
    assert_usage_error(result, "--huber-delta does not apply to --loss mse; it takes no parameters", tmp / "run")


def test_tensorboard_at_an_existing_file_is_refused_before_anything_runs(base):
    tmp, X = base
    data = _npz(tmp / "train.npz", X, np.arange(12) % 2)
    (tmp / "events").write_text("mine")
    result = run(["train", "--data", data, "--tensorboard", str(tmp / "events"), "--out", str(tmp / "run")])
    assert_usage_error(result, f"--tensorboard {tmp / 'events'} is a file; pass a folder for the event files (or "
                               "--tensorboard alone for RUN_DIR/tensorboard)", tmp / "run")
    assert (tmp / "events").read_text() == "mine"


@pytest.mark.parametrize("opset", ["5", "17", "24"])
def test_opset_outside_what_the_exporter_writes_is_refused_with_the_checked_range(tmp_path, opset):
    """torch.onnx's dynamo exporter writes opset 18 when asked for less: a manifest would claim the other."""
    result = run(["export", str(tmp_path), "--opset", opset, "--out", str(tmp_path / "bundle")])
    assert_usage_error(result, f"--opset {opset} is not supported; use 18..23 (default 18)", tmp_path / "bundle")
