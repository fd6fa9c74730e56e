"""The kernel models against independent implementations of their papers' algorithms: MiniRocket's kernels,
dilations, quantile biases and PPV (numpy loops written from the paper), Hydra's counts (the reference code's
argmax + scatter_add), MultiRocket's four pooling operators (the reference code's loop), the ridge head against
numpy.linalg, brute-force leave-one-out and scikit-learn's RidgeCV, and the near-threshold bound against the
flips it bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pipeline.models.kernels import HydraTransform, MiniRocketTransform, MultiRocketTransform, PoolingBlock
from pipeline.models.ridge import RIDGE_ALPHAS, ridge_loo


# --- MiniRocket, written from the paper (Dempster, Schmidt, Webb 2021, section 3) -------------------------------
def paper_dilations(length: int, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    per_kernel = num_features // 84
    most = min(per_kernel, 32)
    exponents = np.logspace(0, np.log2((length - 1) / 8), most, base=2).astype(np.int32)
    dilations, counts = np.unique(exponents, return_counts=True)
    counts = (counts * per_kernel / most).astype(np.int32)
    for i in range(per_kernel - counts.sum()):
        counts[i % len(counts)] += 1
    return dilations, counts


def paper_convolution(x: np.ndarray, weights: np.ndarray, dilation: int) -> np.ndarray:
    """'same' output: position t sums weights[j] * x[t + (j - 4) * dilation], zero outside the series."""
    out = np.zeros(len(x))
    for t in range(len(x)):
        for j in range(9):
            s = t + (j - 4) * dilation
            if 0 <= s < len(x):
                out[t] += weights[j] * x[s]
    return out


def paper_kernels() -> np.ndarray:
    kernels = -np.ones((84, 9))
    for k, idx in enumerate(itertools.combinations(range(9), 3)):
        kernels[k, list(idx)] = 2.0
    return kernels


def test_minirocket_transform_equals_the_papers_algorithm_in_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 40)).astype(np.float32)
    transform = MiniRocketTransform(1, 40, num_features=840)
    transform.fit(torch.from_numpy(x), torch.Generator().manual_seed(3))
    dilations, counts = paper_dilations(40, 840)
    assert [b.dilation for b in transform.blocks] == dilations.tolist()
    assert [b.bias.shape[1] for b in transform.blocks] == counts.tolist()
    phi = (np.sqrt(5) + 1) / 2
    quantiles = np.array([(i * phi) % 1 for i in range(1, 84 * counts.sum() + 1)], dtype=np.float32)
    kernels, start = paper_kernels(), 0
    expected = np.zeros((6, 84 * counts.sum()))
    for i, (d, f) in enumerate(zip(dilations, counts)):
        padding = 4 * d
        biases = transform.blocks[i].bias.numpy().astype(np.float64)
        for k in range(84):
            q = quantiles[start:start + f]
            # the bias of each kernel is the quantiles of its output on ONE training series (drawn at random)
            candidates = [np.quantile(paper_convolution(x[n, 0].astype(np.float64), kernels[k], d), q)
                          for n in range(6)]
            assert min(np.abs(c - biases[k]).max() for c in candidates) < 1e-5, (d, k)
            for n in range(6):
                c = paper_convolution(x[n, 0].astype(np.float64), kernels[k], d)
                region = c if (i + k) % 2 == 0 else c[padding:len(c) - padding]
                expected[n, start:start + f] = (region[:, None] > biases[k][None, :]).mean(0)
            start += f
    ours = transform.raw(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(transform.mean.numpy(), expected.mean(0), atol=1e-6)
    np.testing.assert_allclose(transform.std.numpy(), expected.std(0, ddof=1) + 1e-8, atol=1e-6)


# --- the ridge head ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, features", [(30, 50), (80, 20)])
def test_ridge_equals_numpy_linalg_brute_force_leave_one_out_and_sklearns_choice(n, features):
    from sklearn.linear_model import RidgeCV

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, features))
    t = np.where(rng.standard_normal((n, 3)) + x[:, :3] > 0, 1.0, -1.0)
    fit = ridge_loo(torch.from_numpy(x), torch.from_numpy(t))
    assert fit.alpha == pytest.approx(RidgeCV(alphas=RIDGE_ALPHAS).fit(x, t).alpha_, rel=1e-12)
    xc, tc = x - x.mean(0), t - t.mean(0)
    weight = np.linalg.solve(xc.T @ xc + fit.alpha * np.eye(features), xc.T @ tc)
    np.testing.assert_allclose(fit.weight.numpy().T, weight, atol=1e-8)
    np.testing.assert_allclose(fit.bias.numpy(), t.mean(0) - x.mean(0) @ weight, atol=1e-8)
    for i in range(n):  # refit without series i, predict it
        keep = np.arange(n) != i
        xk, tk = x[keep], t[keep]
        xm, tm = xk.mean(0), tk.mean(0)
        w = np.linalg.solve((xk - xm).T @ (xk - xm) + fit.alpha * np.eye(features), (xk - xm).T @ (tk - tm))
        np.testing.assert_allclose(fit.loo[i].numpy(), (x[i] - xm) @ w + tm, atol=1e-8)


# --- Hydra: the reference code's forward (argmax + scatter_add) --------------------------------------------------
def reference_hydra_counts(z: torch.Tensor) -> torch.Tensor:
    """(batch, groups, kernels, L) responses -> count_max, count_min as the reference code computes them."""
    n, g, k, _ = z.shape
    max_values, max_indices = z.max(2)
    _, min_indices = z.min(2)
    count_max = torch.zeros(n, g, k).scatter_add_(-1, max_indices, max_values)
    count_min = torch.zeros(n, g, k).scatter_add_(-1, min_indices, torch.ones_like(max_values))
    return torch.cat([count_max, count_min], 1).flatten(1)


@pytest.mark.parametrize("channels", [1, 3])
def test_hydra_counts_and_sparse_scaling_equal_the_reference(channels):
    x = torch.randn(5, channels, 50)
    transform = HydraTransform(channels, 50, groups=8)
    transform.fit(x, torch.Generator().manual_seed(0))
    diff = torch.diff(x)
    expected = []
    for on_series, on_diff in zip(transform.series, transform.diffs):
        for block, series in ((on_series, x), (on_diff, diff)):
            w = block.weight.view(block.groups, -1, 9)
            assert torch.allclose(w.mean(-1), torch.zeros(()), atol=1e-7)  # zero-mean kernels
            assert torch.allclose(w.abs().sum(-1), torch.ones(()), atol=1e-6)  # unit L1 norm
            # each group convolves the sum of its channels (drawn with replacement: a channel may count twice)
            mixed = torch.einsum("gc,bcl->bgl", block.mix, series)
            z = torch.nn.functional.conv1d(mixed, block.weight, dilation=block.dilation, padding=block.padding,
                                           groups=block.groups)
            expected.append(reference_hydra_counts(z.view(5, block.groups, -1, z.shape[-1])))
    expected = torch.cat(expected, 1)
    torch.testing.assert_close(transform.raw(x), expected, atol=1e-5, rtol=1e-6)
    if channels == 3:  # the multivariate code's clip(C // 2, 2, 8) channels per group
        assert set(transform.series[0].mix.sum(1).tolist()) == {2.0}
    root = np.sqrt(np.clip(expected.numpy().astype(np.float64), 0, None))
    mean, std = root.mean(0), root.std(0, ddof=1) + (root == 0).mean(0) ** 4 + 1e-8
    scaled = (root - mean) * (root != 0) / std
    np.testing.assert_allclose(transform(x).numpy(), scaled, atol=2e-5)


# --- MultiRocket: the reference code's pooling loop ---------------------------------------------------------------
def reference_pooling(c: np.ndarray, bias: float) -> tuple[float, float, float, float]:
    """PPV, LSPV, MPV, MIPV of one convolution output `c` (the region counted) for one bias, as
    ChangWeiTan/MultiRocket's transform loop computes them."""
    ppv, last, longest, mean_index, mean = 0, 0, 0.0, 0, 0.0
    for j in range(len(c)):
        if c[j] > bias:
            ppv += 1
            mean_index += j
            mean += c[j] + bias
        elif c[j] < bias:
            longest = max(longest, j - last)
            last = j
    longest = max(longest, len(c) - 1 - last)
    return ppv / len(c), longest, mean / ppv if ppv else 0.0, mean_index / ppv if ppv else -1.0


def test_multirocket_pooling_equals_the_reference_loop_on_runs_ties_and_no_positives():
    length = 30
    block = PoolingBlock(1, length, dilation=2, features=3, odd_start=0)
    x = torch.randn(4, 1, length)
    x[1, 0, 5:20] = 3.0  # a long run
    x[2] = 0.0  # every response equals 0: no position above or below a bias of 0
    c = block.conv(x)
    block.bias.copy_(torch.stack([torch.zeros(84), c[0, :, 7], torch.full((84,), 1e3)], dim=1))  # 0, a tie, none
    pooled = block(x).unflatten(2, (84, 3)).numpy()  # (batch, 4, 84, 3)
    for n, k, f in itertools.product(range(4), range(84), range(3)):
        region = c[n, k].numpy()
        if k % 2 == 1:  # odd kernels count only where they do not overlap the padding
            region = region[block.padding:length - block.padding]
        expected = reference_pooling(region, float(block.bias[k, f]))
        np.testing.assert_allclose(pooled[n, :, k, f], expected, atol=1e-4, rtol=1e-6, err_msg=str((n, k, f)))


# --- the near-threshold bound --------------------------------------------------------------------------------------
@pytest.mark.parametrize("transform_class", [MiniRocketTransform, MultiRocketTransform])
def test_a_comparison_placed_on_its_bias_is_counted_and_its_flip_stays_within_the_bound(transform_class):
    from pipeline.models.kernels import MiniRocket, MultiRocketHydra

    torch.manual_seed(0)
    net = (MiniRocket if transform_class is MiniRocketTransform else MultiRocketHydra)(1, 40, 2, width=0.1)
    x = torch.randn(8, 1, 40)
    net.fit(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.head.weight.normal_()
    transform = net.transform if transform_class is MiniRocketTransform else net.transform.multirocket
    blocks = transform.blocks if transform_class is MiniRocketTransform else transform.parts[0]
    block = blocks[0]
    c = block.conv(x[:1])
    with torch.no_grad():
        block.bias[0, 0] = c[0, 0, 20]  # series 0's response at step 20 sits exactly on this bias
    # the statistics come from the series as they were; only series 0 now has a comparison on a bias
    fresh = torch.randn(1, 1, 40)  # not a training series (whose responses can equal a bias fitted from them)
    z, bound, near = net.threshold_bound(torch.cat([x[:1], fresh]))
    assert near >= 1 and bound[0].max() > 0
    assert bound[1].abs().max() == 0  # the fresh series (seeded) has no response within rounding of a bias
    with torch.no_grad():
        before = net(x[:1])
        block.bias[0, 0] = torch.nextafter(c[0, 0, 20], torch.tensor(-math.inf))  # the comparison flips
        after = net(x[:1])
    moved = (after - before).abs()
    assert moved.max() > 0  # the flip is visible in the output ...
    # ... and within the bound verification allows: the flip moves the output by the bound itself, and each float32
    # output carries rounding of a few units of its last place (about 1e-5 at an output of 75, as seeded here)
    assert (moved <= bound[0] + 1e-6 + 4 * torch.finfo(torch.float32).eps * before.abs()).all()


def test_multivariate_minirocket_sums_each_kernels_random_channels_as_the_multivariate_code():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 30)).astype(np.float32)
    transform = MiniRocketTransform(5, 30, num_features=840)
    transform.fit(torch.from_numpy(x), torch.Generator().manual_seed(0))
    kernels, sizes, expected = paper_kernels(), [], []
    for i, block in enumerate(transform.blocks):
        chosen = (block.weight[:, :, 0] != 0).numpy()  # (84, 5): the channels each kernel sums
        sizes += chosen.sum(1).tolist()
        biases = block.bias.numpy().astype(np.float64)
        for k in range(84):
            for n in range(4):
                c = sum(paper_convolution(x[n, ch].astype(np.float64), kernels[k], block.dilation)
                        for ch in np.flatnonzero(chosen[k]))
                region = c if (i + k) % 2 == 0 else c[block.padding:30 - block.padding]
                expected.append(((n, i, k), (region[:, None] > biases[k][None, :]).mean(0)))
    assert 1 <= min(sizes) and max(sizes) <= 5 and len(set(sizes)) > 1  # 2^U(0, log2(6)) channels: 1..5
    ours = [block(torch.from_numpy(x)).view(4, 84, -1).numpy() for block in transform.blocks]
    for (n, i, k), values in expected:
        np.testing.assert_allclose(ours[i][n, k], values, atol=1e-6, err_msg=str((n, i, k)))


# --- the fit: each transform computed once, its statistics in float64 --------------------------------------------
@pytest.mark.parametrize("model_class", ["MiniRocket", "Hydra", "MultiRocketHydra"])
def test_the_fit_returns_the_fitted_transforms_own_features_with_float64_statistics(model_class):
    from pipeline.models import kernels

    x = torch.randn(70, 2, 40, generator=torch.Generator().manual_seed(3))  # 70 series: chunks of 64 and 6
    model = getattr(kernels, model_class)(2, 40, 3, 0.3)
    features = model.fit(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_array_equal(features.numpy(), model.transform(x).numpy())  # bit for bit
    standardised = [model.transform] if model_class == "MiniRocket" else \
        [model.transform.multirocket] if model_class == "MultiRocketHydra" else []
    for transform in standardised:  # mean and std (+ 1e-8) of the raw features, as numpy computes them in float64
        raw = transform.raw(x).double().numpy()
        np.testing.assert_allclose(transform.mean.numpy(), raw.mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(transform.std.numpy(), raw.std(0, ddof=1) + 1e-8, rtol=1e-6, atol=1e-7)


def test_the_exported_ppv_graph_holds_nothing_larger_than_half_the_kernels_comparisons(kernel_bundles):
    """The model graph of a minirocket bundle, shapes inferred: no intermediate per series is larger than one
    half of the kernels compared with the most biases of one dilation at every position (the bound written in
    the manifest, counted in elements: 5 bytes each), so no (84, biases, length) tensor and no mask of it."""
    import json

    import onnx

    bundle = kernel_bundles["minirocket"].bundle
    bound = json.loads((bundle / "manifest.json").read_text())["batch_bound"]["bytes_per_series"] // 5
    model = onnx.shape_inference.infer_shapes(onnx.load(bundle / "model.onnx"))
    sizes = []
    for value in model.graph.value_info:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):  # (batch, ...): per series, the rest
            sizes.append(math.prod(d.dim_value for d in dims[1:]))
    assert sizes and max(sizes) == bound
