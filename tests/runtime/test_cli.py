"""`pipeline predict`, `evaluate` and `verify` end to end in tmp_path, as a user runs them."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import runtime
from export.bundle import sha256
from pipeline.cli import main
from tests.conftest import CLASS_NAMES, write_task_files


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A multiclass run trained and exported through the CLI, with string class names."""
    root = tmp_path_factory.mktemp("cli")
    train_file, test_file = write_task_files(root, "multiclass")
    result = _invoke("train", "--data", train_file, "--test-data", test_file, "--epochs", 3, "--width", 0.25,
                     "--lr", 0.01, "--out", root / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    result = _invoke("export", root / "run", "--format", "onnx")
    assert result.exit_code == 0, result.output
    return root


def test_predict_writes_each_format_with_class_names(cli_run, tmp_path):
    bundle_dir, data = cli_run / "run" / "bundle", cli_run / "test.npz"
    expected = runtime.load(bundle_dir).predict(np.load(data)["X"])
    for name in ("p.csv", "p.jsonl", "p.npy", "p.npz"):
        result = _invoke("predict", bundle_dir, "--data", data, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert result.output == f"wrote {tmp_path / name} (37 series)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.jsonl", "p.npy", "p.npz"]
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "label", "probability_cat", "probability_dog", "probability_eel"]
    assert [r["label"] for r in rows] == CLASS_NAMES[expected["label"]].tolist()
    probabilities = np.array([[float(r[f"probability_{c}"]) for c in CLASS_NAMES] for r in rows], np.float32)
    np.testing.assert_array_equal(probabilities, expected["probabilities"])  # float32 text reads back exactly
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(37))
    assert [line["label"] for line in lines] == [r["label"] for r in rows]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), expected["probabilities"])
    with np.load(tmp_path / "p.npz") as saved:
        assert sorted(saved.files) == ["label", "logits", "probabilities"]
        for key in saved.files:
            np.testing.assert_array_equal(saved[key], expected[key])
    to_stdout = _invoke("predict", bundle_dir, "--data", data)
    assert to_stdout.exit_code == 0
    assert to_stdout.output == (tmp_path / "p.csv").read_text()


def test_predict_refuses_to_overwrite_and_unknown_suffixes(cli_run, tmp_path):
    bundle_dir, data = cli_run / "run" / "bundle", cli_run / "test.npz"
    (tmp_path / "p.csv").write_text("keep me")
    result = _invoke("predict", bundle_dir, "--data", data, "--out", tmp_path / "p.csv")
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'p.csv'} already exists; pass --force to replace it or choose another --out\n"
    assert (tmp_path / "p.csv").read_text() == "keep me"
    assert _invoke("predict", bundle_dir, "--data", data, "--out", tmp_path / "p.csv", "--force").exit_code == 0
    result = _invoke("predict", bundle_dir, "--data", data, "--out", tmp_path / "p.parquet")
    assert (result.exit_code, result.output) == (2, f"Error: --out {tmp_path / 'p.parquet'}: unsupported type "
                                                    "'.parquet'; use one of .csv, .jsonl, .npy, .npz\n")
    result = _invoke("predict", tmp_path, "--data", data)
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path / 'manifest.json'}: not found; {tmp_path} is "
                                                    "not a bundle (pipeline export writes one)\n")
    np.savez(tmp_path / "three.npz", X=np.zeros((2, 3, 16), np.float32))
    result = _invoke("predict", bundle_dir, "--data", tmp_path / "three.npz")
    assert (result.exit_code, result.output) == (2, "Error: three.npz: series have 3 channels but the model was "
                                                    "trained on 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "three.npz"]


def test_evaluate_prints_the_trainers_test_metrics_from_every_reader(cli_run, tmp_path):
    bundle_dir = cli_run / "run" / "bundle"
    trained = json.loads((cli_run / "run" / "metrics.json").read_text())["test"]
    data = np.load(cli_run / "test.npz")
    X, y = data["X"][:, 0, :], data["y"]
    # the same series and labels as .npz, .csv (label column by name), UCR .tsv and .ts
    with open(tmp_path / "test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"t{i}" for i in range(X.shape[1])] + ["animal"])
        writer.writerows([*map(repr, row.tolist()), label] for row, label in zip(X, y))
    (tmp_path / "test.tsv").write_text("".join(
        "\t".join([label, *map(repr, row.tolist())]) + "\n" for row, label in zip(X, y)))
    (tmp_path / "test.ts").write_text("@problemName t\n@univariate true\n@equalLength true\n@classLabel true cat dog eel\n"
                                      "@data\n" + "".join(",".join(map(repr, row.tolist())) + f":{label}\n"
                                                          for row, label in zip(X, y)))
    for path, extra in ((cli_run / "test.npz", []), (tmp_path / "test.csv", ["--target-column", "animal"]),
                        (tmp_path / "test.tsv", []), (tmp_path / "test.ts", [])):
        result = _invoke("evaluate", bundle_dir, "--data", path, "--json", *extra)
        assert result.exit_code == 0, result.output
        got = json.loads(result.output)
        assert (got.pop("data"), got.pop("series"), got.pop("task"), got.pop("precision")) == (
            str(path), 37, "multiclass", "fp32")
        assert got["accuracy"] == trained["accuracy"] and got["macro_f1"] == trained["macro_f1"], path
        assert got["loss"] == pytest.approx(trained["loss"], abs=1e-6, rel=1e-6), path
    text = _invoke("evaluate", bundle_dir, "--data", cli_run / "test.npz")
    assert text.output.splitlines() == [f"{cli_run / 'test.npz'}: 37 series, task multiclass, fp32 model graph",
                                        f"  loss             {got['loss']:.6g}",
                                        f"  accuracy         {got['accuracy']:.6g}",
                                        f"  macro_f1         {got['macro_f1']:.6g}"]
    np.savez(tmp_path / "bad.npz", X=X, y=np.where(y == "dog", "wolf", y))
    result = _invoke("evaluate", bundle_dir, "--data", tmp_path / "bad.npz")
    rows = np.flatnonzero(y == "dog")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: bad.npz: array 'y' rows {', '.join(map(str, rows[:5]))} and "
                                    f"{len(rows) - 5} more: class 'wolf' is not one of the classes of the training data "
                                    "(cat, dog, eel)\n")


def test_verify_passes_then_fails_on_a_changed_graph(cli_run, tmp_path):
    bundle_dir = cli_run / "run" / "bundle"
    result = _invoke("verify", bundle_dir)
    assert result.exit_code == 0, result.output
    signature, *lines = result.output.splitlines()
    assert signature == f"signature: none (pipeline sign {bundle_dir} --key KEY.pem signs it)"
    assert lines[:3] == ["sha256 of every file: ok", "golden data:", lines[2]]
    assert [line.split()[:3] for line in lines[4:9]] == [
        ["model", "onnxruntime", "logits"], ["model", "onnxruntime", "probabilities"],
        ["model", "onnxruntime", "label"], ["loss", "onnxruntime", "loss"], ["loss", "onnxruntime", "per_sample_loss"]]
    assert all(line.endswith("  ok") for line in lines[4:9])
    assert lines[9] == f"eager re-check against {(cli_run / 'run').resolve()}"
    # 13 model cases x 3 outputs + 7 loss cases (4 batch sizes, 3 at the edges) x 2 outputs
    assert lines[10].startswith("53 checks, worst |diff| ") and lines[10].endswith(" of the tolerance: ok")
    assert lines[11] == "verified"
    # a changed bias with a manifest updated to match: the sums pass, the numbers must not
    copy = shutil.copytree(bundle_dir, tmp_path / "changed")
    proto = onnx.load(str(copy / "model.onnx"))
    for init in proto.graph.initializer:
        if init.name.endswith("head.bias"):
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(proto, str(copy / "model.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": sha256(copy / "model.onnx"),
                                       "bytes": (copy / "model.onnx").stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = _invoke("verify", copy)
    assert result.exit_code == 1
    golden = [line for line in result.output.splitlines() if line.startswith("model  onnxruntime")][:3]
    assert [line.split()[2] for line in golden] == ["logits", "probabilities", "label"]
    assert golden[0].endswith("values differ beyond tolerance")
    assert "Error: the bundle's graphs disagree with the reference outputs (table above)" in result.output
    other = _invoke("verify", bundle_dir, "--run", tmp_path)
    assert (other.exit_code, other.output) == (2, f"Error: --run {tmp_path}: has no best.pt; pass the run folder the "
                                                  "bundle was exported from\n")


def test_predict_streams_a_float64_npy_without_labels(cli_run, tmp_path):
    bundle_dir = cli_run / "run" / "bundle"
    X = np.load(cli_run / "test.npz")["X"]
    np.save(tmp_path / "x64.npy", X[:, 0, :].astype(np.float64))  # (N, L) float64, read memory-mapped
    result = _invoke("predict", bundle_dir, "--data", tmp_path / "x64.npy", "--out", tmp_path / "p.npz",
                     "--batch-size", 4)
    assert result.exit_code == 0, result.output
    expected = runtime.load(bundle_dir).predict(X)
    with np.load(tmp_path / "p.npz") as got:
        np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-6, rtol=1e-6)
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_predict_refuses_a_truncated_or_foreign_npy_with_one_line(cli_run, tmp_path):
    bundle_dir = cli_run / "run" / "bundle"
    np.save(tmp_path / "cut.npy", np.zeros((64, 1, 16), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-100])
    (tmp_path / "foreign.npy").write_bytes(b"\x93NUMPY garbage")
    for name in ("cut.npy", "foreign.npy"):  # numpy's own reason goes in the parentheses
        result = _invoke("predict", bundle_dir, "--data", tmp_path / name, "--out", tmp_path / "p.csv")
        assert result.exit_code == 2 and result.output.count("\n") == 1
        if name == "cut.npy":  # found from the header and the file size, before numpy maps anything
            assert result.output == ("Error: cut.npy: the file declares shape (64, 1, 16) of float32 (4,096 bytes) but "
                                     "the file holds 3,996 bytes; it is truncated or altered, save it again with numpy\n")
        else:
            assert result.output.startswith(f"Error: {name}: not a readable .npy array (")
            assert result.output.endswith("); save it with numpy.save\n")
        assert not (tmp_path / "p.csv").exists()
