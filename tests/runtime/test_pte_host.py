"""The C++ .pte kit (runtime/hosts/pte), linked against ExecuTorch's runtime libraries only: it checks a bundle
(signature, schema, sums) like every kit, then runs model.pte and loss.pte and a live stream as eager PyTorch
does, and refuses a wrong shape in one line where the ExecuTorch runtime would answer it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from export.bundle import ExportConfig, export_run, rebuild
from export.golden import tensor_json
from export.graphs import as_tuple, model_graph
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS
from runtime.tasks import TASKS
from tests.conftest import shared, stream_case

ATOL = RTOL = 1e-5


def _pte(program: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def pte_bundles(task_bundles, windowed_bundles, tmp_path_factory) -> dict[str, Path]:
    """The multiclass and regression runs and the windowed multiclass run, exported as .pte programs; the multiclass
    one with model.int8.pte too (--quantize int8; the tiny run's limit is wide, as int8_bundles')."""

    def build(root: Path) -> dict[str, Path]:
        runs = {"multiclass": task_bundles["multiclass"].run_dir, "regression": task_bundles["regression"].run_dir,
                "windowed": windowed_bundles["multiclass"].run_dir}
        int8 = {"multiclass": {"quantize": "int8", "max_metric_drop": 100.0}}
        return {key: export_run(run, ExportConfig(fmt="pte", **int8.get(key, {})), out=root / key, log=lambda _: None)
                for key, run in runs.items()}

    return shared(tmp_path_factory, "pte-bundles", build)


def _eager_case(run_dir: Path, n: int, seed: int) -> dict:
    """n series at the training length and a loss input of n rows, with eager PyTorch's outputs."""
    run = rebuild(run_dir)
    cfg, task = run.cfg, run.task
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.length, generator=g) * 3 + 0.5
    prediction = torch.randn(n, cfg.n_outputs, generator=g) * 20  # confident scores
    target = (torch.randint(0, cfg.n_outputs, (n,), generator=g) if task == "multiclass"
              else torch.randn(n, cfg.n_outputs, generator=g) * 1000)
    with torch.inference_mode():
        model_out, loss_out = as_tuple(model_graph(run.model, task)(x)), as_tuple(run.loss(prediction, target))
    return {"model": {"inputs": {"x": tensor_json(x)},
                      "outputs": dict(zip(TASKS[task].outputs, map(tensor_json, model_out)))},
            "loss": {"inputs": dict(zip(LOSS_INPUTS, map(tensor_json, (prediction, target)))),
                     "outputs": dict(zip(LOSS_OUTPUTS, map(tensor_json, loss_out)))},
            "atol": ATOL, "rtol": RTOL}


def test_the_pte_kit_links_no_libtorch_nor_libpython(pte_kit):
    linked = subprocess.run(["ldd", str(pte_kit)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[0] for line in linked.splitlines() if line.strip()}
    assert {"libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libexecutorch_kernels_optimized.so"} <= names
    assert [n for n in names if n.startswith(("libtorch", "libc10", "libpython"))] == []


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_pte_kit_equals_eager_on_golden_data_and_batches_past_the_bound(pte_kit, pte_bundles, task_bundles,
                                                                            task, tmp_path):
    bundle = pte_bundles[task]
    golden = _pte(pte_kit, bundle)
    outputs = TASKS[task].outputs
    assert (golden.returncode, golden.stderr) == (0, f"all {len(outputs) + 2} outputs match (ExecuTorch)\n")
    cases = tmp_path / "cases.json"  # one series, 7, and 130 (three calls of at most 64)
    data = [_eager_case(task_bundles[task].run_dir, n, seed) for seed, n in enumerate((1, 7, 130))]
    del data[2]["loss"]  # the loss program's bound is 64 rows too: the kit's predict cuts, its loss does not
    cases.write_text(json.dumps(data))
    result = _pte(pte_kit, bundle, "--cases", cases)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    expected = [("model", o) for o in outputs] + [("loss", o) for o in LOSS_OUTPUTS]
    assert [(r[0], r[1]) for r in rows] == 2 * expected + expected[:len(outputs)]
    assert rows[-1][2] == "[130]" or rows[-1][2].startswith("[130,")
    assert all(r[-1] == "ok" for r in rows)


def test_the_pte_kit_refuses_a_wrong_shape_in_one_line(pte_kit, pte_bundles, tmp_path):
    bundle = pte_bundles["multiclass"]
    x = json.loads((bundle / "golden.json").read_text())["model"]["inputs"]["x"]
    n, c, length = x["shape"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    outputs = {name: {"shape": [n], "dtype": "float32", "data": [0.0] * n} for name in manifest["outputs"]}
    for shape, dtype, message in (
            ([n, length, c], "float32", f"x: shape ({n}, {length}, {c}) does not fit model.pte forward: it takes "
                                        f"(batch 1..64, {c}, {length}); cut larger batches into calls of at most 64"),
            ([n, c, length + 1], "float32", f"x: shape ({n}, {c}, {length + 1}) does not fit model.pte forward: it "
                                            f"takes (batch 1..64, {c}, {length}); cut larger batches into calls of at "
                                            "most 64"),
            ([n, c, length], "int64", "x: dtype int64; model.pte forward takes float32")):
        size = int(np.prod(shape))
        case = {"model": {"inputs": {"x": {"shape": shape, "dtype": dtype, "data": [0] * size}}, "outputs": outputs},
                "atol": ATOL, "rtol": RTOL}
        (tmp_path / "case.json").write_text(json.dumps(case))
        result = _pte(pte_kit, bundle, "--cases", tmp_path / "case.json")
        assert (result.returncode, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")


def test_the_pte_kit_streams_a_recording_as_eager_windows(pte_kit, pte_bundles, windowed_bundles, tmp_path):
    wb = windowed_bundles["multiclass"]
    recording = wb.recordings[0]
    chunkings = [[recording.shape[1]], [1] * recording.shape[1], [5, 0, 17, 3, recording.shape[1] - 25]]
    (tmp_path / "stream.json").write_text(json.dumps(stream_case(wb.run_dir, recording, chunkings)))
    result = _pte(pte_kit, pte_bundles["windowed"], "--cases", tmp_path / "stream.json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == 3 * ([("stream", "start")] +
                                                [("stream", o) for o in TASKS["multiclass"].outputs])
    assert all(r[-1] == "ok" for r in rows)


def test_the_pte_kit_checks_the_signature_and_the_sums_first(pte_kit, pte_bundles, keys, tmp_path):
    from runtime.signature import PublicKey
    from export.signing import sign_and_check

    bundle = shutil.copytree(pte_bundles["regression"], tmp_path / "signed")
    sign_and_check(bundle, keys.private(), None, ())
    fp = PublicKey.read(keys.public()).fingerprint[:16]
    result = _pte(pte_kit, bundle, "--public-key", keys.public())
    assert (result.returncode, result.stderr) == (0, f"all 3 outputs match (ExecuTorch, signature verified (key "
                                                     f"{fp}))\n")
    other = _pte(pte_kit, bundle, "--public-key", keys.public("other"))
    assert other.returncode == 2 and other.stderr.startswith(f"Error: {bundle / 'model.sig'}: signed by another key")
    plain = shutil.copytree(pte_bundles["regression"], tmp_path / "altered")
    data = bytearray((plain / "model.pte").read_bytes())
    data[-1] ^= 1
    (plain / "model.pte").write_bytes(bytes(data))
    altered = _pte(pte_kit, plain)
    assert (altered.returncode, altered.stderr) == (
        2, f"Error: {plain / 'model.pte'}: sha256 differs from manifest.json (the file was altered)\n")


@pytest.mark.parametrize("finetune", ["head", "all"])
def test_the_pte_kit_fine_tunes_as_eager_sgd(pte_kit, task_bundles, finetune, tmp_path):
    from export.pte_train import sgd_reference

    tb = task_bundles["multiclass"]
    bundle = export_run(tb.run_dir, ExportConfig(fmt="pte-train", finetune=finetune, finetune_batch=8),
                        out=tmp_path / "b", log=lambda _: None)
    run = rebuild(tb.run_dir)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, run.cfg.in_channels, run.cfg.length, generator=g) * 2 + 1  # a shifted sensor
    target = torch.randint(0, run.cfg.n_outputs, (8,), generator=g)
    losses, params = sgd_reference(run.model, run.loss, x, target, 20, 0.01, finetune)
    outputs = {"loss": tensor_json(torch.tensor(losses)), **{f"model.{n}": tensor_json(p) for n, p in params.items()}}
    case = {"finetune": {"x": tensor_json(x), "target": tensor_json(target), "steps": 20, "lr": 0.01,
                         "outputs": outputs}, "atol": ATOL, "rtol": RTOL}
    (tmp_path / "finetune.json").write_text(json.dumps(case))
    result = _pte(pte_kit, bundle, "--cases", tmp_path / "finetune.json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("train", "loss")] + [("train", f"model.{n}") for n in params]
    assert all(r[-1] == "ok" for r in rows) and len(rows) == (3 if finetune == "head" else 1 + len(params))
