"""Host kits (runtime/hosts/*): each loads a real bundle exported here and agrees with eager PyTorch."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export.bundle import rebuild
from pipeline.cli import main as cli_main
from export.golden import tensor_json
from export.graphs import as_tuple, model_graph
from runtime.manifest import LOSS_INPUTS, LOSS_OUTPUTS, SALIENCY_OUTPUT
from runtime.tasks import TASKS
from tests.conftest import WINDOW, eager_windows, make_recordings, shared, stream_case, write_recordings_csv
from tests.runtime.test_stream import chunk_sizes

pytestmark = pytest.mark.slow  # builds the C++ kit and runs npm ci and chromium

HOSTS = Path(__file__).resolve().parents[2] / "runtime" / "hosts"
ATOL = RTOL = 1e-5  # the export tolerances
HOST_TASKS = ("multiclass", "regression")  # a classification and a regression bundle


def need(tool: str, how: str) -> str:
    """The tool's path, or a failure (not a skip) that says how to install it."""
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is not installed; {how}", pytrace=False)
    return found


def eager_cases(run_dir: Path, path: Path, outputs: list[str] | None = None) -> Path:
    """Inputs other than the golden ones (other batch sizes and lengths) with eager PyTorch's outputs (the task's,
    or `outputs` as a bundle lists them: saliency after them where exported)."""
    run = rebuild(run_dir)
    cfg, model, loss, task = run.cfg, run.model, run.loss, run.task
    outputs = outputs or list(TASKS[task].outputs)
    graph = model_graph(model, task, saliency=SALIENCY_OUTPUT in outputs)
    g = torch.Generator().manual_seed(7)
    cases = []
    for n, length in ((1, cfg.length), (7, cfg.length), (3, cfg.length if cfg.fixed_length else 2 * cfg.length)):
        x = torch.randn(n, cfg.in_channels, length, generator=g) * 2 + 0.5
        prediction = torch.randn(n, cfg.n_outputs, generator=g) * 2
        target = (torch.randint(0, cfg.n_outputs, (n,), generator=g) if task == "multiclass"
                  else torch.randn(n, cfg.n_outputs, generator=g))
        with torch.inference_mode():
            model_out, loss_out = as_tuple(graph(x)), as_tuple(loss(prediction, target))
        cases.append({
            "model": {"inputs": {"x": tensor_json(x)}, "outputs": dict(zip(outputs, map(tensor_json, model_out)))},
            "loss": {"inputs": dict(zip(LOSS_INPUTS, map(tensor_json, (prediction, target)))),
                     "outputs": dict(zip(LOSS_OUTPUTS, map(tensor_json, loss_out)))},
            "atol": ATOL, "rtol": RTOL})
    path.write_text(json.dumps(cases))
    return path


def _model_outputs(bundle: Path) -> list[str]:
    """The model graph's named outputs as the bundle lists them (the task's, then saliency where exported)."""
    return json.loads((bundle / "manifest.json").read_text())["outputs"]


def assert_host_agrees(run_host, tb, task: str, tmp_path: Path, says: str = "") -> None:
    """A host's self-check passes on the golden data and on eager cases, every row within tolerance.

    `run_host(bundle, *args)` runs the host's check; it prints 'graph output shape max_abs A max_rel R ok'
    and ends with 'all N outputs match' followed by `says` (the C++ kit names its engine).
    """
    outputs = _model_outputs(tb.bundle)
    assert outputs[:len(TASKS[task].outputs)] == list(TASKS[task].outputs)
    golden = run_host(tb.bundle)
    assert golden.returncode == 0, golden.stdout + golden.stderr
    assert golden.stderr == f"all {len(outputs) + 2} outputs match{says}\n"
    result = run_host(tb.bundle, "--cases", eager_cases(tb.run_dir, tmp_path / "cases.json", outputs))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == 3 * ([("model", o) for o in outputs] +
                                                [("loss", o) for o in LOSS_OUTPUTS])
    assert all(r[-1] == "ok" for r in rows)
    assert max(float(r[r.index("max_abs") + 1]) for r in rows) <= ATOL + RTOL * 100


# --- Node.js ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def node_host(tmp_path_factory):
    """runtime/hosts/node with its packages installed (npm ci once per session, under a lock: every worker
    uses the same folder)."""
    need("node", "install Node.js 18+ (Debian: apt-get install nodejs npm)")
    npm = need("npm", "install npm (Debian: apt-get install npm)")
    folder = HOSTS / "node"

    def install(_scratch: Path) -> Path:
        if not (folder / "node_modules" / "onnxruntime-node").exists():
            # the CPU binaries ship inside the package; its postinstall would fetch GPU ones from GitHub
            env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert proc.returncode == 0, f"npm ci in {folder} failed:\n{proc.stderr[-2000:]}"
        return folder

    return shared(tmp_path_factory, "node-kit", install)


def _node(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(folder / "selfcheck.js"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _node_many(folder: Path, bundles: list[Path], key: Path | None = None) -> list[tuple[int, str]]:
    """selfcheck.js over several bundles in one process: (exit status, what it said) per bundle."""
    result = _node(folder, *bundles, *(["--public-key", key] if key else []), "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(line["bundle"]) for line in lines] == list(bundles), result.stdout[-3000:] + result.stderr[-3000:]
    return [(line["code"], line["said"]) for line in lines]


@pytest.mark.parametrize("task", HOST_TASKS)
def test_node_host_agrees_with_eager_on_golden_and_other_shapes(node_host, task_bundles, task, tmp_path):
    tb = task_bundles[task]
    golden = _node(node_host, tb.bundle)
    assert golden.returncode == 0, golden.stdout + golden.stderr
    assert golden.stderr == f"all {len(TASKS[task].outputs) + 2} outputs match (fp32)\n"
    cases = eager_cases(tb.run_dir, tmp_path / "cases.json")
    result = _node(node_host, tb.bundle, "--cases", cases, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [(r["graph"], r["output"]) for r in rows] == 3 * ([("model", o) for o in TASKS[task].outputs] +
                                                             [("loss", o) for o in LOSS_OUTPUTS])
    assert all(r["ok"] for r in rows) and max(r["max_abs"] for r in rows) <= ATOL + RTOL * 100


def test_node_host_runs_the_int8_graph_against_its_own_golden_outputs(node_host, int8_bundles, task_bundles):
    from runtime.golden import read_golden

    tb = int8_bundles["multiclass"]
    result = _node(node_host, tb.bundle, "--precision", "int8", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "all 5 outputs match (int8)\n"
    rows = json.loads(result.stdout)
    assert [(r["graph"], r["output"]) for r in rows] == [("int8", o) for o in TASKS["multiclass"].outputs] + [
        ("loss", o) for o in LOSS_OUTPUTS]
    golden = read_golden(tb.bundle)  # int8 differs from the fp32 golden outputs: the check really switched
    fp32_logits, int8_logits = (golden[k]["outputs"]["logits"]["data"] for k in ("model", "model_int8"))
    assert max(abs(a - b) for a, b in zip(fp32_logits, int8_logits)) > 1e-4
    assert _node(node_host, tb.bundle, "--precision", "auto").stderr == "all 5 outputs match (int8)\n"
    plain = _node(node_host, task_bundles["multiclass"].bundle, "--precision", "int8")
    assert (plain.returncode, plain.stderr) == (2, f"Error: {task_bundles['multiclass'].bundle / 'model.int8.onnx'}: "
                                                   "not in the bundle; re-export with --quantize int8, or run it in "
                                                   "fp32\n")


def test_node_host_refuses_a_tampered_bundle_and_reports_a_mismatch(node_host, task_bundles, tmp_path):
    tb = task_bundles["regression"]
    cases = json.loads(eager_cases(tb.run_dir, tmp_path / "cases.json").read_text())
    cases[1]["model"]["outputs"]["prediction"]["data"][0] += 1e-3
    (tmp_path / "off.json").write_text(json.dumps(cases))
    result = _node(node_host, tb.bundle, "--cases", tmp_path / "off.json")
    assert result.returncode == 1
    mismatched = [line for line in result.stdout.splitlines() if line.endswith("MISMATCH")]
    assert len(mismatched) == 1 and mismatched[0].startswith("model  prediction       [7,2]")
    assert result.stderr == "1 output(s) differ beyond atol/rtol\n"
    copy = shutil.copytree(tb.bundle, tmp_path / "copy")
    with open(copy / "loss.onnx", "ab") as f:
        f.write(b"\0")
    size = (copy / "loss.onnx").stat().st_size
    result = _node(node_host, copy)
    assert result.returncode == 2
    assert result.stderr == f"Error: {copy / 'loss.onnx'}: is {size} bytes but manifest.json says {size - 1}\n"


# --- C++ (libtorch from the pip torch wheel) -------------------------------------------------------

@pytest.fixture(scope="session")
def cpp_selfcheck(cpp_project) -> Path:
    """The selfcheck program of runtime/hosts/cpp, built once per session by docs/hosts.md's cmake lines."""
    return cpp_project / "build" / "cpp" / "selfcheck"


def _cpp(program: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("task", HOST_TASKS)
def test_cpp_host_agrees_with_eager_on_golden_and_other_shapes(cpp_selfcheck, task_bundles, task, tmp_path):
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), task_bundles[task], task, tmp_path,
                       " (engine torchscript)")


@pytest.mark.parametrize("task", HOST_TASKS)
def test_cpp_host_runs_the_aoti_packages_and_agrees_with_eager(cpp_selfcheck, aoti_bundles, task, tmp_path):
    """A pt2,aoti bundle (no TorchScript, no ONNX): the kit picks the AOTInductor packages by itself."""
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), aoti_bundles[task], task, tmp_path,
                       " (engine aoti)")


def test_cpp_host_engine_flag_and_its_refusals(cpp_selfcheck, task_bundles, aoti_bundles, tmp_path):
    both = shutil.copytree(aoti_bundles["regression"].bundle, tmp_path / "both")
    for name in ("model.pt", "loss.pt"):  # a bundle with both engines' files: auto picks AOTInductor
        shutil.copy(task_bundles["regression"].bundle / name, both / name)
    manifest = json.loads((both / "manifest.json").read_text())
    source = json.loads((task_bundles["regression"].bundle / "manifest.json").read_text())
    manifest["files"].update({n: source["files"][n] for n in ("model.pt", "loss.pt")})
    (both / "manifest.json").write_text(json.dumps(manifest))
    assert _cpp(cpp_selfcheck, both).stderr == "all 3 outputs match (engine aoti)\n"
    assert _cpp(cpp_selfcheck, both, "--engine", "torchscript").stderr == "all 3 outputs match (engine torchscript)\n"
    only_aoti = aoti_bundles["regression"].bundle
    result = _cpp(cpp_selfcheck, only_aoti, "--engine", "torchscript")
    assert (result.returncode, result.stderr) == (2, f"Error: {only_aoti}: has no model.pt; re-export with --format "
                                                     "torchscript (or all, or a list with torchscript), or run its "
                                                     "AOTInductor packages (--engine aoti)\n")
    only_script = task_bundles["regression"].bundle
    result = _cpp(cpp_selfcheck, only_script, "--engine", "aoti")
    assert (result.returncode, result.stderr) == (2, f"Error: {only_script}: has no model.aoti.pt2; re-export with "
                                                     "--format aoti (or a list with aoti), or run its TorchScript "
                                                     "graphs (--engine torchscript)\n")
    assert _cpp(cpp_selfcheck, only_script, "--engine", "jit").stderr == (
        "Error: --engine jit: choose auto, torchscript or aoti\n")


def test_cpp_host_refuses_packages_built_for_another_libtorch(cpp_selfcheck, aoti_bundles, tmp_path):
    copy = shutil.copytree(aoti_bundles["multiclass"].bundle, tmp_path / "old")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["torch_export"]["aoti"]["torch"] = "2.9.1+cpu"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = _cpp(cpp_selfcheck, copy)
    here = torch.__version__.split("+")[0]
    assert (result.returncode, result.stderr) == (
        2, f"Error: {copy}: its AOTInductor packages were compiled for torch 2.9.1+cpu but this program links "
           f"libtorch {here}; re-export with --format aoti where that libtorch's torch is installed, or run the "
           "TorchScript graphs (--engine torchscript)\n")


def test_cpp_host_refuses_a_tampered_bundle_and_reports_a_mismatch(cpp_selfcheck, task_bundles, tmp_path):
    tb = task_bundles["multiclass"]
    cases = json.loads(eager_cases(tb.run_dir, tmp_path / "cases.json").read_text())
    cases[2]["loss"]["outputs"]["loss"]["data"][0] += 1e-3
    (tmp_path / "off.json").write_text(json.dumps(cases))
    result = _cpp(cpp_selfcheck, tb.bundle, "--cases", tmp_path / "off.json")
    assert result.returncode == 1
    assert [line.split()[:3] for line in result.stdout.splitlines() if line.endswith("MISMATCH")] == [
        ["loss", "loss", "[]"]]
    assert result.stderr == "1 output(s) differ beyond atol/rtol\n"
    copy = shutil.copytree(tb.bundle, tmp_path / "copy")
    data = bytearray((copy / "model.pt").read_bytes())
    data[100] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    result = _cpp(cpp_selfcheck, copy)
    assert (result.returncode, result.stderr) == (
        2, f"Error: {copy / 'model.pt'}: sha256 differs from manifest.json (the file was altered)\n")


# --- Browser (onnxruntime-web, wasm, in headless chromium) -----------------------------------------

@pytest.fixture(scope="session")
def browser_kit(tmp_path_factory):
    """runtime/hosts/browser with onnxruntime-web installed (npm ci once per session, under a lock)."""
    need("chromium", "install Debian's chromium (apt-get install chromium); .ci/run does")
    npm = need("npm", "install npm (Debian: apt-get install npm)")
    folder = HOSTS / "browser"

    def install(_scratch: Path) -> Path:
        if not (folder / "node_modules" / "onnxruntime-web" / "dist" / "ort.min.js").exists():
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, f"npm ci in {folder} failed:\n{proc.stderr[-2000:]}"
        return folder

    return shared(tmp_path_factory, "browser-kit", install)


def _browser(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(folder / "serve.py"), *map(str, args), "--check"],
                          capture_output=True, text=True, timeout=180)


def _browser_many(folder: Path, bundles: list[Path], key: Path | None = None) -> list[tuple[int, str]]:
    """serve.py --check over several bundles in one browser session: (exit status, what it said) per bundle."""
    result = subprocess.run([sys.executable, str(folder / "serve.py"), *map(str, bundles), "--check", "--json",
                             *(["--public-key", str(key)] if key else [])], capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(line["bundle"]) for line in lines] == list(bundles), result.stdout[-3000:] + result.stderr[-3000:]
    return [(line["code"], line["said"]) for line in lines]


@pytest.mark.parametrize("task", HOST_TASKS)
def test_browser_page_agrees_with_eager_on_golden_and_other_shapes(browser_kit, task_bundles, task, tmp_path):
    assert_host_agrees(lambda *args: _browser(browser_kit, *args), task_bundles[task], task, tmp_path, " (fp32)")


def test_browser_page_runs_the_int8_graph(browser_kit, int8_bundles):
    result = _browser(browser_kit, int8_bundles["regression"].bundle, "--precision", "int8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "all 3 outputs match (int8)\n"
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["int8", "prediction"], ["loss", "loss"],
                                                                         ["loss", "per_sample_loss"]]


def test_browser_page_refuses_a_tampered_bundle(browser_kit, task_bundles, tmp_path):
    copy = shutil.copytree(task_bundles["regression"].bundle, tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[200] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    result = _browser(browser_kit, copy)
    assert (result.returncode, result.stderr) == (2, "Error: model.onnx: sha256 differs from manifest.json "
                                                     "(the file was altered)\n")


# --- every kit checks the manifest against the schema the bundle carries ------------------------------

def _wrong_field_bundle(task_bundles, tmp_path: Path, case: str) -> tuple[Path, str]:
    """A copy of a real bundle with one wrong manifest field, and the words every host must say about it."""
    from tests.runtime.test_manifest import WRONG_FIELDS

    change, message = WRONG_FIELDS[case]
    copy = Path(shutil.copytree(task_bundles["multiclass"].bundle, tmp_path / "bad"))
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy, (f"{message}; the bundle is damaged or was not written by pipeline export, re-export it")


HOST_WRONG_FIELDS = ("channels as text", "classes not a list", "n_outputs zero", "unknown task", "dim range as text",
                     "series per call zero")


@pytest.mark.parametrize("case", HOST_WRONG_FIELDS)
def test_node_host_names_a_wrong_manifest_field(node_host, task_bundles, tmp_path, case):
    copy, message = _wrong_field_bundle(task_bundles, tmp_path, case)
    result = _node(node_host, copy)
    assert (result.returncode, result.stderr) == (2, f"Error: {copy / 'manifest.json'}: {message}\n")


@pytest.mark.parametrize("case", HOST_WRONG_FIELDS)
def test_cpp_host_names_a_wrong_manifest_field(cpp_selfcheck, task_bundles, tmp_path, case):
    copy, message = _wrong_field_bundle(task_bundles, tmp_path, case)
    result = _cpp(cpp_selfcheck, copy)
    assert (result.returncode, result.stderr) == (2, f"Error: {copy / 'manifest.json'}: {message}\n")


def test_browser_page_names_a_wrong_manifest_field(browser_kit, task_bundles, tmp_path):
    copy, message = _wrong_field_bundle(task_bundles, tmp_path, "channels as text")
    result = _browser(browser_kit, copy)
    assert (result.returncode, result.stderr) == (2, f"Error: manifest.json: {message}\n")


# --- An ensemble bundle (--ensemble 3: one graph averaging three members) in every kit ------------------

def test_node_host_runs_an_ensemble_bundle(node_host, ensemble_bundles, tmp_path):
    assert_host_agrees(lambda *args: _node(node_host, *args), ensemble_bundles["multiclass"], "multiclass",
                       tmp_path, " (fp32)")


def test_cpp_host_runs_an_ensemble_bundle(cpp_selfcheck, ensemble_bundles, tmp_path):
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), ensemble_bundles["multiclass"], "multiclass",
                       tmp_path, " (engine torchscript)")


def test_browser_page_runs_an_ensemble_bundle(browser_kit, ensemble_bundles, tmp_path):
    assert_host_agrees(lambda *args: _browser(browser_kit, *args), ensemble_bundles["multiclass"], "multiclass",
                       tmp_path, " (fp32)")


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_every_kit_returns_the_saliency_maps_eager_gives(node_host, cpp_selfcheck, browser_kit, saliency_bundles,
                                                         task, tmp_path):
    """export --saliency: the maps (an fcn's predicted class; a resnet ensemble's per label) in every kit, on the
    golden data and at other batch sizes and lengths, as eager computes them."""
    tb = saliency_bundles[task]
    assert _model_outputs(tb.bundle)[-1] == SALIENCY_OUTPUT
    assert_host_agrees(lambda *args: _node(node_host, *args), tb, task, tmp_path, " (fp32)")
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), tb, task, tmp_path, " (engine torchscript)")
    assert_host_agrees(lambda *args: _browser(browser_kit, *args), tb, task, tmp_path, " (fp32)")


# --- the kernel models (MiniRocket, Hydra, MultiRocket-Hydra) in every kit ----------------------------------

@pytest.mark.parametrize("model", ["minirocket", "hydra", "multirocket-hydra"])
def test_every_kit_runs_the_kernel_models(node_host, cpp_selfcheck, browser_kit, kernel_bundles, model, tmp_path):
    tb = kernel_bundles[model]
    assert_host_agrees(lambda *args: _node(node_host, *args), tb, tb.task, tmp_path, " (fp32)")
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), tb, tb.task, tmp_path, " (engine torchscript)")
    assert_host_agrees(lambda *args: _browser(browser_kit, *args), tb, tb.task, tmp_path, " (fp32)")


def test_every_kit_cuts_a_kernel_bundles_calls_at_its_bound_and_answers_as_eager(node_host, cpp_selfcheck,
                                                                                   browser_kit, kernel_bundles,
                                                                                   tmp_path):
    """manifest batch_bound.series_per_call 3: the golden batch of 64 and the cases of 7 and 3 series run in
    calls of at most 3 in every kit, each output (float scores and int64 labels) joined in order."""
    tb = kernel_bundles["minirocket"]
    copy = tmp_path / "bounded"
    shutil.copytree(tb.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["batch_bound"] = {"series_per_call": 3, "bytes_per_series": manifest["batch_bound"]["bytes_per_series"]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bounded = dataclasses.replace(tb, bundle=copy)
    assert_host_agrees(lambda *args: _node(node_host, *args), bounded, tb.task, tmp_path, " (fp32)")
    assert_host_agrees(lambda *args: _cpp(cpp_selfcheck, *args), bounded, tb.task, tmp_path, " (engine torchscript)")
    assert_host_agrees(lambda *args: _browser(browser_kit, *args), bounded, tb.task, tmp_path, " (fp32)")


# --- streaming: every kit's stream gives the windows eager PyTorch gives, for any chunking ---------------

STREAM_RECORDING = make_recordings("regression", count=1, samples=150, seed=9)[0][0]  # (2, 150), not trained on


@pytest.mark.parametrize("host", ["node", "cpp", "browser"])
@pytest.mark.parametrize("task", HOST_TASKS)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(chunk_sizes(STREAM_RECORDING.shape[1]), min_size=2, max_size=3))
def test_every_kit_streams_the_windows_eager_gives_for_any_chunking(host, task, kits, windowed_bundles, drawn,
                                                                    tmp_path_factory):
    wb = windowed_bundles[task]
    T = STREAM_RECORDING.shape[1]
    chunkings = [[1] * T, [T], *drawn]  # one sample at a time, the whole recording at once, then hypothesis's
    cases = tmp_path_factory.mktemp("stream") / "cases.json"
    cases.write_text(json.dumps(stream_case(wb.run_dir, STREAM_RECORDING, chunkings)))
    result = _host_run(host, kits, wb.bundle, "--cases", cases)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    outputs = list(TASKS[task].outputs)
    assert [(r[0], r[1]) for r in rows] == len(chunkings) * ([("stream", "start")] + [("stream", o) for o in outputs])
    assert all(r[-1] == "ok" for r in rows), result.stdout


def test_the_node_stream_script_prints_every_window_of_a_csv_as_eager_scores_it(node_host, windowed_bundles,
                                                                                tmp_path):
    """runtime/hosts/node/stream.js reads a per-sample .csv line by line, a new stream per recording id, and prints
    each window as it completes: the windows and scores of eager PyTorch on each recording."""
    wb = windowed_bundles["regression"]
    recordings = make_recordings("regression", count=2, samples=70, seed=4)[0]
    # its channel columns in the other order than training's: matched by the manifest's names, not swapped
    data = write_recordings_csv(tmp_path / "live.csv", recordings, [np.zeros(r.shape[1]) for r in recordings],
                                order=[1, 0])
    result = subprocess.run(["node", str(node_host / "stream.js"), wb.bundle, data, "--chunk", "9"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "recording,start,end,prediction"
    rows = [line.split(",") for line in lines[1:]]
    expected = [(f"r{r}", s) for r, x in enumerate(recordings) for s in eager_windows(wb.run_dir, x)["start"]]
    assert [(row[0], int(row[1])) for row in rows] == expected
    assert all(int(row[2]) - int(row[1]) == WINDOW for row in rows)
    eager = np.concatenate([eager_windows(wb.run_dir, x)["prediction"][:, 0] for x in recordings])
    np.testing.assert_allclose([float(row[3]) for row in rows], eager, rtol=1e-5, atol=1e-5)
    data.write_text(data.read_text().replace("ch1,", "pressure,", 1))
    refused = subprocess.run(["node", str(node_host / "stream.js"), wb.bundle, data], capture_output=True, text=True,
                             timeout=120)
    assert (refused.returncode, refused.stderr) == (2, f"Error: {data}: no column 'ch1'; the model reads the channels "
                                                       "'ch0', 'ch1' (matched by header name, in any order)\n")


def test_the_browser_live_view_plays_a_recording_as_a_stream(browser_kit, windowed_bundles, tmp_path):
    """serve.py --play: the page's live view streams a per-sample .csv (its recording/time/label columns left out
    and its channel columns matched by the manifest's names) and scores each window as it completes, as eager
    PyTorch does."""
    wb = windowed_bundles["multiclass"]
    recording = write_recordings_csv(tmp_path / "live.csv", [STREAM_RECORDING], [np.array(["cat"] * 150)],
                                     order=[1, 0])  # columns in another order than training's: matched by name
    result = subprocess.run([sys.executable, str(browser_kit / "serve.py"), wb.bundle, "--play", recording],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    streamed = json.loads(result.stdout)
    eager = eager_windows(wb.run_dir, STREAM_RECORDING)
    assert result.stderr == f"played: {len(eager['start'])} windows streamed\n"
    assert streamed["start"] == eager["start"]
    np.testing.assert_allclose(np.array(streamed["scores"]), eager["probabilities"], atol=ATOL, rtol=RTOL)


def test_the_browser_live_view_shades_the_signal_by_each_windows_saliency(browser_kit, windowed_bundles, tmp_path):
    """A windowed run exported with --saliency: the live view shades the newest window's samples by its map,
    and every streamed window's map is eager's on the same window (cut by a plain loop), scaled to [-1, 1]."""
    from export.bundle import ExportConfig, export_run

    wb = windowed_bundles["multiclass"]
    bundle = export_run(wb.run_dir, ExportConfig(fmt="onnx", saliency=True), out=tmp_path / "saliency",
                        log=lambda _: None)
    recording = write_recordings_csv(tmp_path / "live.csv", [STREAM_RECORDING], [np.array(["cat"] * 150)])
    result = subprocess.run([sys.executable, str(browser_kit / "serve.py"), bundle, "--play", recording],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    streamed = json.loads(result.stdout)
    run = rebuild(wb.run_dir)
    windows = np.stack([STREAM_RECORDING[:, s:s + WINDOW] for s in streamed["start"]]).astype(np.float32)
    with torch.inference_mode():
        eager = as_tuple(model_graph(run.model, run.task, saliency=True)(torch.from_numpy(windows)))[-1].numpy()
    assert streamed["start"] == eager_windows(wb.run_dir, STREAM_RECORDING)["start"]
    np.testing.assert_allclose(np.array(streamed["saliency"]), eager, atol=ATOL, rtol=RTOL)
    assert streamed["shaded"] == WINDOW and np.abs(eager).max(axis=1).min() == pytest.approx(1.0)


# --- signed bundles: every kit checks model.sig before anything loads, with the runtime's messages ---------

def _host_names(host: str):
    """How a host names a bundle file in its messages: the folder joined with the name (Node, C++), or the
    name the page fetched (browser)."""
    return (lambda folder, name: name) if host == "browser" else (lambda folder, name: str(folder / name))


def _host_run(host: str, kits: dict, bundle: Path, *args) -> subprocess.CompletedProcess:
    return {"node": lambda: _node(kits["node"], bundle, *args), "cpp": lambda: _cpp(kits["cpp"], bundle, *args),
            "pte": lambda: _cpp(kits["pte"], bundle, *args),
            "browser": lambda: _browser(kits["browser"], bundle, *args)}[host]()


@pytest.fixture(scope="session")
def kits(request) -> dict:
    """The kits a test names (its `host` parameter), each built or installed once per session."""
    fixture = {"node": "node_host", "cpp": "cpp_selfcheck", "browser": "browser_kit", "pte": "pte_kit"}
    return {host: request.getfixturevalue(name) for host, name in fixture.items()}


@pytest.mark.parametrize("host", ["node", "cpp", "browser"])
def test_every_kit_runs_a_signed_bundle_and_says_whose_key_signed_it(host, kits, signed_bundles, keys):
    from runtime.signature import PublicKey

    fp = PublicKey.read(keys.public()).fingerprint[:16]
    for task, folder in signed_bundles.items():
        result = _host_run(host, kits, folder, "--public-key", keys.public())
        assert result.returncode == 0, result.stdout + result.stderr
        said = {"node": f"all {len(TASKS[task].outputs) + 2} outputs match (fp32, signature verified (key {fp}))\n",
                "cpp": f"all {len(TASKS[task].outputs) + 2} outputs match (engine torchscript, signature verified "
                       f"(key {fp}))\n",
                "browser": f"signature verified (key {fp})\nall {len(TASKS[task].outputs) + 2} outputs match "
                           "(fp32)\n"}[host]
        assert result.stderr == said


@pytest.mark.parametrize("host", ["node", "cpp", "browser", "pte"])  # pte: the .pte kit checks before it loads
def test_every_kit_refuses_every_forgery_with_the_runtimes_words(host, kits, signed_bundles, keys, tmp_path):
    from tests.runtime.test_signature import FORGERIES, PREFIX_ONLY, forged

    for case in FORGERIES:
        folder, message = forged(case, signed_bundles, keys, tmp_path / host, _host_names(host),
                                 keys.public().name if host == "browser" else None)
        if host == "browser" and case in ("file added", "signature file added below", "file renamed"):
            # a page cannot list the served folder: a file outside manifest.json is never fetched, and a renamed
            # one is missing where the signature says it is
            if case != "file renamed":
                assert _host_run(host, kits, folder, "--public-key", keys.public()).returncode == 0
                continue
            message = "README.txt: signed but missing (removed or renamed after signing)"
        result = _host_run(host, kits, folder, "--public-key", keys.public())
        assert result.returncode == 2, (case, result.stdout + result.stderr)
        said = result.stderr.removeprefix("Error: ")
        if case in PREFIX_ONLY:
            assert said.startswith(message) and said.count("\n") == 1, (case, said)
        else:
            assert said == message + "\n", case
    for kind, shown in (("rsa", "RSA"), ("ed25519", "Ed25519")):
        result = _host_run(host, kits, signed_bundles["multiclass"], "--public-key", keys.public(kind))
        key = keys.public(kind) if host != "browser" else keys.public(kind).name
        assert (result.returncode, result.stderr) == (2, f"Error: {key}: unsupported key type ({shown}); bundles are "
                                                         "signed and checked with EC keys (P-256, P-384 or P-521), "
                                                         "see docs/signing.md\n")


@pytest.mark.parametrize("host", ["node", "cpp", "browser"])
def test_every_kit_checks_a_bundle_the_model_signing_tool_signed(host, kits, task_bundles, keys, tmp_path):
    bundle = shutil.copytree(task_bundles["regression"].bundle, tmp_path / "b")
    tool = subprocess.run([str(Path(sys.executable).with_name("model_signing")), "sign", "key", str(bundle),
                           "--private_key", str(keys.private("p384")), "--signature", str(bundle / "model.sig")],
                          capture_output=True, text=True, timeout=120)
    assert tool.returncode == 0, tool.stderr
    assert _host_run(host, kits, bundle, "--public-key", keys.public("p384")).returncode == 0
    refused = _host_run(host, kits, bundle, "--public-key", keys.public())
    assert refused.returncode == 2 and "signed by another key" in refused.stderr


def test_the_cpp_kit_opens_no_aotinductor_library_of_a_refused_bundle(cpp_selfcheck, aoti_bundles, keys, tmp_path):
    """glibc's LD_DEBUG=files lists every library the program loads: the packages' compiled .so files appear
    for the signed bundle, and none for the same bundle with one file changed after signing."""
    from export.signing import sign_bundle

    good = shutil.copytree(aoti_bundles["multiclass"].bundle, tmp_path / "good")
    sign_bundle(good, keys.private())
    bad = shutil.copytree(good, tmp_path / "bad")
    (bad / "README.txt").write_text("changed after signing")
    env = {**os.environ, "LD_DEBUG": "files"}

    def packages_loaded(folder: Path) -> list[str]:
        proc = subprocess.run([str(cpp_selfcheck), str(folder), "--public-key", str(keys.public())], env=env,
                              capture_output=True, text=True, timeout=180)
        return [line for line in proc.stderr.splitlines() if "dynamically loaded" in line and "aotinductor" in line]

    assert len(packages_loaded(good)) == 2  # model and loss: the observation works
    assert packages_loaded(bad) == []


# --- only regular files: a link, a FIFO or a folder where a file belongs is refused by every host, by name ---------

@pytest.mark.hostile
def test_every_host_refuses_a_link_a_fifo_and_a_folder_in_a_bundle_in_the_same_words(kits, task_bundles,
                                                                                    signed_bundles, keys, tmp_path):
    """Never followed and never opened (a FIFO would block a reader for ever): refused at load, naming the path, in
    pipeline verify, the Node kit, the browser kit's server and the C++ kit; in a signed bundle an unlisted FIFO
    too."""
    source = task_bundles["multiclass"].bundle
    made = {}
    for case, name in (("link", "model.onnx"), ("fifo", "golden.json"), ("folder", "loss.onnx")):
        folder = Path(shutil.copytree(source, tmp_path / case))
        (folder / name).rename(folder / "moved")
        {"link": lambda p: p.symlink_to("moved"), "fifo": os.mkfifo, "folder": Path.mkdir}[case](folder / name)
        made[folder] = (folder / name, {"link": "a symbolic link", "folder": "a folder"}.get(
            case, "not a regular file (a FIFO, socket or device)"))
    signed = Path(shutil.copytree(signed_bundles["multiclass"], tmp_path / "signed"))
    os.mkfifo(signed / "notes")
    said = lambda path, kind: (f"Error: {path}: is {kind}; a bundle holds regular files only, so it is refused "  # noqa: E731
                               "(copy the file itself into the bundle, or re-export it)")
    bundles = list(made)
    expected = [said(*made[b]) for b in bundles]
    assert _node_many(kits["node"], bundles) == [(2, line) for line in expected]
    assert _browser_many(kits["browser"], bundles) == [(2, line) for line in expected]
    for folder, line in zip(bundles, expected):
        assert (lambda r: (r.returncode, r.stderr))(_cpp(kits["cpp"], folder)) == (2, line + "\n")
        verify = CliRunner().invoke(cli_main, ["verify", str(folder)])
        assert (verify.exit_code, verify.output) == (2, line + "\n")
    fifo = said(signed / "notes", "not a regular file (a FIFO, socket or device)")
    assert _node_many(kits["node"], [signed, source], keys.public())[0] == (2, fifo)
    assert _browser_many(kits["browser"], [signed, source], keys.public())[0] == (2, fifo)
    assert (lambda r: (r.returncode, r.stderr))(_cpp(kits["cpp"], signed, "--public-key", keys.public())) == (
        2, fifo + "\n")
    verify = CliRunner().invoke(cli_main, ["verify", str(signed), "--public-key", str(keys.public())])
    assert (verify.exit_code, verify.output) == (2, fifo + "\n")


@pytest.mark.hostile
def test_the_node_kits_stream_refuses_a_zero_a_negative_and_a_fractional_window(node_host, windowed_bundles):
    """bundle.stream({length: 0}) was silently the bundle's own window (`length || default`)."""
    script = ("const { loadBundle } = require(process.argv[1]);"
              "loadBundle(process.argv[2]).then((b) => { for (const o of [{ length: 0 }, { stride: -1 }, "
              "{ length: 2.5 }, { stride: '8' }]) { try { b.stream(o); console.log('accepted'); } "
              "catch (e) { console.log(e.message); } } console.log(b.stream({}).length); });")
    result = subprocess.run(["node", "-e", script, str(node_host / "bundle.js"), str(windowed_bundles["regression"].bundle)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tail = "must be a whole number of samples >= 1 (or left out for the bundle's own)"
    assert result.stdout.splitlines() == [f"stream length: 0 {tail}", f"stream stride: -1 {tail}",
                                          f"stream length: 2.5 {tail}", f"stream stride: 8 {tail}", str(WINDOW)]


# --- forecasting: a quantile forecaster's (batch, T, H, Q) output and its stream in every kit ----------------

@pytest.mark.parametrize("host", ["node", "cpp", "browser"])
def test_every_kit_checks_a_forecasters_golden_data_streams_and_rolls_out_as_eager(host, kits, forecast_bundle,
                                                                                    tmp_path):
    from export.golden import tensor_json
    from tests.conftest import FORECAST, eager_rollout

    fb = forecast_bundle
    says = {"node": " (fp32)", "cpp": " (engine torchscript)", "browser": " (fp32)"}[host]
    golden = _host_run(host, kits, fb.bundle)
    assert (golden.returncode, golden.stderr) == (0, f"all 4 outputs match{says}\n"), golden.stdout + golden.stderr
    shapes = [(line.split()[:2], re.search(r"\[[\d, ]+\]", line).group(0).replace(" ", ""))
              for line in golden.stdout.splitlines()[:2]]
    assert shapes == [(["model", "prediction"], "[2,36]"), (["model", "forecast"], "[2,2,6,3]")]
    recording = np.load(fb.data)["X"][0]  # (2, 150): the site at level 10
    # the verification's tolerance: 1e-5 of the largest window's spread (export.thresholds.forecast_allowance)
    atol = 1e-5 * float(max(recording[:, s:s + FORECAST["window"]].std(axis=1).max() for s in range(0, 127, 3)))
    T = recording.shape[1]
    history, steps = np.load(fb.data)["X"][2, :, :50], 4 * FORECAST["horizon"] + 2  # a rollout of 4 horizons and 2
    rollout = {"forecast": {"history": tensor_json(torch.from_numpy(history)), "steps": steps, "outputs": {
        "forecast": tensor_json(torch.from_numpy(eager_rollout(fb.run_dir, history, steps)))}},
        "atol": 1e-5 * float(history[:, -FORECAST["window"]:].std(axis=1).max()), "rtol": 1e-5}  # as verification
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([stream_case(fb.run_dir, recording, [[1] * T, [T], [7] * (T // 7) + [T % 7]],
                                             atol=atol, length=FORECAST["window"], stride=FORECAST["stride"]),
                                 rollout]))
    result = _host_run(host, kits, fb.bundle, "--cases", cases)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert [(r[0], r[1]) for r in rows] == 3 * [("stream", "start"), ("stream", "prediction"), ("stream", "forecast")
                                                ] + [("forecast", "forecast")]
    assert all(r[-1] == "ok" for r in rows), result.stdout


def test_the_browser_live_view_draws_the_newest_forecast_as_a_fan_ahead_of_the_signal(browser_kit, forecast_bundle,
                                                                                     tmp_path):
    """serve.py --play of a forecaster: the fan drawn ahead of the signal is the newest window's forecast of the
    first target (lowest quantile, median, highest), as eager PyTorch gives it for that window."""
    from tests.conftest import FORECAST

    fb = forecast_bundle
    recording = np.load(fb.data)["X"][0][:, :90]  # (2, 90), the site at level 10
    result, streamed, written = _play(browser_kit, fb.bundle, recording, "a,b", "%.6f", tmp_path)
    eager = eager_windows(fb.run_dir, written, FORECAST["window"], FORECAST["stride"])
    assert streamed["start"] == eager["start"]
    newest = eager["forecast"][-1, 0]  # (H, Q) of the first target
    fan = streamed["fan"]
    assert fan["start"] == eager["start"][-1] + FORECAST["window"]
    atol = 1e-5 * float(np.abs(written).max())
    for key, q in (("lower", 0), ("median", 1), ("upper", 2)):
        np.testing.assert_allclose(fan[key], newest[:, q], atol=atol, rtol=1e-5, err_msg=key)


def test_the_node_stream_script_prints_a_forecasters_windows_in_predicts_columns(node_host, forecast_bundle, tmp_path):
    """stream.js on a forecaster: predict's column names (a column per target, step and quantile) and every
    window's whole forecast, as eager PyTorch gives it."""
    from tests.conftest import FORECAST

    fb = forecast_bundle
    recording = np.load(fb.data)["X"][0][:, :60]
    live = tmp_path / "live.csv"
    np.savetxt(live, recording.T, delimiter=",", header="a,b", comments="", fmt="%.6f")
    result = subprocess.run(["node", str(node_host / "stream.js"), fb.bundle, live, "--chunk", "9"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    h, quantiles = FORECAST["horizon"], ("0.1", "0.5", "0.9")
    assert header.split(",") == ["recording", "start", "end"] + [
        f"{target}_h{step}_q{q}" for target in ("0", "1") for step in range(1, h + 1) for q in quantiles]
    written = np.loadtxt(live, delimiter=",", skiprows=1).T.astype(np.float32)
    eager = eager_windows(fb.run_dir, written, FORECAST["window"], FORECAST["stride"])
    assert [int(r.split(",")[1]) for r in rows] == eager["start"]
    got = np.array([[float(v) for v in r.split(",")[3:]] for r in rows])
    np.testing.assert_allclose(got, eager["forecast"].reshape(len(rows), -1), rtol=1e-5,
                               atol=1e-5 * float(np.abs(written).max()))


def test_the_browser_kits_server_answers_the_favicon_and_is_quiet_when_the_page_closes_a_connection(capsys):
    """Chromium asks for /favicon.ico and may close a connection as the page quits: neither may print a traceback
    where serve.py's one line (or nothing) is expected."""
    import importlib.util
    import threading
    import urllib.request

    spec = importlib.util.spec_from_file_location("browser_serve", HOSTS / "browser" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    server = serve.QuietServer(("127.0.0.1", 0), serve.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/favicon.ico", timeout=30)
        assert answer.status == 204
        for error in (ConnectionResetError("reset by peer"), BrokenPipeError("broken pipe")):
            try:
                raise error
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("boom")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: boom" in capsys.readouterr().err  # anything else is still printed
    finally:
        server.shutdown()
        server.server_close()


def _play(browser_kit: Path, bundle: Path, recording: np.ndarray, header: str, fmt: str, tmp_path: Path):
    """serve.py --play of `recording` (C, T) written as a .csv: (the process, what the page streamed, the samples
    as the page read them from the file)."""
    live = tmp_path / "live.csv"
    np.savetxt(live, recording.T, delimiter=",", header=header, comments="", fmt=fmt)
    result = subprocess.run([sys.executable, str(browser_kit / "serve.py"), bundle, "--play", live],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout), np.loadtxt(live, delimiter=",", skiprows=1).T.astype(np.float32)


# --- a label per time step: every kit's stitched stream equals eager stitched by a plain loop ----------------

@pytest.mark.parametrize("host", ["node", "cpp", "browser"])
def test_every_kit_checks_per_step_golden_data_and_stitches_a_stream_as_eager(host, kits, step_bundles, tmp_path):
    """Each per-step bundle (multiclass fcn, binary unet, multilabel tcn): the golden data (outputs (batch, K, W),
    the per-step loss), then the recording streamed one sample at a time, whole, and in chunks of 7, finished: every
    sample, its stitched probabilities and label against eager PyTorch's windows stitched by a plain loop."""
    from tests.conftest import steps_case

    for task, sb in step_bundles.items():
        recording = sb.recordings[2][:, :120]
        T = recording.shape[1]
        golden = json.loads((sb.bundle / "golden.json").read_text())  # one run: the golden case, then the stream's
        cases = tmp_path / f"{task}.json"
        cases.write_text(json.dumps([golden, steps_case(sb.run_dir, recording, [[1] * T, [T], [7] * (T // 7) +
                                                                                 [T % 7]])]))
        result = _host_run(host, kits, sb.bundle, "--cases", cases)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        rows = [line.split() for line in lines]
        outputs = TASKS[task].outputs
        assert [(r[0], r[1]) for r in rows] == [("model", o) for o in outputs] + [
            ("loss", "loss"), ("loss", "per_sample_loss")] + 3 * [("steps", "sample"), ("steps", "probabilities"),
                                                                   ("steps", "label")]
        assert all(r[-1] == "ok" for r in rows), result.stdout
        # the model's per-step outputs: (batch, K, W), the label (batch, W)
        shapes = [json.loads(re.search(r"\[[\d, ]+\]", line).group(0)) for line in lines[:len(outputs)]]
        assert all(len(shape) >= 2 and shape[-1] == golden["model"]["inputs"]["x"]["shape"][2] for shape in shapes)


def test_the_node_stream_script_prints_every_sample_as_predict_writes_it(node_host, step_bundles, tmp_path):
    """stream.js on a per-step bundle: predict's per-sample columns, each sample once its windows have arrived (the
    last ones at the recording's end), the same labels and probabilities as `pipeline predict`."""
    sb = step_bundles["multilabel"]
    predicted = tmp_path / "predicted.csv"
    result = CliRunner().invoke(cli_main, ["predict", str(sb.bundle), "--data", str(sb.train_file), "--out",
                                           str(predicted)])
    assert result.exit_code == 0, result.output
    expected = list(csv.reader(predicted.open()))
    streamed = subprocess.run(["node", str(node_host / "stream.js"), sb.bundle, sb.train_file, "--chunk", "11"],
                              capture_output=True, text=True, timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    got = list(csv.reader(streamed.stdout.splitlines()))
    assert got[0] == expected[0][1:] == ["recording", "sample", "label_0", "label_1", "probability_0", "probability_1"]
    assert [r[:4] for r in got[1:]] == [r[1:5] for r in expected[1:]]
    np.testing.assert_allclose(np.array([r[4:] for r in got[1:]], dtype=np.float32),
                               np.array([r[5:] for r in expected[1:]], dtype=np.float32), rtol=0, atol=0)


def test_the_browser_live_view_colours_the_signal_by_each_samples_label(browser_kit, step_bundles, tmp_path):
    """serve.py --play of a per-step bundle: every sample of the recording answered once, coloured by its label
    (multiclass: every sample), the labels and probabilities eager's stitched by a plain loop."""
    from tests.conftest import eager_steps

    sb = step_bundles["multiclass"]
    recording = sb.recordings[0][:, :100]
    result, streamed, written = _play(browser_kit, sb.bundle, recording, "ch0,ch1", "%.9g", tmp_path)
    expected = eager_steps(sb.run_dir, written)
    assert result.stderr == "played: 100 samples labelled\n"
    assert streamed["sample"] == expected["sample"].tolist() == list(range(100))
    assert streamed["label"] == expected["label"].tolist() and streamed["coloured"] == 100
    np.testing.assert_allclose(np.array(streamed["probabilities"]), expected["probabilities"], atol=ATOL, rtol=RTOL)
