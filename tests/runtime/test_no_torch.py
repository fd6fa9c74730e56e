"""The runtime and its CLI commands work where torch (and onnx) are not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a runtime-only install lacks: the training extra's packages (onnxruntime stays).
BLOCK_TRAINING_PACKAGES = textwrap.dedent("""
    import sys
    BLOCKED = ("torch", "onnx", "onnxscript", "matplotlib", "tqdm")
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named '{name}'", name=name.split(".")[0])
    sys.meta_path.insert(0, _Block())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TRAINING_PACKAGES + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_runtime_only_install_does_not_require_torch():
    base = [r for r in requires("pipeline") if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in base}
    assert names == {"numpy", "onnxruntime", "click"}


def test_runtime_imports_and_computes_metrics_without_torch():
    proc = _run("""
        import numpy as np
        import runtime
        m = runtime.compute_metrics("multiclass", np.eye(3), np.array([0, 1, 1]))
        assert abs(m["accuracy"] - 2 / 3) < 1e-12, m
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_runtime_api_and_cli_commands_run_a_bundle_without_torch(task_bundles, tmp_path):
    import runtime  # the expected numbers, computed here where torch is present

    tb = task_bundles["multiclass"]
    data = np.load(tb.test_file)
    bundle = runtime.load(tb.bundle)
    expected = {"predict": bundle.predict(data["X"])["probabilities"].tolist(),
                "evaluate": bundle.evaluate(data["X"], data["y"])}
    proc = _run(f"""
        import json
        import numpy as np
        from click.testing import CliRunner
        import runtime
        from pipeline.cli import main
        bundle = runtime.load(r"{tb.bundle}", threads=1)
        data = np.load(r"{tb.test_file}")
        out = {{"predict": bundle.predict(data["X"])["probabilities"].tolist(),
                "evaluate": bundle.evaluate(data["X"], data["y"]),
                "loss": bundle.loss(np.zeros((2, 3), np.float32), bundle.encode(["cat", "eel"]))[0]}}
        runner = CliRunner()
        for args in (["predict", r"{tb.bundle}", "--data", r"{tb.test_file}", "--out", r"{tmp_path / 'p.csv'}"],
                     ["evaluate", r"{tb.bundle}", "--data", r"{tb.test_file}", "--json"],
                     ["verify", r"{tb.bundle}"]):
            result = runner.invoke(main, args)
            out[args[0]+"_cli"] = [result.exit_code, result.output]
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print(json.dumps(out))
    """)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    np.testing.assert_allclose(got["predict"], expected["predict"], atol=1e-6, rtol=1e-6)
    assert got["evaluate"] == expected["evaluate"]
    assert got["loss"] == bundle.loss(np.zeros((2, 3), np.float32), np.array([0, 2]))[0]
    assert got["predict_cli"] == [0, f"wrote {tmp_path / 'p.csv'} (37 series)\n"]
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "row,label,probability_cat,probability_dog,probability_eel"
    code, text = got["evaluate_cli"]
    assert code == 0 and {k: v for k, v in json.loads(text).items() if k in expected["evaluate"]} == expected["evaluate"]
    code, text = got["verify_cli"]
    assert code == 0, text
    assert text.endswith("eager re-check skipped: the training extra is not installed (install the training "
                         "extra as the README does: pip install torch==2.13.0 && pip install -e '.[train]' to "
                         "re-check against PyTorch)\nverified\n")


def test_cli_help_works_and_train_says_what_to_install_without_torch(tmp_path):
    proc = _run(f"""
        from click.testing import CliRunner
        from pipeline.cli import main
        r = CliRunner().invoke(main, ["--help"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["train", "--out", r"{tmp_path / 'run'}"])
        print(r.exit_code)
        print(r.output, end="")
        r = CliRunner().invoke(main, ["export", r"{tmp_path}"])
        print(r.exit_code)
        print(r.output, end="")
    """)
    assert proc.returncode == 0, proc.stderr
    hint = "install the training extra as the README does: pip install torch==2.13.0 && pip install -e '.[train]'"
    assert proc.stdout == (f"2\nError: this command needs torch, which the runtime-only install leaves out; {hint}\n"
                           f"2\nError: this command needs torch, which the runtime-only install leaves out; {hint}\n")


def test_verify_of_a_torchscript_only_bundle_without_torch_says_what_to_install(task_bundles, tmp_path):
    import shutil

    bundle = shutil.copytree(task_bundles["regression"].bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("model.onnx", "loss.onnx"):  # what --format torchscript writes: no ONNX graphs
        (bundle / name).unlink()
        del manifest["files"][name]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = _run(f"""
        from click.testing import CliRunner
        from pipeline.cli import main
        r = CliRunner().invoke(main, ["verify", r"{bundle}"])
        print(r.exit_code)
        print(r.output, end="")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"2\nError: {bundle}: holds no ONNX graph, and checking its torch graphs (TorchScript, "
                           ".pt2) needs torch, which the runtime-only install leaves out; install the training extra as the README does: pip "
                           "install torch==2.13.0 && pip install -e '.[train]'\n")


def test_train_checks_its_flags_before_importing_torch():
    """A typo answers at once: the flags are validated before torch (seconds to import) is needed."""
    proc = _run("""
        from click.testing import CliRunner
        from pipeline.cli import main
        for args in (["--huber-delta", "-1"], ["--loss", "hubber"], ["--val-split", "1.5"]):
            r = CliRunner().invoke(main, ["train", *args])
            print(r.exit_code, r.output, end="")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "2 Error: --huber-delta must be > 0; got -1.0",
        "2 Error: --loss 'hubber' is not a loss; choose one of regression: mse, l1, huber, smooth_l1; binary: "
        "bce_with_logits, bce, hinge; multiclass: cross_entropy, multi_margin, nll; multilabel: bce_with_logits, "
        "multilabel_soft_margin; count: poisson_nll; forecast: mse, mae, huber, smooth_l1, quantile; or a custom loss "
        "as package.module:ClassName",
        "2 Error: --val-split must be in [0, 1); got 1.5"]


def test_int8_predict_and_evaluate_run_without_torch(int8_bundles, tmp_path):
    import onnxruntime as ort

    tb = int8_bundles["multiclass"]
    X = np.load(tb.test_file)["X"]
    expected = ort.InferenceSession(str(tb.bundle / "model.int8.onnx"),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": X})[1]  # probabilities
    proc = _run(f"""
        import json
        import numpy as np
        from click.testing import CliRunner
        import runtime
        from pipeline.cli import main
        bundle = runtime.load(r"{tb.bundle}", precision="int8")
        out = {{"precision": bundle.precision,
                "predict": bundle.predict(np.load(r"{tb.test_file}")["X"])["probabilities"].tolist()}}
        runner = CliRunner()
        result = runner.invoke(main, ["predict", r"{tb.bundle}", "--data", r"{tb.test_file}", "--precision", "int8",
                                      "--out", r"{tmp_path / 'p.npz'}"])
        out["predict_cli"] = [result.exit_code, result.output]
        result = runner.invoke(main, ["evaluate", r"{tb.bundle}", "--data", r"{tb.test_file}", "--precision",
                                      "auto", "--json"])
        out["evaluate_cli"] = [result.exit_code, result.output]
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print(json.dumps(out))
    """)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["precision"] == "int8"
    np.testing.assert_allclose(got["predict"], expected, atol=1e-6, rtol=1e-6)
    assert got["predict_cli"] == [0, f"model graph: model.int8.onnx (int8)\nwrote {tmp_path / 'p.npz'} (37 series)\n"]
    np.testing.assert_allclose(np.load(tmp_path / "p.npz")["probabilities"], expected, atol=1e-6, rtol=1e-6)
    code, text = got["evaluate_cli"]
    manifest = json.loads((tb.bundle / "manifest.json").read_text())
    evaluated = json.loads(text.splitlines()[-1])
    assert code == 0 and evaluated["precision"] == "int8"
    assert evaluated["accuracy"] == pytest.approx(manifest["int8"]["int8"])  # what export measured, on the same file
