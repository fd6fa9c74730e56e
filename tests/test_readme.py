"""Every command block of the README runs, in README order, in a copy of the project (tiny data where the
README names big files, one epoch where it trains), so the README cannot drift from the product; the
help texts show the README's examples and time estimates."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.conftest import CPP_BUILD, CPP_CONFIGURE, PTE_BUILD, PTE_CONFIGURE, PTE_FETCH, background, project_bash, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
# the manual's pages in the order their commands run (later pages use what earlier ones create)
DOCS = ("training", "data", "recordings", "forecasting", "segmentation", "models", "tracking", "export", "runtime", "python", "performance", "hosts",
        "signing", "architecture")
FRONT_DOOR = (ROOT / "README.md").read_text()
README = FRONT_DOOR + "".join((ROOT / "docs" / f"{page}.md").read_text() for page in DOCS)


def blocks(language: str, page: str | None = None) -> list[str]:
    """The code blocks in `language` of the README and manual, in run order, or of one docs page."""
    text = README if page is None else (ROOT / "docs" / f"{page}.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """Logical lines of a bash block: continuations joined, comments and comment lines dropped."""
    text = block.replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lines.append(re.sub(r"\s+#\s.*$", "", line).strip())
    return lines


def test_every_docs_page_is_linked_from_the_readme_and_run_here():
    pages = {path.stem for path in (ROOT / "docs").glob("*.md")}
    assert pages == set(DOCS)
    for page in DOCS:
        assert f"](docs/{page}.md)" in FRONT_DOOR


def test_the_readme_is_a_front_door():
    assert len(FRONT_DOOR.splitlines()) <= 150


def test_the_ci_runs_exactly_the_readmes_test_command():
    setup, tests = re.findall(r"```bash\n(.*?)```", FRONT_DOOR, flags=re.S)[:2]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert commands(tests) == [ci]
    assert ci.endswith("python -m pytest -q") and "pip install torch==2.13.0 && pip install -e '.[train,test]'" in ci
    assert commands(setup)[0].startswith("pip install torch==2.13.0 && pip install -e '.[train]' && pipeline train")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(line: str) -> str:
    """The README line on tiny settings: one epoch (two when resuming), small widths, quick benches on one
    thread, one machine for the multi-node example (each command of an && chain on its own)."""
    return " && ".join(_tiny(part.strip()) for part in line.split(" && "))


def _tiny(line: str) -> str:
    if re.search(r"\bpipeline train\b|pipeline\.cli train", line):
        if "--resume" in line:
            line = re.sub(r"--epochs \d+", "--epochs 2", line)
        else:
            line += "" if "--epochs" in line else " --epochs 1"
            line += " --width 0.125"
    if line.startswith("torchrun"):
        line = (line.replace("--nnodes 2", "--nnodes 1").replace("--nproc-per-node 4", "--nproc-per-node 2")
                .replace("host0:29500", f"127.0.0.1:{_free_port()}").replace("/shared/run", "shared/run")
                .replace("--batch-size 256", "--batch-size 16"))
    if re.search(r"\bpipeline bench\b", line) and "--device cuda" not in line:
        line = line.replace("--length 512", "--length 64").replace("--threads 4", "--threads 1")  # a worker's core
        fresh_model = re.search(r"\bbench( --|$)", line)  # no RUN_DIR: the model's shape is the command's to set
        line += (" --width 0.125" if fresh_model and "--width" not in line else "") + " --no-memory" + (
            "" if "--quick" in line else " --quick")
    return line


def _bash(line: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return project_bash(line, cwd, timeout)


def _serve_then_stop(line: str, cwd: Path) -> None:
    """A command that serves until stopped: wait for its address, fetch the page, stop it."""
    env = {**subprocess_env(), "PYTHONUNBUFFERED": "1", "ONNXRUNTIME_NODE_INSTALL": "skip"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(["bash", "-c", f"exec {line}" if "&&" not in line else line], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, seen = time.monotonic() + 300, ""
        while time.monotonic() < deadline:
            out = proc.stdout.readline()
            seen += out
            found = re.search(r"http://(127\.0\.0\.1|localhost):\d+/(index\.html)?", out)
            if found:
                page = urllib.request.urlopen(found.group(0), timeout=30).read().decode()
                assert "<html" in page.lower() or "<!doctype html" in page.lower()
                return
            if not out and proc.poll() is not None:
                break
        pytest.fail(f"{line}: no address printed\n{seen[-2000:]}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _exec_block(code: str, box: Path, page: str) -> dict:
    """A docs page's Python block run in the project copy, as a user runs it from the clone; its variables."""
    cwd = os.getcwd()
    os.chdir(box)
    try:
        namespace: dict = {}
        exec(compile(code, page, "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def _run_python_block(code: str, box: Path) -> None:
    namespace = _exec_block(code, box, "docs/runtime.md")
    assert set(namespace["outputs"]) == set(namespace["bundle"].outputs)
    assert namespace["x"].shape == (40, 1, 128) and len(namespace["y"]) == 40  # examples/waveforms_test.ts
    assert np.isfinite(namespace["loss"]) and namespace["per_sample_loss"].shape == (40,)
    assert np.isfinite(namespace["metrics"]["loss"]) and 0 <= namespace["metrics"]["accuracy"] <= 1


def _run_stream_block(code: str, box: Path) -> None:
    """docs/recordings.md's stream example on the README's windowed bundle: the pushed chunks give the windows of
    predict_windows of the whole recording."""
    namespace = _exec_block(code, box, "docs/recordings.md")
    streamed, whole = namespace["streamed"], namespace["whole"]
    assert np.concatenate([o["start"] for o in streamed]).tolist() == whole["start"].tolist()
    assert len(whole["start"]) == (1000 - 100) // 25 + 1
    np.testing.assert_allclose(np.concatenate([o["probabilities"] for o in streamed]), whole["probabilities"],
                               atol=1e-6, rtol=1e-6)


def _run_forecast_block(code: str, box: Path) -> None:
    """docs/forecasting.md's Python example on the page's bundle: the forecast after the recording's last window
    is the last window's forecast of the stream."""
    namespace = _exec_block(code, box, "docs/forecasting.md")
    ahead, out = namespace["ahead"], namespace["out"]
    assert ahead.shape == (1, 12, 3) and out["forecast"].shape == (50, 1, 12, 3) and out["end"][-1] == 600
    np.testing.assert_allclose(out["forecast"][-1], ahead, atol=1e-6, rtol=1e-6)


def _run_segments_block(code: str, box: Path) -> None:
    """docs/segmentation.md's Python example on the page's bundle: the stream, pushed in chunks and finished,
    answers every sample with the labels of label_samples on the whole recording."""
    namespace = _exec_block(code, box, "docs/segmentation.md")
    whole, labels, parts = namespace["whole"], namespace["labels"], namespace["parts"]
    assert whole["sample"].tolist() == list(range(1500)) and whole["probabilities"].shape == (1500, 4)
    assert np.concatenate([p["sample"] for p in parts]).tolist() == list(range(1500))
    np.testing.assert_array_equal(labels, whole["label"])


def _background(line: str, box: Path, servers: contextlib.ExitStack) -> None:
    """A README line ending in `&` (a server the next lines talk to): started, waited for, stopped at the end."""
    port = re.search(r"--port (\d+)", line).group(1)
    ready = f"http://127.0.0.1:{port}/" + ("health" if line.startswith("mlflow server") else "ping")
    env = {**subprocess_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    servers.enter_context(background(["bash", "-c", line.rstrip("&").strip()], ready, box, env=env))


def _local_ports(line: str, ports: dict[str, str]) -> str:
    """The README's ports 5000/5001 as free ports of this machine (the same one for every line)."""
    return re.sub(r"(127\.0\.0\.1:|--port )(500[01])\b",
                  lambda m: m.group(1) + ports.setdefault(m.group(2), str(_free_port())), line)


@pytest.mark.slow
def test_every_readme_command_runs(cpp_project, pte_kit):
    """In the session's copy of the project (a fresh clone's files, examples/ included, nothing added), whose
    C++ kits the C++ host tests built with docs/hosts.md's own lines: here they run again and find them
    built."""
    box = cpp_project
    with contextlib.ExitStack() as servers:
        _run_every_command(box, servers)


def _run_every_command(box: Path, servers: contextlib.ExitStack) -> None:
    ran, ports = [], {}
    for block in blocks("bash")[:1] + blocks("bash")[2:]:  # the test command is this very suite (test above)
        for line in commands(block):
            line = re.sub(r"^pip install torch==2\.13\.0 && pip install -e '\.\[train\]' && ", "", line)  # installed
            line = _local_ports(tiny(line), ports)
            if line.endswith("&"):
                _background(line, box, servers)
            elif line.startswith("curl "):
                result = _bash(line, box)
                assert result.returncode == 0 and len(json.loads(result.stdout)["predictions"]) == 1, result
            elif ("serve.py" in line and "--check" not in line) or line.startswith("tensorboard "):
                _serve_then_stop(line, box)
            elif "--device cuda" in line:
                result = _bash(line, box)
                cuda = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                                      capture_output=True, text=True).stdout.strip() == "True"
                assert result.returncode == 0 if cuda else (result.returncode == 2 and result.stderr == (
                    "Error: --device cuda was asked for but CUDA is not available here; use --device cpu\n"))
            else:
                result = _bash(line, box)
                assert result.returncode == 0, f"README command failed: {line}\n{result.stdout[-3000:]}\n" \
                                               f"{result.stderr[-3000:]}"
                assert "Traceback" not in result.stderr, line
            ran.append(line)
    _run_python_block(blocks("python", "runtime")[0], box)
    _run_stream_block(blocks("python", "recordings")[0], box)
    _run_forecast_block(blocks("python", "forecasting")[0], box)
    _run_segments_block(blocks("python", "segmentation")[0], box)
    assert len(ran) == sum(len(commands(b)) for b in blocks("bash")) - 1
    assert CPP_CONFIGURE in ran and f"{CPP_BUILD} && build/cpp/selfcheck artifacts/demo/bundle" in ran
    assert PTE_FETCH in ran and PTE_CONFIGURE in ran and f"{PTE_BUILD} && build/pte/pte_selfcheck artifacts/demo/pte" in ran
    assert "build/pte/pte_selfcheck artifacts/demo/pte --precision int8" in ran
    assert (box / "artifacts/demo/bundle/manifest.json").is_file() and (box / "my_bundle/model.onnx").is_file()
    assert (box / "shared/run/best.pt").is_file() and (box / "bench.json").is_file() and (box / "preds.csv").is_file()
    # docs/forecasting.md: one row per origin of the 3 unseen sites (600 samples, windows of 72 every 12), the
    # origin's time, then each step's quantiles
    rows = (box / "demand-forecasts.csv").read_text().splitlines()
    assert rows[0].startswith("row,recording,start,end,time,h1_q0.1,h1_q0.5,h1_q0.9,h2_q0.1,") and len(rows) == 1 + 3 * 45
    assert rows[1].startswith("0,site0,0,72,71,")
    # docs/segmentation.md: one row per sample of the 3 unseen subjects, then one per segment
    rows = (box / "gait-samples.csv").read_text().splitlines()
    assert rows[0] == "row,recording,sample,time,label,probability_rest,probability_run,probability_stairs," \
        "probability_walk" and len(rows) == 1 + 3 * 1500
    segs = (box / "gait-segments.csv").read_text().splitlines()
    assert segs[0] == "row,recording,start,end,start_time,end_time,label,probability" and len(segs) > 3


def test_the_python_pages_notebook_runs(tmp_path, monkeypatch):
    """docs/python.md's example as a user runs it from a fresh clone (examples/heartbeats.npz), on small
    settings: its cross-validation, the bundle's probabilities against predict_proba, the run folder the CLI
    would write."""
    code = blocks("python", "python")[0]
    small = code.replace("epochs=50", "epochs=3").replace("ensemble=5", "ensemble=2").replace("cv=5", "cv=3")
    assert small.count("epochs=3") == 1 and "ensemble=2" in small and "cv=3" in small
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    data = np.load(ROOT / "examples" / "heartbeats.npz")
    X = data["X"]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(small.replace('model="inception"', 'model="inception", width=0.125, epochs=1'),
                 "docs/python.md", "exec"), namespace)
    assert namespace["scores"].shape == (3,)
    np.testing.assert_allclose(namespace["probabilities"], namespace["clf"].predict_proba(X), atol=1e-5, rtol=1e-5)
    assert (tmp_path / "ecg_bundle" / "manifest.json").is_file()
    assert (tmp_path / "artifacts" / "ecg" / "members" / "member-1" / "best.pt").is_file()
    assert set(namespace["labels"].tolist()) <= {0, 1, 2} and len(namespace["labels"]) == len(X)
    assert namespace["run"].config.record.encoding.classes == ("afib", "normal", "other")


HELP_COMMANDS = ("train", "export", "predict", "evaluate", "verify", "bench", "sign", "keygen")


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_shows_the_readmes_examples_and_estimates(command):
    help_text = CliRunner().invoke(main, [command, "--help"]).output
    examples = {re.sub(r"\s+", " ", line.split("  #")[0].strip()) for line in help_text.splitlines()}
    readme_lines = [line for block in blocks("bash") for line in commands(block)
                    if re.match(rf"(.*&& )?pipeline {command}\b", line)]
    assert readme_lines
    for line in readme_lines:
        line = re.sub(r"\s+", " ", line.split(" && ")[-1] if line.startswith("pip") else line)
        if line.startswith(f"pipeline {command}"):
            assert line in examples, f"README's `{line}` is not among `pipeline {command} --help`'s examples"
    if command == "bench":
        assert "about 10 minutes on 2 cores" in help_text and "about 10 minutes on 2 cores" in README
    if command == "train":
        top = CliRunner().invoke(main, ["--help"]).output
        assert "about a minute on 2 CPU cores" in top and "in about a minute on 2 CPU cores" in FRONT_DOOR
