"""--precision: auto picks bf16 only where the device runs it natively; bf16 training keeps fp32 weights and
exports graphs that verify against fp32 eager PyTorch."""

from __future__ import annotations

import pytest
import torch

from export.bundle import ExportConfig, export_run
from pipeline.training import precision
from pipeline.training.checkpoint import load_checkpoint
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.training.run_config import RunSettings
from pipeline.training.train import train

CPU = torch.device("cpu")


def _cpu_features(monkeypatch, bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("bf16, amx, used, reason", [
    (True, False, "bf16", "auto: this CPU has AVX-512 BF16"),
    (False, True, "bf16", "auto: this CPU has AMX"),
    (True, True, "bf16", "auto: this CPU has AMX and AVX-512 BF16"),
    (False, False, "fp32", "auto: this CPU (no AVX-512 BF16 or AMX) does not run bf16 natively"),
])
def test_auto_uses_bf16_only_on_cpus_with_native_bf16(monkeypatch, bf16, amx, used, reason):
    _cpu_features(monkeypatch, bf16, amx)
    assert precision.resolve("auto", CPU) == precision.Precision(used, "auto", reason)


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_a_forced_precision_is_used_whatever_the_cpu(monkeypatch, forced):
    _cpu_features(monkeypatch, True, True)
    assert precision.resolve(forced, CPU) == precision.Precision(forced, forced, f"--precision {forced}")


def _run(tmp_path, npz, name: str, prec: str, logs: list | None = None):
    return train(RunSettings(DataConfig(data=str(npz), task="multiclass", val_split=0.25), LossConfig(),
                 ModelConfig(name="fcn", width=0.25),
                 TrainConfig(epochs=2, batch_size=16, lr=1e-2, seed=5, progress=False, precision=prec)),
                 out=tmp_path / name, log=(logs.append if logs is not None else lambda _: None))


def test_bf16_training_on_cpu_keeps_fp32_state_and_its_export_verifies(tmp_path, npz_file, monkeypatch):
    npz = npz_file("multiclass", n=96, length=32)
    fp32 = _run(tmp_path, npz, "fp32", "fp32")
    _cpu_features(monkeypatch, True, False)
    logs: list[str] = []
    bf16 = _run(tmp_path, npz, "bf16", "auto", logs)
    assert bf16.metrics["precision"] == {"used": "bf16", "requested": "auto",
                                         "reason": "auto: this CPU has AVX-512 BF16"}
    assert fp32.metrics["precision"] == {"used": "fp32", "requested": "fp32", "reason": "--precision fp32"}
    assert "precision: bf16 (auto: this CPU has AVX-512 BF16); weights, checkpoints, exports and the loss stay fp32" \
        in logs
    # the forward pass really ran in bf16: same seed and data, a loss that differs from fp32's in the 3rd digit,
    # not in the 7th; and still close to it
    a, b = fp32.history[0]["train_loss"], bf16.history[0]["train_loss"]
    assert a != pytest.approx(b, rel=1e-5) and a == pytest.approx(b, rel=0.05)
    state = load_checkpoint(bf16.run_dir / "last.pt")
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
    moments = [t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    logs.clear()
    export_run(bf16.run_dir, ExportConfig(), log=logs.append)  # default tolerance: 1e-5 against fp32 eager
    assert logs[-1].startswith("verified 106 checks") and logs[-1].endswith("(atol 1e-05 + rtol 1e-05 x |eager|)")
