"""The runtime and the CLI's import path work where torch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    sys.meta_path.insert(0, _Block())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


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


def test_cli_help_works_and_train_says_what_to_install_without_torch(tmp_path):
    proc = _run(f"""
        from click.testing import CliRunner
        from pipeline.cli import main
        r = CliRunner().invoke(main, ["--help"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["train", "--out", r"{tmp_path / 'run'}"])
        print(r.exit_code)
        print(r.output, end="")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("2\nError: this command needs torch, which the runtime-only install leaves out; install "
                           "the training extra: pip install 'pipeline[train]'\n")
