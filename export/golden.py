"""golden.json: a few inputs with the outputs eager PyTorch gave, as plain JSON every host reads."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch

from export.graphs import as_tuple
from export.verify import Case
from runtime.golden import golden_array


GOLDEN_BATCH = 2  # one of BATCH_SIZES: more than one sample, small JSON


def tensor_json(t: torch.Tensor) -> dict:
    """A tensor as plain JSON (shape, dtype, flat data): the golden-data layout every host reads."""
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "data": t.reshape(-1).tolist()}


def golden_onnx(path: Path, golden_model: dict, output_names) -> dict:
    """An ONNX graph's own outputs on the golden model input (the int8 graph: golden.json model_int8)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: golden_array(v) for n, v in golden_model["inputs"].items()}
    outputs = session.run(None, feeds)
    return {"inputs": golden_model["inputs"],
            "outputs": {n: tensor_json(torch.from_numpy(o)) for n, o in zip(output_names, outputs)}}


def golden_atol(model, cases: list[Case], atol: float) -> float:
    """golden.json's one atol, which every host applies: `atol`, but for a forecaster at least the verification's
    allowance on the golden case (export.thresholds.forecast_allowance: 1e-5 of each window's spread, which an
    engine's float32 rounding reaches; golden.json has one tolerance, so the largest window's)."""
    if getattr(model, "reversible", None) is None:
        return atol
    from export.thresholds import FORECAST_ATOL

    case = next(c for c in cases if c.inputs[0].shape[0] == GOLDEN_BATCH)
    with torch.no_grad():
        spread = float(model.target_spread(case.inputs[0]).max())
    return max(atol, FORECAST_ATOL * spread)


def golden_data(graph, cases: list[Case], input_names, output_names) -> dict:
    case = next(c for c in cases if c.inputs[0].shape[0] == GOLDEN_BATCH)
    with torch.inference_mode():
        outputs = as_tuple(graph(*case.inputs))
    return {"inputs": {n: tensor_json(t) for n, t in zip(input_names, case.inputs)},
            "outputs": {n: tensor_json(t) for n, t in zip(output_names, outputs)}}
