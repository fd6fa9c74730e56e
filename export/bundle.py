"""Turn a training run into a verified, self-describing artifact bundle (written atomically)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.exporters import (DEFAULT_OPSET, OPSETS, ExportError, aoti_target, export_aoti, export_onnx, export_pt2,
                              export_torchscript, quiet, torch_export)
from export.graphs import as_tuple, loss_candidates, model_graph, torchscript_loss
from export.layout import conv2d_layout
from export.quantize import QUANTIZE_CHOICES, Int8Inputs, int8_inputs, quantize_bundle
from export.verify import BATCH_SIZES, DEFAULT_ATOL, DEFAULT_RTOL, Case, VerificationError, verify_graph
from pipeline import __version__
from pipeline.base_rate import OUTPUT_BASE
from pipeline.checkpoint import BEST, load_checkpoint
from pipeline.config import ModelConfig
from pipeline.errors import PipelineError
from pipeline.files import current_umask, json_object_with, remove_stale_temps, temp_prefix
from pipeline.losses import build_loss
from pipeline.models import build_model
from runtime.bundle import file_sha256 as sha256
from runtime.compare import summary
from runtime.golden import golden_array
from runtime.inputs import plural
from runtime.manifest import (FORMAT_VERSION, GOLDEN_FILE, GRAPH_FILES, GRAPH_FORMATS, LOSS_INPUTS, LOSS_OUTPUTS,
                              GOLDEN_INT8, MANIFEST_FILE, MODEL_INPUT, MODEL_INT8, README_FILE, REQUIRED_KEYS,
                              SCHEMA_FILE, VERIFICATION_FILE,
                              AotiTarget, DimRange, FileEntry, InputSpec, Int8, LengthSpec, LossEntry, Manifest,
                              Normalization, OutputBase, Source, TensorSpec, TorchExport, Verification, schema_text)
from runtime.tasks import TASKS

FORMATS = (*GRAPH_FORMATS, "all")  # --format takes a comma-separated list of these
ALL = ("onnx", "torchscript")  # what --format all means (the default)
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "torch.export (.pt2)",
                "aoti": "AOTInductor (.aoti.pt2)"}
DEVICES = ("cpu", "cuda")
GOLDEN_BATCH = 2  # one of BATCH_SIZES: more than one sample, small JSON
# The loss grid's edges: scores a confidently trained classifier emits (logits of +-20..100), log-rates
# of +-20 (exp(20) ~ 5e8 counts), counts and regression targets far from the usual range.
EDGE_BATCH = 16
CONFIDENT_SCORE = 100.0
CONFIDENT_LOG_RATE = 20.0
COUNT_LIMIT = 1e4
REGRESSION_LIMIT = 1e4
# The model grid's edge: series at this many standard deviations, so the graph runs at large activations.
LOUD_SERIES = 10.0
README = """pipeline model bundle ({task})

Files
  manifest.json      what this bundle is: task, classes, input spec, outputs, loss and its parameters,
                     versions, and the sha256 of every file (check them before use)
{files}  golden.json        a few inputs with the outputs eager PyTorch gave; run them and compare
  verification.json  how the graphs compared with eager PyTorch at export (every shape and engine)
  manifest.schema.json  the JSON Schema that manifest.json follows (every host checks the manifest with it)

Model graph: input "x", float32 (batch, {channels}, {length}), raw series; the normalisation
is inside the graph. Outputs: {outputs}.
Loss graph: inputs "prediction" (the model's first output, float32) and "target" ({target});
outputs "loss" (scalar, the training reduction) and "per_sample_loss" (batch,). Loss: {loss}.
"""


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how strictly to check it."""

    fmt: str = "all"  # one of FORMATS or a comma-separated list of them
    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    device: str = "cpu"  # what the AOTInductor packages are compiled for
    quantize: str | None = None  # "int8": also model.int8.onnx (export/quantize.py)
    calibration_data: str | None = None  # series to calibrate the int8 graph on [default: RUN_DIR/calibration.npy]
    max_metric_drop: float | None = None  # None: quantize.default_max_drop of the task

    def __post_init__(self):
        for name in self.fmt.split(","):
            if name.strip() not in FORMATS:
                raise PipelineError(f"--format '{self.fmt}': '{name.strip()}' is not a format; choose from "
                                    f"{', '.join(FORMATS)}, or several separated by commas (e.g. onnx,aoti)")
        if self.device not in DEVICES:
            raise PipelineError(f"--device '{self.device}' is not valid; choose one of {', '.join(DEVICES)}")
        if self.device != "cpu" and "aoti" not in self.formats:
            raise PipelineError(f"--device {self.device} applies to AOTInductor packages only; add aoti to --format")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PipelineError("--device cuda was asked for but CUDA is not available here; use --device cpu")
        if self.opset not in OPSETS:
            raise PipelineError(f"--opset {self.opset} is not supported; use {OPSETS[0]}..{OPSETS[-1]} "
                                f"(default {DEFAULT_OPSET})")
        if self.atol < 0 or self.rtol < 0:
            raise PipelineError("--atol and --rtol must be >= 0")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise PipelineError(f"--quantize '{self.quantize}' is not valid; choose {', '.join(QUANTIZE_CHOICES)}")
        if self.quantize and "onnx" not in self.formats:
            raise PipelineError(f"--quantize {self.quantize} quantises the ONNX model graph; add onnx to --format")
        for flag, value in (("--calibration-data", self.calibration_data), ("--max-metric-drop", self.max_metric_drop)):
            if value is not None and self.quantize is None:
                raise PipelineError(f"{flag} applies to the int8 graph only; add --quantize int8")
        if self.max_metric_drop is not None and not self.max_metric_drop >= 0:
            raise PipelineError(f"--max-metric-drop must be >= 0; got {self.max_metric_drop:g}")


    @property
    def formats(self) -> tuple[str, ...]:
        """The graph formats to write, in GRAPH_FORMATS order ('all' is onnx and torchscript)."""
        names = {n.strip() for n in self.fmt.split(",")}
        names |= set(ALL) if "all" in names else set()
        return tuple(f for f in GRAPH_FORMATS if f in names)


def rebuild(run_dir: Path):
    state = load_checkpoint(Path(run_dir) / BEST)
    cfg = ModelConfig.from_dict(state["model_config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    loss = build_loss(state["loss"]["name"], state["loss"]["params"]).eval()
    return state, cfg, model, loss


def _targets(task: str, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Random targets of the task's kind: class indices, 0/1, counts or values."""
    spec = TASKS[task]
    if spec.scores == "softmax":
        return torch.randint(0, k, (n,), generator=g)
    if spec.values == "0/1":
        return torch.randint(0, 2, (n, k), generator=g).float()
    if spec.values == "count":
        return torch.poisson(torch.full((n, k), 3.0), generator=g)
    return torch.randn(n, k, generator=g)


def _series(model, n: int, c: int, length: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Raw-looking series: the training statistics' scale, so the baked-in normalisation is exercised."""
    mean, std = model.normalize.mean, model.normalize.std
    return (torch.randn(n, c, length, generator=g) * std * scale + mean).float()


def model_cases(model, cfg: ModelConfig) -> list[Case]:
    g = torch.Generator().manual_seed(1)
    # the training length first, so the golden data (first batch-2 case) uses it
    lengths = [cfg.length] if cfg.fixed_length else [cfg.length, max(cfg.length // 2, 1), 2 * cfg.length]
    cases = [Case(f"batch={n} length={L}", (_series(model, n, cfg.in_channels, L, g),))
             for L in lengths for n in BATCH_SIZES]
    loud = _series(model, 7, cfg.in_channels, cfg.length, g, scale=LOUD_SERIES)
    return cases + [Case(f"batch=7 length={cfg.length} x{LOUD_SERIES:g} std", (loud,))]


def loss_cases(task: str, cfg: ModelConfig) -> list[Case]:
    """Moderate scores at every batch size, then the scores trained models really emit (see edge_cases)."""
    g = torch.Generator().manual_seed(2)
    return [Case(f"batch={n}", (torch.randn(n, cfg.n_outputs, generator=g) * 2,
                                _targets(task, n, cfg.n_outputs, g))) for n in BATCH_SIZES] + \
        edge_cases(task, cfg.n_outputs, g)


def _magnitudes(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """Magnitudes in [low, high] with both ends present exactly."""
    m = low + (high - low) * torch.rand(shape, generator=g)
    m.view(-1)[0], m.view(-1)[-1] = low, high
    return m


def edge_cases(task: str, k: int, g: torch.Generator, n: int = EDGE_BATCH) -> list[Case]:
    """Confident scores (|score| up to CONFIDENT_SCORE, both signs) with all-correct, all-wrong and random
    targets, and targets at the limits of their range: where unstable loss graphs return inf or nan."""
    s, spec = CONFIDENT_SCORE, TASKS[task]
    uniform = lambda limit: (torch.rand(n, k, generator=g) * 2 - 1) * limit  # noqa: E731
    if spec.scores == "sigmoid":
        t = torch.randint(0, 2, (n, k), generator=g).float()
        t[0], t[-1] = 0.0, 1.0  # both limits in every case
        sign, m = 2 * t - 1, _magnitudes((n, k), 15.0, s, g)
        pairs = {"correct": (sign * m, t), "wrong": (-sign * m, t), "random": (uniform(s), t)}
    elif spec.scores == "softmax":
        t = torch.randint(0, k, (n,), generator=g)
        t[0], t[-1] = 0, k - 1
        m = _magnitudes((n, 1), 15.0, s, g)
        hot = torch.nn.functional.one_hot(t, k).bool()
        correct = torch.where(hot, m, -m)
        wrong = torch.where(hot, -m, torch.where(torch.roll(hot, 1, dims=1), m, -m))
        pairs = {"correct": (correct, t), "wrong": (wrong, t), "random": (uniform(s), t)}
    elif spec.scores == "exp":
        t = torch.poisson(torch.full((n, k), 3.0), generator=g)
        t[0], t[-1] = 0.0, COUNT_LIMIT  # none, and far more than usual
        r = CONFIDENT_LOG_RATE
        wrong = torch.where(t > 3, torch.full_like(t, -r), torch.full_like(t, r))  # tiny rate for many, huge for few
        pairs = {"correct": (torch.log(t + 0.5), t), "wrong": (wrong, t), "random": (uniform(r), t)}
    else:
        t = (torch.rand(n, k, generator=g) * 2 - 1) * REGRESSION_LIMIT
        t[0], t[-1] = -REGRESSION_LIMIT, REGRESSION_LIMIT
        pairs = {"correct": (t + torch.randn(n, k, generator=g) * 1e-3, t), "wrong": (-t, t),
                 "random": (uniform(REGRESSION_LIMIT), t)}
    return [Case(f"batch={n} edge {what}", (scores.float().contiguous(), targets)) for what, (scores, targets)
            in pairs.items()]


ENGINES = {"onnx": "onnxruntime", "torchscript": "torchscript", "pt2": "torch.export", "aoti": "aotinductor"}


def engines(paths: dict[str, Path], input_names: tuple[str, ...], device: str = "cpu") -> dict:
    """{engine name: run(inputs) -> numpy outputs} for each graph file in `paths` (keyed by format)."""
    engines = {}
    if "onnx" in paths:
        session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        engines["onnxruntime"] = lambda inputs: session.run(
            None, {n: t.numpy() for n, t in zip(input_names, inputs)})
    for fmt in ("torchscript", "pt2", "aoti"):
        if fmt in paths:
            engines[ENGINES[fmt]] = _torch_engine(fmt, paths[fmt], device if fmt == "aoti" else "cpu")
    return engines


def _torch_engine(fmt: str, path: Path, device: str):
    """Load a torch graph file: TorchScript, a torch.export program, or an AOTInductor package."""
    with quiet():  # torch.jit.load's deprecation notice is ours to handle, not the user's
        if fmt == "torchscript":
            module = torch.jit.load(str(path)).eval()
        elif fmt == "pt2":
            module = torch.export.load(str(path)).module()
        else:
            from torch._inductor import aoti_load_package

            module = aoti_load_package(str(path))

    def run(inputs):
        with torch.inference_mode(), full_float32(device):
            outputs = as_tuple(module(*[t.to(device) for t in inputs]))
        return [t.cpu().numpy() for t in outputs]

    return run


@contextlib.contextmanager
def full_float32(device: str):
    """CUDA convolutions and matmuls in full float32 (no TF32) while a CUDA package is checked against eager
    on the CPU; the C++ kit runs CUDA packages the same way."""
    if device != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def tensor_json(t: torch.Tensor) -> dict:
    """A tensor as plain JSON (shape, dtype, flat data): the golden-data layout every host reads."""
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "data": t.reshape(-1).tolist()}


def _golden_onnx(path: Path, golden_model: dict, output_names) -> dict:
    """An ONNX graph's own outputs on the golden model input (the int8 graph: golden.json model_int8)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: golden_array(v) for n, v in golden_model["inputs"].items()}
    outputs = session.run(None, feeds)
    return {"inputs": golden_model["inputs"],
            "outputs": {n: tensor_json(torch.from_numpy(o)) for n, o in zip(output_names, outputs)}}


def _golden(graph, cases: list[Case], input_names, output_names) -> dict:
    case = next(c for c in cases if c.inputs[0].shape[0] == GOLDEN_BATCH)
    with torch.inference_mode():
        outputs = as_tuple(graph(*case.inputs))
    return {"inputs": {n: tensor_json(t) for n, t in zip(input_names, case.inputs)},
            "outputs": {n: tensor_json(t) for n, t in zip(output_names, outputs)}}


def export_run(run_dir: Path, config: ExportConfig, out: Path | None = None, force: bool = False,
               log=print) -> Path:
    """Export, verify, and move the bundle into place; on any failure nothing is left behind."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "bundle"
    if recover(out):
        log(f"restored {out} (an earlier export was stopped while replacing it)")
    check_bundle_target(out, run_dir, force)
    state, cfg, model, loss = rebuild(run_dir)
    task = state["encoding"]["task"]
    int8 = int8_inputs(run_dir, cfg, config.calibration_data) if config.quantize == "int8" else None
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a bundle is read like any folder the user makes
    try:
        source = {"run_dir": str(run_dir.resolve()), "checkpoint": BEST,
                  "checkpoint_sha256": sha256(run_dir / BEST)}  # so `pipeline verify` can rebuild eager
        manifest, rows = _write_bundle(tmp, state, cfg, model, loss, task, config, source, log, int8)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"verified {summary(rows)} (atol {config.atol:g} + rtol {config.rtol:g} x |eager|)")
    return out


def is_bundle(folder: Path) -> bool:
    """A folder `pipeline export` wrote: its manifest.json has the bundle keys."""
    return json_object_with(Path(folder) / MANIFEST_FILE, REQUIRED_KEYS)


def check_bundle_target(out: Path, run_dir: Path, force: bool) -> None:
    """--out may be a new folder, an empty one, or (with --force) an earlier bundle; never anything else."""
    resolved, run = Path(out).resolve(), Path(run_dir).resolve()
    if resolved == run or resolved in run.parents:
        what = "is the run folder" if resolved == run else f"holds the run folder {run_dir}"
        raise PipelineError(f"--out {out} {what}; a bundle needs a folder of its own (default RUN_DIR/bundle), "
                            "and nothing else is ever replaced")
    if not out.exists():
        return
    if not out.is_dir():
        raise PipelineError(f"--out {out} is a file; pass a folder for the bundle")
    if not any(out.iterdir()):
        return
    if not is_bundle(out):
        raise PipelineError(f"--out {out} is not a bundle (no bundle manifest.json in it); export replaces only a "
                            "folder written by pipeline export, so choose another --out")
    if not force:
        raise PipelineError(f"{out} already exists; pass --force to replace it or choose another --out")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` with the finished folder `tmp`. The old bundle is moved aside, not deleted, until the
    new one is in place; a kill between the two renames leaves it at .NAME.old, restored by `recover`."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def recover(out: Path) -> bool:
    """Put back a bundle left at .NAME.old by an export killed between its two renames."""
    old = Path(out).with_name(f".{Path(out).name}.old")
    if old.is_dir() and not Path(out).exists():
        old.rename(out)
        return True
    return False


def _write_bundle(tmp: Path, state: dict, cfg: ModelConfig, model, loss, task: str, config: ExportConfig,
                  source: dict, log=print, int8_data: Int8Inputs | None = None) -> tuple[Manifest, list[dict]]:
    """Export and verify every graph into `tmp` and write the bundle's files; (manifest, verification rows)."""
    spec = TASKS[task]
    graph = model_graph(model, task)
    outputs = spec.outputs
    model_grid, loss_grid = model_cases(model, cfg), loss_cases(task, cfg)
    x_axes = {0: "batch"} if cfg.fixed_length else {0: "batch", 2: "length"}
    meta = _metadata(state, cfg, task, config)
    want = config.formats
    files: dict[str, dict[str, Path]] = {"model": {}, "loss": {}}
    methods, exported = {}, None
    example_x = model_grid[len(BATCH_SIZES) - 1].inputs  # batch 64: examples >= 2 so no axis is specialised
    example_loss = loss_grid[len(BATCH_SIZES) - 1].inputs
    loss_what = f"loss '{state['loss']['name']}'"
    model_what = f"{cfg.name} model" if cfg.ensemble == 1 else \
        f"{cfg.name} ensemble ({cfg.ensemble} members averaged in one graph)"
    log(f"exporting the {model_what} and the {state['loss']['name']} loss of {task} to "
        f"{' and '.join(FORMAT_NAMES[f] for f in want)}; each graph is then checked against eager PyTorch on "
        f"{len(model_grid)} model and {len(loss_grid)} loss input sets")
    rows, layout = [], None
    path = lambda graph_name, fmt: tmp / GRAPH_FILES[graph_name, fmt]  # noqa: E731
    if "onnx" in want:
        verify_model = lambda paths: verify_graph(  # noqa: E731
            "model", graph, engines(paths, (MODEL_INPUT,)), model_grid, outputs, config.atol, config.rtol,
            spec.decision)
        rows, layout = _export_model_onnx(graph, model, task, example_x, path("model", "onnx"), outputs,
                                          {MODEL_INPUT: x_axes}, config.opset, meta, verify_model)
        files["loss"]["onnx"] = export_loss_onnx(loss, example_loss, path("loss", "onnx"), config.opset, meta,
                                                 loss_what)
        files["model"]["onnx"] = path("model", "onnx")
    if "torchscript" in want:
        files["model"]["torchscript"], methods["model"] = export_torchscript(graph, example_x,
                                                                             path("model", "torchscript"), "model")
        files["loss"]["torchscript"], methods["loss"] = export_torchscript(
            torchscript_loss(loss), example_loss, path("loss", "torchscript"), loss_what)
    if "pt2" in want or "aoti" in want:
        exported = _export_programs(graph, loss, example_x, example_loss, x_axes, want, path, config.device,
                                    loss_what, files, log)
    others = {fmt: p for fmt, p in files["model"].items() if fmt != "onnx"}
    rows += verify_graph("model", graph, engines(others, (MODEL_INPUT,), config.device), model_grid, outputs,
                         config.atol, config.rtol, spec.decision)
    rows += verify_graph("loss", loss, engines(files["loss"], LOSS_INPUTS, config.device), loss_grid, LOSS_OUTPUTS,
                         config.atol, config.rtol)
    failures = [r for r in rows if r["problem"]]
    if failures:
        raise VerificationError(failures, config.atol, config.rtol)
    verification = Verification(atol=config.atol, rtol=config.rtol, passed=True, checks=len(rows),
                                max_abs=max((r["max_abs"] or 0.0) for r in rows),
                                max_rel=max((r["max_rel"] or 0.0) for r in rows))
    (tmp / VERIFICATION_FILE).write_text(json.dumps({**dataclasses.asdict(verification), "rows": rows}, indent=1)
                                         + "\n")
    golden = {"model": _golden(graph, model_grid, (MODEL_INPUT,), outputs),
              "loss": _golden(loss, loss_grid, LOSS_INPUTS, LOSS_OUTPUTS),
              "atol": config.atol, "rtol": config.rtol}
    int8 = None
    if int8_data is not None:
        int8 = quantize_bundle(tmp, int8_data, task, config.max_metric_drop, log)
        golden[GOLDEN_INT8] = _golden_onnx(tmp / MODEL_INT8, golden["model"], outputs)
    (tmp / GOLDEN_FILE).write_text(json.dumps(golden) + "\n")
    (tmp / README_FILE).write_text(_readme(state, cfg, task, want))
    (tmp / SCHEMA_FILE).write_text(schema_text())
    manifest = _manifest(tmp, state, cfg, task, config, methods, verification, source, layout, exported, int8)
    (tmp / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest, rows


def _export_programs(graph, loss, example_x: tuple, example_loss: tuple, x_axes: dict, want: tuple[str, ...],
                     path, device: str, loss_what: str, files: dict, log=print) -> TorchExport:
    """model.pt2/loss.pt2 and/or the AOTInductor packages of both graphs (see export_program_files)."""
    dims = {}
    for name, candidates, example, axes, what in (
            ("model", [graph], example_x, {MODEL_INPUT: x_axes}, "model"),
            ("loss", loss_candidates(loss), example_loss, {n: {0: "batch"} for n in LOSS_INPUTS}, loss_what)):
        paths = {fmt: path(name, fmt) for fmt in ("pt2", "aoti") if fmt in want}
        written, dims[name] = export_program_files(candidates, example, axes, paths, device, what, log)
        files[name].update(written)
    return TorchExport(dims={g: {d: DimRange(lo, hi) for d, (lo, hi) in r.items()} for g, r in dims.items()},
                       aoti=AotiTarget(**aoti_target(device)) if "aoti" in want else None)


def export_program_files(candidates: list, example: tuple, axes: dict[str, dict[int, str]], paths: dict[str, Path],
                         device: str = "cpu", what: str = "graph", log=print) -> tuple[dict[str, Path], dict]:
    """One graph from one torch.export: its .pt2 program (paths["pt2"]) and/or its AOTInductor package
    (paths["aoti"], compiled for `device`; the program moves there first). ({format: path}, dim ranges)."""
    names = tuple(axes)
    program, dims = _first_export(candidates, example, names, axes, what)
    written = {}
    if "pt2" in paths:
        written["pt2"] = export_pt2(program, paths["pt2"])
    if "aoti" in paths:
        if device != "cpu":
            program, _ = _first_export([copy.deepcopy(c).to(device) for c in candidates],
                                       tuple(t.to(device) for t in example), names, axes, what)
        log(f"compiling the {what} with AOTInductor for {device}")
        written["aoti"] = export_aoti(program, paths["aoti"], what)
    return written, dims


def _first_export(candidates: list, example: tuple, names: tuple[str, ...], axes: dict, what: str):
    """torch.export of the first candidate module that captures (see loss_candidates)."""
    return _first_that_exports(candidates, lambda c: torch_export(c, example, names, axes, what))


def _first_that_exports(candidates: list, attempt):
    """attempt(candidate) for each candidate in turn: the first result, else the first candidate's ExportError
    (the plain module's error says most about the user's code)."""
    first_error = None
    for candidate in candidates:
        try:
            return attempt(candidate)
        except ExportError as exc:
            first_error = first_error or exc
    raise first_error


def export_loss_onnx(loss, example: tuple, path: Path, opset: int, meta: dict, what: str) -> Path:
    """The loss graph with a dynamic batch: the first candidate (see loss_candidates) that exports."""
    axes = {"prediction": {0: "batch"}, "target": {0: "batch"}}
    return _first_that_exports(loss_candidates(loss), lambda c: export_onnx(
        c, example, path, LOSS_INPUTS, LOSS_OUTPUTS, axes, opset, meta, what))


def _export_model_onnx(graph, model, task: str, example_x: tuple, path: Path, outputs: tuple[str, ...],
                       axes: dict, opset: int, meta: dict, verify_model) -> tuple[list[dict], str]:
    """The model graph in the 2D layout onnxruntime runs fastest, or the plain 1D graph when that
    layout does not exist for the model or does not verify; returns the verification rows and the layout."""
    fast = conv2d_layout(model)
    if fast is not None:
        export_onnx(model_graph(fast, task), example_x, path, (MODEL_INPUT,), outputs, axes, opset, meta, "model")
        rows = verify_model({"onnx": path})
        if not any(r["problem"] for r in rows):
            return rows, "conv2d"
    export_onnx(graph, example_x, path, (MODEL_INPUT,), outputs, axes, opset, meta, "model")
    return verify_model({"onnx": path}), "conv1d"


def _loss_description(state: dict) -> dict:
    return {"name": state["loss"]["name"], "params": state["loss"]["params"]}


def _metadata(state: dict, cfg: ModelConfig, task: str, config: ExportConfig) -> dict[str, str]:
    return {
        "pipeline.format_version": str(FORMAT_VERSION), "pipeline.task": task,
        "pipeline.classes": json.dumps(state["encoding"]["classes"]),
        "pipeline.normalize": cfg.normalize, "pipeline.loss": json.dumps(_loss_description(state)),
        "pipeline.opset": str(config.opset), "pipeline.version": __version__, "torch.version": torch.__version__,
        "onnx.version": onnx.__version__,
    }


def _target_spec(task: str, k: int) -> TensorSpec:
    spec = TASKS[task]
    return TensorSpec(LOSS_INPUTS[1], spec.target_dtype, spec.target_shape(k), spec.target_meaning)


def _manifest(tmp: Path, state: dict, cfg: ModelConfig, task: str, config: ExportConfig, methods: dict,
              verification: Verification, source: dict, layout: str | None,
              exported: TorchExport | None = None, int8: Int8 | None = None) -> Manifest:
    files = {p.name: FileEntry(sha256(p), p.stat().st_size) for p in sorted(tmp.iterdir())}
    length = LengthSpec(fixed=cfg.length) if cfg.fixed_length else LengthSpec(min=1, max=None, trained=cfg.length)
    return Manifest(
        format_version=FORMAT_VERSION, task=task, classes=state["encoding"]["classes"],
        input=InputSpec(MODEL_INPUT, "float32", ["batch", "channels", "length"], cfg.in_channels, length),
        outputs=list(TASKS[task].outputs),
        normalization=Normalization(cfg.normalize, True, state["model"]["normalize.mean"].reshape(-1).tolist(),
                                    state["model"]["normalize.std"].reshape(-1).tolist()),
        model=cfg.to_dict(),
        loss=LossEntry(state["loss"]["name"], state["loss"]["params"], [
            TensorSpec(LOSS_INPUTS[0], "float32", ["batch", cfg.n_outputs]), _target_spec(task, cfg.n_outputs)],
            list(LOSS_OUTPUTS)),
        opset=config.opset, torchscript=methods,
        versions={"pipeline": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": ort.__version__, "numpy": np.__version__},
        files=files, verification=verification, source=Source(**source),
        # a .csv training file's label columns (header names, or 0-based indices) and width: predict leaves
        # them out of a .csv laid out the same way, as train and evaluate do
        csv_labels=state.get("csv_labels") or None, onnx_layout=layout, torch_export=exported, int8=int8,
        output_base=OutputBase(inside_graph=True, **state[OUTPUT_BASE]) if OUTPUT_BASE in state else None)


def _readme(state: dict, cfg: ModelConfig, task: str, want: tuple[str, ...]) -> str:
    what = {("model", "onnx"): "the model graph (ONNX, onnxruntime)", ("loss", "onnx"): "the loss graph (ONNX)",
            ("model", "torchscript"): "the model graph (TorchScript; torch::jit::load in C++)",
            ("loss", "torchscript"): "the loss graph (TorchScript)",
            ("model", "pt2"): "the model graph (torch.export; torch.export.load in Python)",
            ("loss", "pt2"): "the loss graph (torch.export)",
            ("model", "aoti"): "the model compiled by AOTInductor for this machine (C++: AOTIModelPackageLoader)",
            ("loss", "aoti"): "the loss compiled by AOTInductor (manifest.json torch_export.aoti: its target)"}
    lines = "".join(f"  {GRAPH_FILES[key]:<18} {text}\n" for key, text in what.items() if key[1] in want)
    length = f"length {cfg.length}" if cfg.fixed_length else "any length"
    target = _target_spec(task, cfg.n_outputs)
    return README.format(task=task, files=lines, channels=plural(cfg.in_channels, "channel"), length=length,
                         outputs=", ".join(TASKS[task].outputs), target=f"{target.dtype}, {target.meaning}",
                         loss=json.dumps(_loss_description(state)))
