"""The scikit-learn estimators: scikit-learn's own estimator checks, the model-selection tools (cross-validation,
a grid search in joblib processes, a Pipeline), and the exported bundle answering as predict_proba."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import runtime
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.settings.fields import api_name, flagged
from pipeline.sklearn import NOT_PARAMETERS, CNNClassifier, CNNRegressor, InputError
from tests.conftest import make_task_data

SMALL = dict(width=0.25, epochs=10, device="cpu")


@parametrize_with_checks([CNNClassifier(**SMALL), CNNRegressor(**SMALL)])
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def _series(task: str, n: int = 60, seed: int = 0):
    X, y = make_task_data(task, n=n, length=16, seed=seed)
    return X[:, 0], y  # (n, L): n_features_in_ = L


def test_the_parameters_are_the_training_settings():
    fields = {api_name(f, flag) for cls in (DataConfig, LossConfig, ModelConfig, TrainConfig)
              for f, flag in flagged(cls)} - NOT_PARAMETERS
    params = CNNClassifier().get_params()
    assert set(params) == fields | {"random_state", "verbose"}
    assert params["model"] == "fcn" and params["optimizer"] == "adam" and params["head"] == "auto"
    # None: the model's recipe, as the CLI (lr: 1e-3, or 1e-4 for a kernel model's linear head)
    assert params["epochs"] is None and params["batch_size"] is None and params["lr"] is None
    assert CNNRegressor(lr=0.5).set_params(model="resnet").get_params()["model"] == "resnet"


def test_cross_validation_beats_the_majority_baseline():
    X, y = _series("multiclass", n=90)
    ours = cross_val_score(CNNClassifier(width=0.25, epochs=15, lr=1e-2, random_state=0), X, y, cv=3)
    baseline = cross_val_score(DummyClassifier(), X, y, cv=3)
    assert ours.shape == (3,) and ours.mean() > baseline.mean() + 0.2, (ours, baseline)


@pytest.mark.slow  # joblib worker processes
def test_a_grid_search_in_joblib_processes_refits_the_best_as_a_fit_here_would():
    X, y = _series("binary", n=48)
    search = GridSearchCV(CNNClassifier(width=0.25, epochs=5, random_state=3), {"lr": [1e-3, 1e-2]}, cv=2,
                          n_jobs=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 2 and search.best_params_["lr"] in (1e-3, 1e-2)
    here = CNNClassifier(width=0.25, epochs=5, random_state=3, lr=search.best_params_["lr"]).fit(X, y)
    np.testing.assert_allclose(search.predict_proba(X), here.predict_proba(X), atol=1e-12, rtol=0)


def test_a_pipeline_with_a_preprocessing_step_trains_on_the_transformed_series():
    X, y = _series("regression", n=40)
    y = y[:, 0]
    diff = FunctionTransformer(lambda a: np.diff(a, axis=-1))
    pipe = make_pipeline(diff, CNNRegressor(width=0.25, epochs=20, lr=1e-2, random_state=1)).fit(X, y)
    alone = CNNRegressor(width=0.25, epochs=20, lr=1e-2, random_state=1).fit(np.diff(X, axis=-1), y)
    np.testing.assert_allclose(pipe.predict(X), alone.predict(np.diff(X, axis=-1)), atol=1e-12, rtol=0)
    assert pipe[-1].n_features_in_ == X.shape[1] - 1
    assert pipe.score(X, y) > DummyRegressor().fit(X, y).score(X, y) + 0.3


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_the_exported_bundle_answers_as_predict_proba(task, tmp_path):
    X, y = _series(task)
    if task != "multilabel":
        y = np.array(["low", "mid", "high"])[y]
    clf = CNNClassifier(width=0.25, epochs=5, random_state=0).fit(X, y)
    bundle = clf.export(tmp_path / "bundle", formats="onnx")
    out = runtime.load(bundle).predict(X)
    if task == "binary":
        np.testing.assert_allclose(out["probability"][:, 0], clf.predict_proba(X)[:, 1], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(clf.classes_, ["low", "mid"])
    elif task == "multiclass":
        np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(clf.classes_[out["label"]], clf.predict(X))
    else:
        np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5, rtol=1e-5)
        assert clf.predict(X).shape == y.shape


def test_the_regressor_takes_several_targets_and_its_bundle_answers_the_same(tmp_path):
    X, y = _series("regression")
    reg = CNNRegressor(width=0.25, epochs=10, random_state=0).fit(X, 100.0 * y + 1000.0)
    assert reg.predict(X).shape == y.shape and reg.n_outputs_ == 2
    out = runtime.load(reg.export(tmp_path / "bundle")).predict(X)["prediction"]
    np.testing.assert_allclose(out, reg.predict(X), atol=1e-3, rtol=1e-5)


def test_pickled_and_cloned_estimators_and_a_fixed_random_state(tmp_path):
    X, y = _series("multiclass")
    clf = CNNClassifier(width=0.25, epochs=5, random_state=7).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "model_")
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), clf.predict_proba(X))  # deterministic on CPU
    other = CNNClassifier(width=0.25, epochs=5, random_state=8).fit(X, y)
    assert not np.allclose(other.predict_proba(X), clf.predict_proba(X))


def test_quiet_by_default_and_errors_are_value_errors_naming_the_array(capsys):
    X, y = _series("binary", n=20)
    CNNClassifier(width=0.25, epochs=2).fit(X, y)
    assert capsys.readouterr() == ("", "")
    CNNClassifier(width=0.25, epochs=2, verbose=True).fit(X, y)
    assert "training fcn for binary" in capsys.readouterr().out
    fixed = CNNClassifier(width=0.25, epochs=2, model="linear").fit(X[:, None, :], y)  # (n, C, L): any L fits
    with pytest.raises(InputError) as caught:
        fixed.predict(X[:, None, :12])
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == ("X: series have length 12 but this model takes exactly 16 (it was trained with a "
                                 "fixed-length model; resample or crop the series)")


def test_an_int8_export_is_measured_on_the_labelled_series_given(tmp_path):
    X, y = _series("multiclass", n=60)
    names = np.array(["low", "mid", "high"])[y]
    clf = CNNClassifier(width=0.25, epochs=5, random_state=0).fit(X, names)
    with pytest.raises(InputError) as caught:
        clf.export(tmp_path / "none", quantize="int8")
    assert str(caught.value) == ("export(quantize='int8') calibrates and measures the quantised graph on labelled "
                                 "series: pass X and y")
    bundle = clf.export(tmp_path / "int8", quantize="int8", X=X, y=names, max_metric_drop=100)
    manifest = runtime.load(bundle, precision="int8").manifest
    assert manifest.int8.evaluated_series == 60 and manifest.int8.metric == "accuracy"
    # the fp32 accuracy the export measured is the estimator's own accuracy on the same series
    assert manifest.int8.fp32 == pytest.approx(clf.score(X, names), abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # the refused export left nothing
