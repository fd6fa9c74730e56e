"""Verification at a threshold (export.thresholds): an engine that flips a comparison sitting on a bias passes
within the bound; the same difference on a series with no such comparison, or any larger difference, fails."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from export.graphs import as_tuple, model_graph
from export.grid import model_cases
from export.thresholds import allowance_for, output_allowance
from export.verify import verify_graph
from pipeline.settings.config import ModelConfig
from pipeline.models.build import build_model
from pipeline.models.ridge import ridge_loo
from runtime.compare import compare
from runtime.tasks import TASKS

ATOL = RTOL = 1e-5


def test_compare_allows_an_elementwise_allowance_and_labels_only_where_allowed():
    e = np.array([[1.0, 2.0], [3.0, 4.0]])
    a = e + np.array([[0.0, 0.0], [0.3, 0.0]])
    assert compare(e, a, ATOL, RTOL).problem == "values differ beyond tolerance"
    assert compare(e, a, ATOL, RTOL, np.array([[0.0, 0.0], [0.31, 0.0]])).problem is None
    assert compare(e, a, ATOL, RTOL, np.array([[0.31, 0.31], [0.0, 0.0]])).problem == "values differ beyond tolerance"
    labels, flipped = np.array([0, 1, 2]), np.array([0, 2, 2])
    assert compare(labels, flipped, ATOL, RTOL).problem == "1 of 3 values differ"
    assert compare(labels, flipped, ATOL, RTOL, np.array([0.0, 1.0, 0.0])).problem is None
    assert compare(labels, flipped, ATOL, RTOL, np.array([1.0, 0.0, 1.0])).problem == "1 of 3 values differ"


def _fitted(name: str, task: str):
    torch.manual_seed(0)
    k = 3 if task == "multiclass" else 1
    model = build_model(ModelConfig(name=name, width=0.1, length=32, n_outputs=k,
                                    combine=TASKS[task].scores)).eval()
    features = model.net.fit(torch.randn(12, 1, 32), torch.Generator().manual_seed(0))
    fit = ridge_loo(features, torch.randn(12, k).sign())  # a head as training fits it
    with torch.no_grad():
        model.net.head.weight.copy_(fit.weight.float())
        model.net.head.bias.copy_(fit.bias.float())
    return model


def _engine(module, task):
    graph = model_graph(module, task)

    def run(inputs):
        with torch.inference_mode():
            return [t.numpy() for t in as_tuple(graph(*inputs))]

    return run


@pytest.mark.parametrize("name, task", [("minirocket", "multiclass"), ("hydra", "binary"),
                                        ("multirocket-hydra", "regression")])
def test_a_flip_on_a_bias_passes_within_its_bound_and_a_real_difference_fails(name, task):
    model = _fitted(name, task)
    cfg = ModelConfig(name=name, width=0.1, length=32, n_outputs=model.net.head.out_features)
    cases = model_cases(model, cfg)
    case = next(c for c in cases if c.inputs[0].shape[0] == 2)
    x = model.normalize(case.inputs[0])
    transform = model.net.transform
    ppv = transform.multirocket.parts[0][0] if name == "multirocket-hydra" else None
    flipped = copy.deepcopy(model)
    if name == "hydra":  # series 0: two kernels of one group respond exactly alike at step 10 (a tie for the max)
        block = model.net.transform.series[0]
        for m in (model, flipped):
            w = m.net.transform.series[0].weight
            with torch.no_grad():
                w[1] = w[0]  # kernels 0 and 1 of group 0 are the same: every position is a tie between them
        twin = flipped.net.transform.series[0].weight
        with torch.no_grad():  # the flipping engine breaks the tie the other way (a rounding of the last bit)
            twin[1] = torch.nextafter(twin[1], twin[1] + torch.sign(twin[1]))
    else:
        block = ppv if ppv is not None else transform.blocks[0]
        on_bias = block.conv(x)[0, 0, 10]
        for m, value in ((model, on_bias), (flipped, torch.nextafter(on_bias, torch.tensor(-math.inf)))):
            target = m.net.transform.multirocket.parts[0][0] if ppv is not None else m.net.transform.blocks[0]
            with torch.no_grad():
                target.bias[0, 0] = value
    allowance = allowance_for(model, TASKS[task].scores)
    outputs = TASKS[task].outputs
    graph = model_graph(model, task)
    flip_rows = verify_graph("model", graph, {"flipping": _engine(flipped, task)}, [case], outputs, ATOL, RTOL,
                             TASKS[task].decision, allowance)
    assert [r.problem for r in flip_rows] == [None] * len(outputs)
    assert flip_rows[0].near_threshold >= 1 and flip_rows[0].threshold_allowance > 0
    moved = max(r.max_abs for r in flip_rows)
    assert moved > 0  # the flip is visible, and only the bound lets it through:
    plain = verify_graph("model", graph, {"flipping": _engine(flipped, task)}, [case], outputs, ATOL, RTOL)
    assert any(r.problem for r in plain), moved
    # a real disagreement (the head's bias moved by twice the largest allowance) fails even with the allowance
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.net.head.bias += 2 * flip_rows[0].threshold_allowance / model.output.scale.abs().min() + 1e-3
    rows = verify_graph("model", graph, {"wrong": _engine(wrong, task)}, [case], outputs, ATOL, RTOL,
                        TASKS[task].decision, allowance)
    assert rows[0].problem == "values differ beyond tolerance"
    bound = output_allowance(model, TASKS[task].scores, case.inputs[0])
    assert bound.outputs[0][1].max() == 0 or name == "hydra"  # series 1 sits on no bias: held to the tolerance
