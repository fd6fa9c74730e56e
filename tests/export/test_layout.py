"""The 2D-layout copy of a model: same numbers as eager, exported for onnxruntime's blocked kernels."""

from __future__ import annotations

import json
import platform

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import export.bundle as bundle_mod
from export.bundle import ExportConfig, export_run
from export.layout import conv2d_layout
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.models.build import build_model
from pipeline.training.train import train

ATOL = RTOL = 1e-5


def _model(name: str, channels: int = 2, length: int = 20) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=0.25, in_channels=channels, length=length, n_outputs=3))
    for module in model.modules():  # BatchNorm statistics away from the identity, so they matter
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model.normalize.fit(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5]))
    return model.eval()


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception", "lite", "simple-cnn"])
def test_conv2d_layout_computes_the_same_function(name):
    model = _model(name)
    fast = conv2d_layout(model)
    assert fast is not None
    assert not any(isinstance(m, (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)) for m in fast.modules())
    lengths = (20,) if name == "simple-cnn" else (1, 7, 20, 61)
    g = torch.Generator().manual_seed(3)
    for length in lengths:
        x = torch.randn(5, 2, length, generator=g) * 3
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), model(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_models_without_convolutions_have_no_2d_layout(name):
    assert conv2d_layout(_model(name)) is None


def _run(tmp_path, npz_file):
    return train(RunSettings(DataConfig(data=str(npz_file("multiclass", n=40, length=16)), task="multiclass", val_split=0.0),
                 LossConfig(), ModelConfig(name="fcn", width=0.125), TrainConfig(epochs=1, progress=False)),
                 out=tmp_path / "run", log=lambda _: None).run_dir


def test_fcn_bundle_holds_the_2d_graph_and_onnxruntime_runs_it_with_blocked_kernels(tmp_path, npz_file):
    out = export_run(_run(tmp_path, npz_file), ExportConfig(fmt="onnx"), log=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["onnx_layout"] == "conv2d" and manifest["verification"]["passed"]
    proto = onnx.load(str(out / "model.onnx"))
    kernels = [list(a.ints) for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute
               if a.name == "kernel_shape"]
    assert kernels == [[1, 8], [1, 5], [1, 3]]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    domains = {n.domain for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node}
    if platform.machine() in ("x86_64", "AMD64"):  # MLAS has NCHWc kernels for AVX2 and AVX-512
        assert "com.microsoft.nchwc" in domains


def test_a_2d_layout_that_does_not_verify_falls_back_to_the_1d_graph(tmp_path, npz_file, monkeypatch):
    def wrong_layout(model):
        fast = conv2d_layout(model)
        with torch.no_grad():
            fast.net.head.bias += 1.0
        return fast

    monkeypatch.setattr(bundle_mod, "conv2d_layout", wrong_layout)
    out = export_run(_run(tmp_path, npz_file), ExportConfig(fmt="onnx"), log=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["onnx_layout"] == "conv1d" and manifest["verification"]["passed"]
    kernels = [list(a.ints) for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "Conv"
               for a in n.attribute if a.name == "kernel_shape"]
    assert kernels == [[8], [5], [3]]
