"""Task inference, label encoding and the stratified split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.prepare import encode_labels, fit_encoding, infer_task, stratified_split
from pipeline.data.series import SeriesData
from pipeline.data.synthetic import waveforms


def _data(y, classes=False):
    y = np.asarray(y)
    return SeriesData(np.zeros((len(y), 1, 4), np.float32), y, "f.npz", "array 'y'", labels_are_classes=classes)


@pytest.mark.parametrize("y, task", [
    ([0, 1, 1, 0], "binary"),
    ([0, 2, 1, 2], "multiclass"),
    (["cat", "dog", "cat", "eel"], "multiclass"),
    ([0.5, 1.25, -3.0, 2.0], "regression"),
    ([[0, 1], [1, 1], [0, 0], [1, 0]], "multilabel"),
    ([[0.5, 1], [1, 2], [0, 0], [1, 0]], "regression"),
    (list(range(100)), "regression"),  # too many distinct integers for classes
])
def test_task_inference(y, task):
    assert infer_task(_data(y))[0] == task


def test_class_labels_from_ts_are_multiclass_even_when_numeric():
    data = _data(np.array(["1", "2", "2", "1"]), classes=True)
    task, reason = infer_task(data)
    assert task == "multiclass" and reason == "f.npz declares class labels"
    enc = fit_encoding(task, data)
    assert enc.classes == ("1", "2") and enc.n_outputs == 2
    problems = []
    np.testing.assert_array_equal(encode_labels(enc, data, problems), [0, 1, 1, 0])
    assert problems == []


def test_class_names_sort_naturally_and_unknown_classes_are_reported():
    train = _data(np.array(["10", "9", "2", "9"]), classes=True)
    enc = fit_encoding("multiclass", train)
    assert enc.classes == ("2", "9", "10")
    problems = []
    assert encode_labels(enc, _data(np.array(["2", "11"]), classes=True), problems) is None
    assert problems == ["f.npz: array 'y' row 1: class '11' is not one of the classes of the training data (2, 9, 10)"]


def test_binary_with_two_string_classes_maps_to_0_1():
    data = _data(np.array(["normal", "abnormal", "normal"]))
    enc = fit_encoding("binary", data)
    problems = []
    np.testing.assert_array_equal(encode_labels(enc, data, problems), [[1.0], [0.0], [1.0]])
    assert enc.classes == ("abnormal", "normal")


def test_regression_targets_are_float_columns():
    enc = fit_encoding("regression", _data([1.5, 2.0]))
    problems = []
    out = encode_labels(enc, _data([1.5, 2.0]), problems)
    assert out.dtype == np.float32 and out.shape == (2, 1)


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    y = np.array([0] * 80 + [1] * 20)
    train, val = stratified_split(y, 0.2, seed=5, stratify=True)
    assert len(val) == 20 and np.bincount(y[val]).tolist() == [16, 4]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    again = stratified_split(y, 0.2, seed=5, stratify=True)[1]
    np.testing.assert_array_equal(val, again)


def test_embedded_waveforms_are_deterministic_and_balanced():
    a, b = waveforms(), waveforms()
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.shape == (800, 1, 128) and a.X.dtype == np.float32
    assert sorted(np.unique(a.y, return_counts=True)[1].tolist()) == [200, 200, 200, 200]
