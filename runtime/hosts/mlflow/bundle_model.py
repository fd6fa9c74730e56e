"""An exported bundle as an MLflow pyfunc model: numpy + onnxruntime through `runtime`, never torch.

`pipeline export RUN --mlflow URI` logs this file as a "model from code", the `runtime` package as its
code and the bundle folder as the artifact "bundle". `mlflow models serve` then answers

    POST /invocations  {"inputs": [[[x, ...], ...], ...]}      float32 series (batch, channels, length)

with one row per series holding the columns `pipeline predict` writes (label, probability_<class>, ...).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.pyfunc import PythonModel

import runtime
from runtime.outputs import prediction_table


class BundleModel(PythonModel):
    """`predict(series) -> DataFrame` with the bundle's ONNX model graph."""

    def load_context(self, context) -> None:
        self.bundle = runtime.load(context.artifacts["bundle"])  # checks every file's sha256

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        try:
            outputs = self.bundle.predict(np.asarray(model_input, dtype=np.float32), name="inputs")
        except runtime.InputError as exc:  # a bad request is the caller's to fix: HTTP 400 with our message
            raise MlflowException(str(exc), error_code=BAD_REQUEST) from None
        return pd.DataFrame(prediction_table(self.bundle, outputs))


set_model(BundleModel())
