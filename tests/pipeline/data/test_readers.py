"""Readers on small files written here: shapes, labels, memory mapping and bad-file messages."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from pipeline.data import readers
from pipeline.data.readers import read_series
from pipeline.errors import DataError


def _problems(path, **kwargs) -> list[str]:
    with pytest.raises(DataError) as err:
        read_series(path, **kwargs)
    return err.value.problems


def test_npz_3d_and_2d(tmp_path):
    X = np.arange(2 * 3 * 5, dtype=np.float64).reshape(2, 3, 5)
    np.savez(tmp_path / "a.npz", X=X, y=np.array([0, 1]))
    np.savez(tmp_path / "b.npz", X=X[:, 0, :], y=np.array(["cat", "dog"]))
    a, b = read_series(tmp_path / "a.npz"), read_series(tmp_path / "b.npz")
    assert a.X.shape == (2, 3, 5) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X, X.astype(np.float32))
    assert b.X.shape == (2, 1, 5) and b.y.tolist() == ["cat", "dog"]
    assert a.label_field == "array 'y'"


def test_npz_missing_arrays_are_reported_together(tmp_path):
    np.savez(tmp_path / "bad.npz", data=np.zeros((2, 3)))
    assert _problems(tmp_path / "bad.npz") == [
        "bad.npz: has no array 'X' (found ['data']); save series as X=(N, C, L) or (N, L)",
        "bad.npz: has no array 'y' (found ['data']); save labels as y=(N,) or (N, K)",
    ]


def test_large_uncompressed_npz_is_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MMAP_THRESHOLD_BYTES", 1)
    X = np.random.default_rng(0).normal(size=(10, 2, 7)).astype(np.float32)
    np.savez(tmp_path / "big.npz", X=X, y=np.arange(10))
    data = read_series(tmp_path / "big.npz")
    assert isinstance(data.X, np.memmap)
    np.testing.assert_array_equal(np.asarray(data.X), X)
    np.savez_compressed(tmp_path / "small.npz", X=X, y=np.arange(10))  # compressed: read into memory
    assert not isinstance(read_series(tmp_path / "small.npz").X, np.memmap)


def test_csv_with_header_and_target_column(tmp_path):
    (tmp_path / "d.csv").write_text("label,t0,t1,t2\na,1,2,3\nb,4,5,6\n")
    data = read_series(tmp_path / "d.csv", target_column="label")
    np.testing.assert_array_equal(data.X[:, 0, :], [[1, 2, 3], [4, 5, 6]])
    assert data.y.tolist() == ["a", "b"] and data.label_field == "column 'label'"


def test_csv_without_header_uses_last_column(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3,0\n4,5,6,1\n")
    data = read_series(tmp_path / "d.csv")
    assert data.X.shape == (2, 1, 3) and data.y.tolist() == [0.0, 1.0]


def test_csv_bad_rows_are_reported_with_line_numbers(tmp_path):
    (tmp_path / "d.csv").write_text("t0,t1,y\n1,2,0\n1,oops,1\n1,2\n")
    assert _problems(tmp_path / "d.csv") == [
        "d.csv: line 3 column 't1': 'oops' is not a number; series values must be numeric",
        "d.csv: line 4 has 2 values, expected 3; every row must have the same number of columns "
        "(pad unequal series yourself)",
    ]


def test_csv_unknown_target_column(tmp_path):
    (tmp_path / "d.csv").write_text("t0,t1,y\n1,2,0\n")
    assert _problems(tmp_path / "d.csv", target_column="label") == [
        "d.csv: --target-column 'label' not found; columns are t0, t1, y (give a header name or a 0-based "
        "column number)"]


def test_csv_wrong_delimiter_and_empty(tmp_path):
    (tmp_path / "semi.csv").write_text("1;2;3\n4;5;6\n")
    (tmp_path / "empty.csv").write_text("")
    assert _problems(tmp_path / "semi.csv") == [
        "semi.csv: values are not comma separated; a .csv needs ',' between values (UCR tab-separated files "
        "must end in .tsv)"]
    assert _problems(tmp_path / "empty.csv") == ["empty.csv: is empty; it needs one series per row"]


def test_ucr_tsv(tmp_path):
    (tmp_path / "X_TRAIN.tsv").write_text("1\t0.5\t0.25\t0\n2\t1\t2\t3\n")
    data = read_series(tmp_path / "X_TRAIN.tsv")
    assert data.X.shape == (2, 1, 3) and data.y.tolist() == ["1", "2"] and data.labels_are_classes


TS_UNIVARIATE = """# a comment
@problemName Tiny
@timeStamps false
@univariate true
@equalLength true
@seriesLength 3
@classLabel true a b
@data
1,2,3:a
4,5,6:b
"""

TS_MULTI_UNEQUAL = """@problemName Tiny2
@univariate false
@dimensions 2
@equalLength false
@classLabel true x y
@data
1,2,3:4,5,6:x
7,8:9,10:y
"""

TS_REGRESSION = """@problemName Reg
@univariate true
@targetLabel true
@data
1,2,3:0.5
4,5,6:1.5
"""


def test_ts_univariate_multivariate_and_regression(tmp_path):
    (tmp_path / "u.ts").write_text(TS_UNIVARIATE)
    (tmp_path / "m.ts").write_text(TS_MULTI_UNEQUAL)
    (tmp_path / "r.ts").write_text(TS_REGRESSION)
    u = read_series(tmp_path / "u.ts")
    assert u.X.shape == (2, 1, 3) and u.y.tolist() == ["a", "b"] and u.labels_are_classes
    m = read_series(tmp_path / "m.ts", pad=True)
    np.testing.assert_array_equal(m.X[1], [[7, 8, 8], [9, 10, 10]])  # edge-padded to length 3
    r = read_series(tmp_path / "r.ts")
    assert r.y.tolist() == [0.5, 1.5] and not r.labels_are_classes


def test_ts_unequal_length_without_pad_is_a_clear_error(tmp_path):
    (tmp_path / "m.ts").write_text(TS_MULTI_UNEQUAL)
    assert _problems(tmp_path / "m.ts") == [
        "m.ts: series have unequal lengths (2..3); pass --pad to right-pad each series with its last value to "
        "length 3"]


def test_ts_bad_header(tmp_path):
    (tmp_path / "h.ts").write_text("hello\n1,2:a\n")
    (tmp_path / "nodata.ts").write_text("@problemName x\n@classLabel true a\n")
    assert _problems(tmp_path / "h.ts") == [
        "h.ts: line 1: expected an '@' header line or '@data' before the series; this is not a valid .ts file"]
    assert _problems(tmp_path / "nodata.ts") == [
        "nodata.ts: no '@data' line; a .ts file needs its header and then '@data'"]


def test_missing_file_and_unknown_suffix(tmp_path):
    (tmp_path / "x.parquet").write_text("")
    assert _problems(tmp_path / "nope.npz") == [f"{tmp_path / 'nope.npz'}: file not found; check the path "
                                                "given to --data"]
    assert _problems(tmp_path / "x.parquet") == [
        f"{tmp_path / 'x.parquet'}: unsupported file type '.parquet'; use one of .npz, .npy, .csv, .tsv, .ts"]


def test_truncated_npz(tmp_path):
    np.savez(tmp_path / "t.npz", X=np.zeros((4, 8)), y=np.zeros(4))
    raw = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    problems = _problems(tmp_path / "t.npz")
    assert len(problems) == 1 and problems[0].startswith("t.npz: not a readable .npz archive (")
    assert problems[0].endswith("); save it with numpy.savez")
    assert zipfile.is_zipfile(tmp_path / "t.npz") is False
