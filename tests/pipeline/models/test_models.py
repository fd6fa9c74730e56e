"""Model shapes, any-length models, normalisation inside the model."""

from __future__ import annotations

import pytest
import torch

from pipeline.settings.config import MODEL_NAMES, ModelConfig
from pipeline.models.build import build_model
from pipeline.models.networks import FCN


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_emit_raw_scores_of_the_right_shape(name):
    model = build_model(ModelConfig(name=name, width=0.25, in_channels=3, length=20, n_outputs=5)).eval()
    out = model(torch.randn(7, 3, 20))
    assert out.shape == (7, 5)
    assert not isinstance(list(model.modules())[-1], (torch.nn.Softmax, torch.nn.Sigmoid))


@pytest.mark.parametrize("name", ["fcn", "resnet"])
def test_pooling_models_take_any_length(name):
    model = build_model(ModelConfig(name=name, width=0.25, in_channels=1, length=20, n_outputs=2)).eval()
    for length in (5, 20, 57):
        assert model(torch.randn(2, 1, length)).shape == (2, 2)


def test_fcn_follows_wang_et_al():
    convs = [m for m in FCN(1, 3).modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(128, 8), (256, 5), (128, 3)]
    x = torch.randn(2, 1, 33)
    assert convs[0](x).shape[-1] == 33
    assert (convs[0].pad_left, convs[0].pad_right) == (3, 4)  # 'same' padding split as in Keras


def test_channel_normalisation_uses_stored_statistics():
    model = build_model(ModelConfig(name="linear", in_channels=2, length=4, n_outputs=1)).eval()
    model.normalize.fit(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    x = torch.randn(3, 2, 4)
    expected = model.net((x - torch.tensor([1.0, -2.0]).view(1, 2, 1)) / torch.tensor([2.0, 0.5]).view(1, 2, 1))
    torch.testing.assert_close(model(x), expected, atol=1e-6, rtol=1e-6)


def test_series_normalisation_ignores_scale_and_offset():
    model = build_model(ModelConfig(name="fcn", width=0.25, in_channels=1, length=16, n_outputs=2,
                                    normalize="series")).eval()
    x = torch.randn(4, 1, 16)
    torch.testing.assert_close(model(x), model(3.0 * x + 7.0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [128, 7, 2])
def test_pair_max_pool_trains_exactly_like_max_pool1d(length):
    from pipeline.models.networks import PairMaxPool1d

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(4, 3, length, generator=g))  # ReLU zeros give ties, as in SimpleCNN
    grad = torch.randn(4, 3, length // 2, generator=g)
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = PairMaxPool1d().train()(ours)
    out.backward(grad)
    expected = torch.nn.MaxPool1d(2)(reference)
    expected.backward(grad)
    assert torch.equal(out, expected) and torch.equal(ours.grad, reference.grad)
    with torch.no_grad():
        assert torch.equal(PairMaxPool1d().eval()(x), expected)


def test_every_registry_entry_builds_its_class_and_says_how_long_its_series_may_be():
    """One entry per model (pipeline.settings.config.MODELS): its class exists, builds from a ModelConfig, and takes any
    length exactly when the entry says so (an unknown name fails at lookup, never falls through)."""
    from pipeline.settings.config import MODELS
    from pipeline.errors import PipelineError
    from pipeline.models.build import network_class
    from pipeline.models.networks import AnyLength, FixedLength

    for name, spec in MODELS.items():
        cls = network_class(name)
        assert issubclass(cls, AnyLength if spec.any_length else FixedLength), name
        assert not (issubclass(cls, AnyLength) and issubclass(cls, FixedLength)), name
        model = build_model(ModelConfig(name=name, width=0.25, length=max(spec.min_length, 8)))
        assert isinstance(model.net, cls)
    with pytest.raises(PipelineError, match="--model 'gru' is not valid; choose one of fcn, resnet, inception"):
        ModelConfig(name="gru")


def test_the_models_page_and_the_help_name_every_registered_model():
    import re
    from pathlib import Path

    from click.testing import CliRunner

    from pipeline.cli import main

    page = (Path(__file__).parents[3] / "docs" / "models.md").read_text()
    table = page[page.index("| `--model`"):].split("\n\n")[0].splitlines()[2:]  # the model table's rows
    rows = {name for line in table for name in re.findall(r"`([a-z-]+)`", line.split("|")[1])}
    assert rows == set(MODEL_NAMES)
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    for name in MODEL_NAMES:
        assert f"{name} (" in help_text
