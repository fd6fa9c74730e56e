"""The task registry (runtime/tasks.py): one label encoding for training and the runtime, outputs for people."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.metrics import sigmoid
from runtime.tasks import TASKS, compute_metrics


def test_labels_are_encoded_to_each_tasks_target_dtype_and_shape():
    enc = lambda task, y, classes=None, k=1: TASKS[task].encode(np.asarray(y), classes, k, "y")  # noqa: E731
    t, problems = enc("multiclass", ["dog", "cat", "dog"], ["cat", "dog", "eel"], 3)
    assert problems == [] and t.dtype == np.int64 and t.tolist() == [1, 0, 1]
    t, _ = enc("multiclass", [2.0, 0.0], ["0", "1", "2"], 3)  # numbers name class indices
    assert t.tolist() == [2, 0]
    t, _ = enc("binary", ["no", "yes", "no"], ["no", "yes"])
    assert t.dtype == np.float32 and t.tolist() == [[0.0], [1.0], [0.0]]
    t, _ = enc("count", np.array(["3", "0", "12"]))  # numbers as text, from a text file
    assert t.dtype == np.float32 and t.tolist() == [[3.0], [0.0], [12.0]]
    t, _ = enc("multilabel", [[0, 1], [1, 1]], None, 2)
    assert t.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    t, _ = enc("regression", [0.5, -2.25])
    assert t.tolist() == [[0.5], [-2.25]]


def test_every_problem_is_collected_with_its_lines():
    lines = np.array([2, 3, 5, 6])  # a header and a blank line before row 2
    t, problems = TASKS["count"].encode(np.array([1.0, -2.0, 1.5, -0.5]), None, 1, "f.csv: column 'n'", lines)
    assert t is None
    assert problems == ["f.csv: column 'n' lines 3, 6: -2 is negative; count labels are non-negative integers",
                        "f.csv: column 'n' lines 5, 6: 1.5 is fractional; count labels are non-negative integers "
                        "(use --task regression for amounts)"]
    _, problems = TASKS["multiclass"].encode(np.array([0.0, np.nan]), ["0", "1"], 2, "y")
    assert problems == ["y row 1: label is NaN or Inf; every series needs a label (drop or fill those rows)"]
    _, problems = TASKS["multiclass"].encode(np.array([0.0, 1.5]), ["0", "1"], 2, "y")
    assert problems == ["y row 1: 1.5 is not an integer; multiclass labels are integer class indices 0..C-1 or "
                        "class names"]
    _, problems = TASKS["regression"].encode(np.ones((3, 2)), None, 1, "y")
    assert problems == ["y: has 2 target columns but the training data has 1; every file needs the same targets"]


def test_encoded_targets_are_checked_with_the_same_value_rules():
    t, problems = TASKS["multilabel"].check_encoded(np.array([[0, 1], [2, 0]]), 2)
    assert t is None and problems == ["target row 1: [2, 0] is not 0 or 1"]
    t, problems = TASKS["multiclass"].check_encoded(np.array([0, 3]), 3)
    assert problems == ["target row 1: 3 is not a class index 0..2"]
    t, problems = TASKS["count"].check_encoded(np.array([1.0, 4.0]), 1)
    assert problems == [] and t.shape == (2, 1) and t.dtype == np.float32


def test_prediction_columns_follow_from_the_scores():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]], dtype=np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    columns = TASKS["multiclass"].prediction_columns(
        {"logits": logits, "probabilities": p, "label": logits.argmax(1)}, ["cat", "dog", "eel"], 3)
    assert list(columns) == ["label", "probability_cat", "probability_dog", "probability_eel"]
    assert columns["label"].tolist() == ["cat", "dog"]
    np.testing.assert_allclose(columns["probability_eel"], p[:, 2], rtol=0, atol=0)
    logit = np.array([[1.5], [-0.2]], dtype=np.float32)
    columns = TASKS["binary"].prediction_columns({"logit": logit, "probability": sigmoid(logit)}, ["no", "yes"], 1)
    assert columns["label"].tolist() == ["yes", "no"] and list(columns) == ["label", "probability_yes"]
    columns = TASKS["multilabel"].prediction_columns({"logits": logits[:, :2], "probabilities": sigmoid(logits[:, :2])},
                                                     None, 2)
    assert list(columns) == ["label_0", "label_1", "probability_0", "probability_1"]
    assert columns["label_0"].tolist() == [1, 0] and columns["label_1"].tolist() == [0, 1]
    rate = np.array([[2.0, 0.5]], dtype=np.float32)
    columns = TASKS["count"].prediction_columns({"log_rate": np.log(rate), "rate": rate}, None, 2)
    assert list(columns) == ["rate_0", "rate_1"] and columns["rate_1"].tolist() == [0.5]


@pytest.mark.parametrize("task", TASKS)
def test_each_task_names_its_metrics_and_computes_them(task):
    spec = TASKS[task]
    rng = np.random.default_rng(0)
    k = 3 if spec.scores == "softmax" else 1
    raw = rng.normal(size=(12, k))
    target, problems = spec.check_encoded(np.arange(12) % 3 if spec.scores == "softmax" else
                                          (np.arange(12) % 2).astype(float), k)
    assert problems == []
    assert list(compute_metrics(task, raw, target)) == list(spec.metrics)
    assert spec.outputs[0] in ("prediction", "logit", "logits", "log_rate") and spec.main_output in spec.outputs
