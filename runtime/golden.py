"""Re-run the golden inputs stored in a bundle and compare with the outputs eager PyTorch gave at export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.bundle import Bundle
from runtime.compare import Row, compare
from runtime.errors import BundleError
from runtime.manifest import GOLDEN_FILE, GOLDEN_INT8, MODEL_INT8


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
    atol = golden["atol"] if atol is None else atol
    rtol = golden["rtol"] if rtol is None else rtol
    inputs = {name: golden_array(v) for name, v in golden[graph]["inputs"].items()}
    first = next(iter(inputs.values()))
    case = "golden " + ("x".join(map(str, first.shape)) if graph == "model" else f"batch={len(first)}")
    actual = run(inputs)
    return [Row.of(graph, engine, name, case, compare(golden_array(expected), np.asarray(got), atol, rtol))
            for (name, expected), got in zip(golden[graph]["outputs"].items(), actual)]


def check_golden(bundle: Bundle, atol: float | None = None, rtol: float | None = None) -> list[Row]:
    """One row per graph output: max abs/rel difference against the golden outputs, and any problem.
    An int8 model graph is held to its own golden outputs, at the tolerance its manifest entry gives."""
    golden = read_golden(bundle.path)
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


def int8_rows(golden: dict, entry, run: Callable[[dict[str, np.ndarray]], list]) -> list[Row]:
    """The int8 graph (run) against its own golden outputs; rows name the graph 'model (int8)'."""
    if GOLDEN_INT8 not in golden:
        raise BundleError(f"{GOLDEN_FILE}: has no {GOLDEN_INT8} outputs for {MODEL_INT8}; re-export the bundle")
    rows = golden_rows({**golden, "model": golden[GOLDEN_INT8]}, "model", "onnxruntime", run, entry.golden_atol,
                       entry.golden_rtol)
    return [r.renamed("int8") for r in rows]
