"""examples/: the files the README and docs/ name are there, read as the docs say, and the synthetic ones are
exactly what examples/make_examples.py writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.readers import read_series

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    if path.suffix == ".npy":
        return {"X": np.load(path)}
    if path.name.startswith(("demand", "gait", "machine")):  # recordings, one row per sample: the same text
        return {"rows": np.array(path.read_text().splitlines())}
    data = read_series(path, target_column="close" if path.suffix == ".csv" else None)
    return {"X": data.X, "y": data.y}


def test_the_synthetic_examples_are_what_the_script_writes(tmp_path):
    written = subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), str(tmp_path)], capture_output=True,
                             text=True, check=True).stdout.split()
    names = sorted(Path(p).name for p in written)
    assert names == ["demand.csv", "demand_test.csv", "gait.csv", "gait_test.csv", "heartbeats.npz", "machine.csv",
                     "machine_test.csv", "prices.csv", "waveforms_new.npy", "waveforms_test.ts"]
    for name in names:
        ours, shipped = _arrays(tmp_path / name), _arrays(EXAMPLES / name)
        assert sorted(ours) == sorted(shipped), name
        for key in ours:
            assert ours[key].dtype == shipped[key].dtype and ours[key].shape == shipped[key].shape, (name, key)
            if ours[key].dtype.kind in "fc":
                np.testing.assert_allclose(ours[key], shipped[key], atol=0, rtol=0, err_msg=f"{name} {key}")
            else:
                assert ours[key].tolist() == shipped[key].tolist(), (name, key)


@pytest.mark.parametrize("name, n, length, classes", [
    ("GunPoint_TRAIN.ts", 50, 150, ["1", "2"]), ("GunPoint_TEST.ts", 150, 150, ["1", "2"]),
    ("waveforms_test.ts", 40, 128, ["sawtooth", "sine", "square", "triangle"]),
])
def test_the_ts_examples_hold_what_the_docs_say(name, n, length, classes):
    data = read_series(EXAMPLES / name)
    assert data.X.shape == (n, 1, length) and sorted(set(data.y.tolist())) == classes


def test_heartbeats_are_imbalanced_three_rhythm_classes_and_prices_sit_near_1000():
    with np.load(EXAMPLES / "heartbeats.npz") as data:
        X, y = data["X"], data["y"]
    assert X.shape == (90, 96) and X.dtype == np.float32
    assert {c: int((y == c).sum()) for c in ("normal", "afib", "other")} == {"normal": 54, "afib": 22, "other": 14}
    prices = read_series(EXAMPLES / "prices.csv", target_column="close")
    assert prices.X.shape == (200, 1, 32) and abs(float(prices.y.mean()) - 1000.0) < 10
    assert np.load(EXAMPLES / "waveforms_new.npy").shape == (16, 1, 128)


def test_every_examples_file_is_named_in_its_readme():
    listed = (EXAMPLES / "README.md").read_text()
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.name not in ("README.md", "make_examples.py", "__pycache__"))
    assert [name for name in files if f"`{name}`" not in listed] == []


def test_the_example_losses_import_as_the_docs_name_them():
    spec = importlib.util.spec_from_file_location("mylosses", EXAMPLES / "mylosses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    focal = module.FocalLoss(gamma=0.0)  # gamma 0 is plain cross-entropy
    logits, target = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]), torch.tensor([0, 2])
    torch.testing.assert_close(focal(logits, target), torch.nn.functional.cross_entropy(logits, target),
                               atol=1e-6, rtol=1e-6)
