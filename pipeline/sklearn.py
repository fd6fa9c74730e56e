"""scikit-learn estimators: `CNNClassifier` (binary, multiclass, multilabel) and `CNNRegressor` (one or several
targets), trained by `pipeline.fit`. Their parameters are the settings of `pipeline train` (the same fields,
names and defaults; pipeline/settings/config.py), with `random_state` for --seed and `verbose` for the log and progress
bars. X is (n, L) (then n_features_in_ = L) or (n, C, L). Needs the `sklearn` extra:
pip install -e '.[sklearn]'."""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.errors import PipelineError
from pipeline.settings.fields import api_name, flagged

# settings an estimator does not take: the data is fit's X and y, the task follows from the estimator and y,
# --seed is random_state, --progress is verbose; trackers belong to the command line
NOT_PARAMETERS = {"data", "val_data", "test_data", "target_column", "task", "pad", "seed", "progress",
                  "tensorboard", "mlflow"}


class InputError(PipelineError, ValueError):
    """A problem with X, y or a parameter: a ValueError, as scikit-learn's tools expect."""


def _parameters() -> list[tuple[str, object]]:
    """(name, default) of every estimator parameter, from the config fields (unset flags: None, the recipe)."""
    params = []
    for cls in (DataConfig, LossConfig, ModelConfig, TrainConfig):
        for f, flag in flagged(cls):
            name = api_name(f, flag)
            if name not in NOT_PARAMETERS:
                params.append((name, None if flag.unset else f.default))
    return params + [("random_state", None), ("verbose", False)]


PARAMETERS = _parameters()


def _init(self, **params):
    for name, default in PARAMETERS:
        setattr(self, name, params.pop(name, default))
    if params:
        raise TypeError(f"{type(self).__name__}: unexpected parameter(s) {', '.join(sorted(params))}")


_init.__signature__ = inspect.Signature(  # what get_params, clone and the repr read
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in PARAMETERS])


class _CNNEstimator(BaseEstimator):
    __init__ = _init

    def _seed(self) -> int:
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _fit(self, X: np.ndarray, y: np.ndarray, task: str):
        import pipeline

        settings = {name: getattr(self, name) for name, _ in PARAMETERS if name not in ("random_state", "verbose")}
        settings = {k: v for k, v in settings.items() if v is not None and not (k == "loss_param" and v == ())}
        try:
            run = pipeline.fit(X, y, task=task, seed=self._seed(), progress=bool(self.verbose),
                               log=print if self.verbose else None, **settings)
        except PipelineError as exc:
            raise InputError(str(exc)) from None
        from pipeline.training.checkpoint import BEST, load_checkpoint

        self.model_ = run.model
        self.run_config_ = run.config
        self.checkpoint_ = load_checkpoint(run.run_dir / BEST)
        self.history_ = run.history
        self.metrics_ = run.metrics
        return self

    def _validate(self, X, reset: bool, y=None, **kwargs):
        """scikit-learn's own input checks (its ValueErrors, the messages its tools expect)."""
        if y is None and not reset:
            return validate_data(self, X, reset=False, allow_nd=True, dtype=np.float32)
        return validate_data(self, X, y, reset=reset, allow_nd=True, dtype=np.float32, multi_output=True,
                             ensure_min_samples=2, **kwargs)

    def _outputs(self, X, saliency: bool = False) -> dict[str, np.ndarray]:
        from pipeline.api import predict_outputs

        check_is_fitted(self)
        X = self._validate(X, reset=False)
        try:
            return predict_outputs(self.model_, self.run_config_, X, double=True, saliency=saliency)
        except PipelineError as exc:
            raise InputError(str(exc)) from None

    def saliency(self, X) -> np.ndarray:
        """Where the model looked: each series' class activation map, one value per time step ((N, L): the
        predicted class's, or the one target's; (N, outputs, L) for multilabel y or several targets), as
        `export(..., saliency=True)` puts it in the bundle. fcn, resnet, inception, lite and their ensembles."""
        from runtime.manifest import SALIENCY_OUTPUT

        return self._outputs(X, saliency=True)[SALIENCY_OUTPUT]

    def export(self, path, formats: str = "onnx", quantize: str | None = None, X=None, y=None,
               force: bool = False, **settings) -> Path:
        """A verified bundle of the fitted model, as `pipeline export` writes it (settings: opset, atol, rtol,
        device, max_metric_drop); returns its folder. quantize="int8" also writes the int8 graph, calibrated
        and measured on labelled series X, y (as the CLI does on the run's data)."""
        from dataclasses import replace

        from pipeline.api import Run
        from pipeline.training.checkpoint import BEST, save_checkpoint
        from pipeline.data.arrays import series_from_arrays
        from pipeline.training.run_folder import RunFolder

        check_is_fitted(self)
        config, arrays = self.run_config_, {}
        if quantize is not None:
            if X is None or y is None:
                raise InputError(f"export(quantize={quantize!r}) calibrates and measures the quantised graph on "
                                 "labelled series: pass X and y")
            X, y = self._validate(X, reset=False), np.asarray(y)
            arrays = {"train": series_from_arrays(X, self._encode(y), "train")}
        with tempfile.TemporaryDirectory(prefix="pipeline-estimator-") as tmp:
            folder = RunFolder(Path(tmp) / "run")
            if arrays:
                data = replace(config.settings.data, **folder.array_paths(arrays))
                config = replace(config, settings=replace(config.settings, data=data))
            folder.create(config)
            folder.save_arrays(arrays)
            if arrays:
                folder.save_calibration(arrays["train"].X, np.arange(arrays["train"].n), config.seed)
            save_checkpoint(folder.path / BEST, self.checkpoint_)
            run = Run(folder.path, config, [], {}, self.model_)
            try:
                return run.export(path, formats=formats, quantize=quantize, force=force, **settings)
            except PipelineError as exc:
                raise InputError(str(exc)) from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (n, C, L) multichannel series
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags


class CNNClassifier(ClassifierMixin, _CNNEstimator):
    """A 1D CNN classifier: binary and multiclass y (labels of any type), multilabel y (a 2-D 0/1 matrix)."""

    def fit(self, X, y):
        X, y = self._validate(X, reset=True, y=y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind == "multilabel-indicator":
            self.classes_ = np.arange(y.shape[1])
            return self._fit(X, y.astype(np.float32), "multilabel")
        if kind not in ("binary", "multiclass"):
            raise InputError(f"y: {kind} targets are not supported; pass one label per series or a 0/1 matrix")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InputError(f"y: every label is the same class ({self.classes_[0]!r}); a classifier needs at "
                             "least 2 classes to learn from")
        return self._fit(X, encoded.astype(np.int64), "binary" if len(self.classes_) == 2 else "multiclass")

    def _encode(self, y: np.ndarray) -> np.ndarray:
        """Labels as fit encoded them: class indices, or the multilabel matrix."""
        if self.run_config_.task == "multilabel":
            return y.astype(np.float32)
        index = np.searchsorted(self.classes_, y)
        if (index >= len(self.classes_)).any() or (self.classes_[np.minimum(index, len(self.classes_) - 1)] != y).any():
            raise InputError(f"y: holds labels the classifier was not fitted on; its classes are {list(self.classes_)}")
        return index.astype(np.int64)

    def decision_function(self, X) -> np.ndarray:
        """Raw scores: the logit of classes_[1] (binary), one per class (multiclass) or per label (multilabel)."""
        out = self._outputs(X)
        scores = (out["logit"] if "logit" in out else out["logits"]).astype(np.float64)
        return scores[:, 0] if self.run_config_.task == "binary" else scores

    def predict_proba(self, X) -> np.ndarray:
        """(n, classes) probabilities; multilabel: (n, labels), each label's own."""
        scores = self.decision_function(X)
        task = self.run_config_.task
        if task == "binary":
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.column_stack([1.0 - p, p])
        if task == "multilabel":
            return 1.0 / (1.0 + np.exp(-scores))
        z = np.exp(scores - scores.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        task = self.run_config_.task
        if task == "multilabel":
            return (scores > 0).astype(np.int64)
        if task == "binary":
            return self.classes_[(scores > 0).astype(np.int64)]
        return self.classes_[scores.argmax(axis=1)]


class CNNRegressor(RegressorMixin, _CNNEstimator):
    """A 1D CNN regressor: y of one target (n,) or several (n, K)."""

    def fit(self, X, y):
        X, y = self._validate(X, reset=True, y=y, y_numeric=True)
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._targets_2d = y.ndim == 2
        return self._fit(X, y.astype(np.float64), "regression")

    def _encode(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64)

    def predict(self, X) -> np.ndarray:
        prediction = self._outputs(X)["prediction"].astype(np.float64)
        return prediction if self._targets_2d else prediction.reshape(len(prediction))
