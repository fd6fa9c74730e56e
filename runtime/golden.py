"""Re-run the golden inputs stored in a bundle and compare with the outputs eager PyTorch gave at export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.bundle import Bundle
from runtime.compare import Row, compare
from runtime.errors import BundleError
from runtime.manifest import GOLDEN_FILE, GOLDEN_INT8, GOLDEN_INT8_PTE
from runtime.typed_json import SAFE_INTEGER  # integers every host reads exactly


def golden_array(entry: dict) -> np.ndarray:
    """One golden.json tensor (shape, dtype, flat data) as an array."""
    return np.asarray(entry["data"], dtype=entry["dtype"]).reshape(entry["shape"])


def read_golden(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / GOLDEN_FILE
    if not path.exists():
        raise BundleError(f"{path}: not found; re-export the bundle (pipeline export writes golden data)")
    try:
        golden = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(golden, dict):
        raise BundleError(f"{path}: not in the golden.json layout (not an object); re-export the bundle")
    return golden


GOLDEN_DTYPES = ("float32", "int64")


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= SAFE_INTEGER


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (not isinstance(v, int) or abs(v) <= 1e308)


def _tensor_problem(entry, where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"'{where}' must be an object with shape, dtype and data"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_integer(d) and d >= 0 for d in shape):
        return f"'{where}.shape' must be a list of integers >= 0"
    if entry.get("dtype") not in GOLDEN_DTYPES:
        return f"'{where}.dtype' must be \"float32\" or \"int64\""
    size = 1
    for d in shape:
        size *= d
    data, kind = entry.get("data"), ("integers" if entry["dtype"] == "int64" else "numbers")
    if (not isinstance(data, list) or len(data) != size
            or not all((_integer if kind == "integers" else _number)(v) for v in data)):
        return f"'{where}.data' must be a list of {size} {kind}"
    return None


def layout_problem(case, names: dict[str, dict[str, list[str]]], required: tuple[str, ...]) -> str | None:
    """The first way a golden.json case breaks the layout every host reads, in the words every kit uses, or None.
    names: per graph ('model', 'loss', 'model_int8'), the input and output names the bundle's graphs have;
    required: the graphs the case must hold (golden.json: model and loss)."""
    if not isinstance(case, dict):
        return "the case is not an object"
    for key in ("atol", "rtol"):
        if not _number(case.get(key)) or case[key] < 0:
            return f"'{key}' must be a number >= 0"
    for graph, parts in names.items():
        if graph not in case:
            if graph in required:
                return f"'{graph}' is missing"
            continue
        entry = case[graph]
        if not isinstance(entry, dict):
            return f"'{graph}' must be an object with inputs and outputs"
        for part in ("inputs", "outputs"):
            tensors, expected = entry.get(part), parts[part]
            if not isinstance(tensors, dict) or sorted(tensors) != sorted(expected):
                shown = (n if len(n) <= 60 else n[:60] + "..." for n in expected)
                return f"'{graph}.{part}' must hold {', '.join(shown)}"
            for name in expected:
                problem = _tensor_problem(tensors[name], f"{graph}.{part}.{name}")
                if problem:
                    return problem
    return None


def golden_names(manifest) -> dict[str, dict[str, list[str]]]:
    """The input and output names of each golden.json graph entry, from the manifest."""
    model = {"inputs": [manifest.input.name], "outputs": list(manifest.outputs)}
    return {"model": model, "loss": {"inputs": [t.name for t in manifest.loss.inputs],
                                     "outputs": list(manifest.loss.outputs)}, GOLDEN_INT8: model,
            GOLDEN_INT8_PTE: model}


def check_layout(golden: dict, manifest, path: Path) -> dict:
    """golden.json as every host reads it, or a BundleError naming the first bad field."""
    problem = layout_problem(golden, golden_names(manifest), ("model", "loss"))
    if problem:
        raise BundleError(f"{path}: not in the golden.json layout ({problem}); re-export the bundle")
    return golden


def layout_error(path: Path, exc: Exception) -> BundleError:
    """A golden.json (or cases file) whose fields are missing or of the wrong type, in one line naming it."""
    why = " ".join(f"{type(exc).__name__}: {exc}".split())
    why = why if len(why) <= 200 else why[:200] + "..."
    return BundleError(f"{path}: not in the golden.json layout ({why}); re-export the bundle")


def model_example(bundle_dir: Path) -> np.ndarray:
    """The golden input series of the model graph: an example request for hosts that ask for one."""
    return golden_array(next(iter(read_golden(bundle_dir)["model"]["inputs"].values())))


def golden_rows(golden: dict, graph: str, engine: str, run: Callable[[dict[str, np.ndarray]], list],
                atol: float | None = None, rtol: float | None = None) -> list[Row]:
    """One row per output of `graph` ('model' or 'loss'): `run(named inputs) -> outputs` against the golden ones."""
    atol = float(golden["atol"] if atol is None else atol)  # a JSON integer of any size is a tolerance too
    rtol = float(golden["rtol"] if rtol is None else rtol)
    inputs = {name: golden_array(v) for name, v in golden[graph]["inputs"].items()}
    first = next(iter(inputs.values()))
    case = "golden " + ("x".join(map(str, first.shape)) if graph == "model" else f"batch={len(first)}")
    actual = run(inputs)
    return [Row.of(graph, engine, name, case, compare(golden_array(expected), np.asarray(got), atol, rtol))
            for (name, expected), got in zip(golden[graph]["outputs"].items(), actual)]


def check_golden(bundle: Bundle, atol: float | None = None, rtol: float | None = None) -> list[Row]:
    """One row per graph output: max abs/rel difference against the golden outputs, and any problem.
    An int8 model graph is held to its own golden outputs, at the tolerance its manifest entry gives."""
    golden = check_layout(read_golden(bundle.path), bundle.manifest, bundle.path / GOLDEN_FILE)
    rows = []
    for graph, session in {"model": bundle.model_session, "loss": bundle.loss_session}.items():
        if session is None:
            continue
        run = lambda feeds, s=session: s.run(None, feeds)  # noqa: E731
        try:
            if graph == "model" and bundle.precision == "int8":
                rows += int8_rows(golden, bundle.manifest.int8, run)
            else:
                rows += golden_rows(golden, graph, "onnxruntime", run, atol, rtol)
        except BundleError:
            raise
        except Exception as exc:  # a field missing or of the wrong type, or inputs the graph refuses
            raise layout_error(bundle.path / GOLDEN_FILE, exc) from None
    return rows


def int8_rows(golden: dict, entry, run: Callable[[dict[str, np.ndarray]], list], key: str = GOLDEN_INT8,
              engine: str = "onnxruntime") -> list[Row]:
    """The int8 graph (run) against its own golden outputs (golden.json `key`); rows name the graph 'model (int8)'."""
    if key not in golden:
        raise BundleError(f"{GOLDEN_FILE}: has no {key} outputs for {entry.file}; re-export the bundle")
    rows = golden_rows({**golden, "model": golden[key]}, "model", engine, run, entry.golden_atol, entry.golden_rtol)
    return [r.renamed("int8") for r in rows]
