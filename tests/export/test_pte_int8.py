"""export --format pte --quantize int8: model.int8.pte (XNNPACK's quantizer and int8 kernels), measured against
model.pte on the run's test data and judged by the task's main metric, like model.int8.onnx."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from export.pte import PteBundle
from pipeline.cli import main
from runtime.errors import BundleError
from runtime.manifest import MODEL_INT8_PTE
from tests.export.test_pte import PTE_FILES
from tests.export.test_quantize import _reference_metric, _squashed
from tests.runtime.test_pte_host import _pte, pte_bundles  # noqa: F401 (a fixture)


def _direct(path, X: np.ndarray) -> np.ndarray:
    """The program's first output, run by executorch.runtime directly (not through export.pte)."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return method.execute([torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))])[0].numpy()


def test_the_int8_program_is_measured_against_model_pte_on_the_test_data(task_bundles, pte_bundles):
    # the kit's multiclass bundle (export --format pte --quantize int8 in pte_bundles); the CLI path and its
    # refusal below; a drop in percent (regression, counts) is the ONNX int8 graph's code (export.quantize.judged)
    task, tb, out = "multiclass", task_bundles["multiclass"], pte_bundles["multiclass"]
    assert {p.name for p in out.iterdir()} == PTE_FILES | {MODEL_INT8_PTE}  # no ONNX graph: none was asked for
    manifest = json.loads((out / "manifest.json").read_text())
    assert "int8" not in manifest  # the ONNX int8 entry
    entry, program = manifest["pte"]["int8"], manifest["pte"]["model_int8"]
    assert program["file"] == MODEL_INT8_PTE and program["delegate"] == "xnnpack"
    assert program["inputs"] == manifest["pte"]["model"]["inputs"]
    data = np.load(tb.test_file)
    X, y = data["X"], data["y"]
    fp32, int8 = _direct(out / "model.pte", X), _direct(out / MODEL_INT8_PTE, X)
    expected = {p: _reference_metric(task, raw, y, manifest["classes"]) for p, raw in (("fp32", fp32), ("int8", int8))}
    assert entry["file"] == MODEL_INT8_PTE and entry["method"].startswith("XNNPACK quantizer (PT2E)")
    assert (entry["metric"], entry["drop_unit"], entry["max_drop"]) == ("accuracy", "points", 100.0)
    assert entry["fp32"] == pytest.approx(expected["fp32"], rel=1e-6, abs=1e-9)
    assert entry["int8"] == pytest.approx(expected["int8"], rel=1e-6, abs=1e-9)
    assert entry["drop"] == pytest.approx(100 * (expected["fp32"] - expected["int8"]), abs=1e-5)
    agree = float((fp32.argmax(1) == int8.argmax(1)).mean())
    assert entry["label_agreement"] == pytest.approx(agree) and agree >= 0.9
    assert (entry["evaluated_on"], entry["evaluated_series"], entry["calibration_series"]) == (
        f"{tb.test_file} (test data)", 37, 48)
    # the same function rounded, not another model: on average within 5% of the score range; int8 weights
    assert np.abs(int8 - fp32).mean() <= 0.05 * np.abs(fp32).max()
    assert (out / MODEL_INT8_PTE).stat().st_size < 0.5 * (out / "model.pte").stat().st_size
    # PteBundle picks the program as runtime.load picks the ONNX graph
    assert PteBundle(out).precision == "fp32" and PteBundle(out, precision="auto").precision == "int8"
    bundle = PteBundle(out, precision="int8")
    np.testing.assert_allclose(bundle.predict(X)[manifest["outputs"][0]], int8, rtol=0, atol=1e-6)
    with pytest.raises(BundleError) as err:
        PteBundle(out, precision="half")
    assert str(err.value) == "precision 'half' is not valid; choose one of fp32, int8, auto"


def test_an_int8_program_that_loses_too_much_is_refused_and_nothing_is_written(task_bundles, tmp_path):
    tb = task_bundles["multiclass"]
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(tb.run_dir), "--format", "pte", "--quantize", "int8",
                                       "--calibration-data", str(_squashed(tb, tmp_path)), "--out", str(out)])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: --quantize int8: model.int8.pte: accuracy ") and "\n" not in line
    assert f"(int8) on 37 series of {tb.test_file} (test data): " in line
    assert line.endswith(", more than --max-metric-drop 1; nothing was written. Calibrate on other series "
                         "(--calibration-data FILE), allow more (--max-metric-drop), or export without --quantize")
    assert float(line.split("(test data): ")[1].split(" points")[0]) > 1
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_verify_and_the_cpp_kit_hold_the_int8_program_to_its_own_golden_outputs(pte_bundles, pte_kit, tmp_path):
    bundle = pte_bundles["multiclass"]
    golden = json.loads((bundle / "golden.json").read_text())
    x = np.asarray(golden["model"]["inputs"]["x"]["data"], np.float32).reshape(golden["model"]["inputs"]["x"]["shape"])
    expected = _direct(bundle / MODEL_INT8_PTE, x)
    logits = golden["model_int8_pte"]["outputs"]["logits"]
    np.testing.assert_allclose(np.reshape(logits["data"], logits["shape"]), expected, rtol=0, atol=1e-6)
    result = CliRunner().invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    int8_rows = [line.split() for line in result.output.splitlines() if line.startswith("int8 ")]
    assert [(r[1], r[2], r[-1]) for r in int8_rows] == [
        ("executorch", name, "ok") for name in ("logits", "probabilities", "label")]
    done = _pte(pte_kit, bundle, "--precision", "int8")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "all 5 outputs match (ExecuTorch, model.int8.pte)\n"
    assert [line.split()[:3] for line in done.stdout.splitlines()][:3] == [
        ["model", "(int8)", name] for name in ("logits", "probabilities", "label")]
    # a changed golden output is caught at the int8 tolerance of the manifest (1e-2), in C++ too
    copy = tmp_path / "golden-changed.json"
    golden["model_int8_pte"]["outputs"]["logits"]["data"][0] += 0.05
    copy.write_text(json.dumps(golden))
    done = _pte(pte_kit, bundle, "--precision", "int8", "--cases", copy)
    assert done.returncode == 1 and done.stderr == "1 output(s) differ beyond atol/rtol\n"
    fp32_only = pte_bundles["regression"]
    done = _pte(pte_kit, fp32_only, "--precision", "int8")
    assert (done.returncode, done.stderr) == (2, f"Error: {fp32_only}: has no model.int8.pte; re-export with "
                                                 "`pipeline export RUN_DIR --format pte --quantize int8`, or run it "
                                                 "in fp32\n")
