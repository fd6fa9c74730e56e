"""Kernel bundles bound the series per graph call (manifest batch_bound) and the runtime honours it."""

from __future__ import annotations

import json
import shutil

import numpy as np

import runtime
from pipeline.models.kernels.minirocket import MINIROCKET_FEATURES, MINIROCKET_INDICES, minirocket_dilations
from runtime.inputs import MAX_BATCH


def test_a_kernel_bundle_states_its_bound_from_its_largest_comparison_and_a_network_none(kernel_bundles,
                                                                                          task_bundles):
    tb = kernel_bundles["minirocket"]
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    cfg = manifest["model"]
    length = manifest["input"]["length"]["fixed"]
    features = max(len(MINIROCKET_INDICES), round(MINIROCKET_FEATURES * cfg["width"]))
    _, per_dilation = minirocket_dilations(length, features)
    # the largest comparison: half of the 84 kernels x the most biases of one dilation x every position (the
    # first half counts the whole output), one bool and one float32 per compared element
    expected = 5 * 42 * max(per_dilation) * length
    assert manifest["batch_bound"] == {"bytes_per_series": expected,
                                       "series_per_call": max(1, min(MAX_BATCH, (4 << 20) // expected))}
    assert "batch_bound" not in json.loads((task_bundles["multiclass"].bundle / "manifest.json").read_text())


def test_the_runtime_cuts_calls_at_the_bound_and_answers_as_one_call_does(kernel_bundles, tmp_path):
    tb = kernel_bundles["minirocket"]
    copy = tmp_path / "bounded"
    shutil.copytree(tb.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["batch_bound"]["series_per_call"] = 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = runtime.load(copy)
    sizes, run = [], bundle.model_session.run
    bundle.model_session.run = lambda names, feeds: sizes.append(len(feeds["x"])) or run(names, feeds)
    x = np.random.default_rng(0).standard_normal((10, manifest["input"]["channels"],
                                                  manifest["input"]["length"]["fixed"])).astype(np.float32)
    bounded = bundle.predict(x)
    assert sizes == [3, 3, 3, 1]
    whole = bundle.predict(x, batch_size=10)  # the caller's batch size wins: one call
    assert sizes[4:] == [10]
    assert set(bounded) == set(whole) == set(bundle.outputs)
    for name in bundle.outputs:
        np.testing.assert_allclose(bounded[name], whole[name], rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(bounded["label"], whole["label"])
