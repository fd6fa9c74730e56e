"""What a bundle is, defined once: the format version, the file names and every manifest key (numpy-free).

`export/` writes a `Manifest` with `to_json`; `runtime/` and `pipeline verify` read it with `from_json`,
which checks every field and names the first bad one. The JSON Schema shipped in `runtime/` and in every
bundle (`manifest.schema.json`, read by the Node, C++ and browser kits) is generated from these classes:

    python -c "import runtime.manifest as m; print(m.schema_text(), end='')" > runtime/manifest.schema.json
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runtime.errors import BundleError, check_regular
from runtime.tasks import TASK_NAMES
from runtime.typed_json import dump, load
from runtime.typed_json import schema as json_schema

FORMAT_VERSION = 1
FORMAT_VERSIONS = (1,)  # the versions this runtime reads

MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "manifest.schema.json"
GOLDEN_FILE = "golden.json"
VERIFICATION_FILE = "verification.json"
README_FILE = "README.txt"
# The graph files by (graph, format); the runtime runs the ONNX ones, libtorch the TorchScript ones and the
# AOTInductor packages, Python with torch the torch.export programs.
GRAPH_FILES = {("model", "onnx"): "model.onnx", ("loss", "onnx"): "loss.onnx",
               ("model", "torchscript"): "model.pt", ("loss", "torchscript"): "loss.pt",
               ("model", "pt2"): "model.pt2", ("loss", "pt2"): "loss.pt2",
               ("model", "aoti"): "model.aoti.pt2", ("loss", "aoti"): "loss.aoti.pt2",
               ("model", "pte"): "model.pte", ("loss", "pte"): "loss.pte"}
GRAPH_FORMATS = ("onnx", "torchscript", "pt2", "aoti", "pte")
MODEL_ONNX, LOSS_ONNX = GRAPH_FILES["model", "onnx"], GRAPH_FILES["loss", "onnx"]
MODEL_INT8 = "model.int8.onnx"  # export --quantize int8
MODEL_INT8_PTE = "model.int8.pte"  # export --format pte --quantize int8
QUANTIZATIONS = ("int8",)  # what export --quantize writes
MODEL_PRECISIONS = ("fp32", *QUANTIZATIONS, "auto")  # which model graph a host runs; auto: int8 when present
SALIENCY_OUTPUT = "saliency"  # the model graph's last output where exported with --saliency: (batch[, outputs], length)
GOLDEN_INT8 = "model_int8"  # golden.json: the int8 graph's own outputs on the golden model input
GOLDEN_INT8_PTE = "model_int8_pte"  # golden.json: model.int8.pte's own outputs on the golden model input
MODEL_INPUT = "x"
LOSS_INPUTS = ("prediction", "target")
LOSS_OUTPUTS = ("loss", "per_sample_loss")
SCHEMA_PATH = Path(__file__).with_name(SCHEMA_FILE)
# Which time step's label a window of a recording takes (train --window-label): `last` (the causal choice:
# what a stream knows when the window completes), `majority` (the most frequent; a tie goes to the label seen
# last), `center` (sample length // 2 of the window). runtime.windows applies them. `each`: no one label, the
# window's label at every time step, which a per-step model answers (runtime.segments).
WINDOW_LABELS = ("last", "majority", "center", "each")

OMIT_NONE = {"omit_none": True}  # field metadata: left out of the JSON when None (not written as null)


@dataclass(frozen=True)
class FileEntry:
    """One bundle file: its sha256 and size, checked before use."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class LengthSpec:
    """Series lengths the model takes: exactly `fixed`, or `min`..`max` (None: no limit) trained at `trained`."""

    fixed: int | None = field(default=None, metadata=OMIT_NONE)
    min: int | None = field(default=None, metadata=OMIT_NONE)
    max: int | None = field(default=None, metadata={"omit_none_when": "fixed"})  # null: no limit
    trained: int | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class InputSpec:
    """The model graph's input."""

    name: str
    dtype: Literal["float32"]
    layout: list[str]
    channels: int
    length: LengthSpec


@dataclass(frozen=True)
class Normalization:
    """The per-channel normalisation baked into the model graph."""

    mode: str
    inside_graph: bool
    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class OutputBase:
    """The output layer baked into the model graph, fitted from the training targets: raw score = network
    output * scale + shift per output. rule 'standardise' (regression: shift and scale are the targets' mean
    and std per column, so the graph answers in the targets' units), 'log-odds', 'log-frequency' or 'log-mean'
    (the base rate of labels, classes or counts). loss_scale is the mean predictor's loss on the training
    targets (regression; else 1): training divided a custom loss by it, and each target's built-in loss by that
    target's own; every loss reported and the loss graph are the loss itself, in the targets' units."""

    rule: str
    inside_graph: bool
    scale: list[float]
    shift: list[float]
    loss_scale: float


@dataclass(frozen=True)
class TensorSpec:
    """A loss graph input: name, dtype, shape ('batch' or a size per axis) and what it holds."""

    name: str
    dtype: Literal["float32", "int64"]
    shape: list[str | int]
    meaning: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class LossEntry:
    """The loss the run trained with, its parameters and the loss graph's inputs and outputs."""

    name: str
    params: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[str]


@dataclass(frozen=True)
class Verification:
    """How the graphs compared with eager PyTorch at export (rows in verification.json)."""

    atol: float
    rtol: float
    passed: bool
    checks: int
    max_abs: float
    max_rel: float


@dataclass(frozen=True)
class DimRange:
    """The sizes a named dynamic dimension of a torch.export graph accepts: min..max (null: no limit)."""

    min: int
    max: int | None


@dataclass(frozen=True)
class AotiTarget:
    """What an AOTInductor package was compiled for; it runs only on a match (it is machine code)."""

    device: Literal["cpu", "cuda"]
    compiler: str  # the C++ compiler's first --version line
    vec_isa: str  # the CPU vector instructions the kernels use (e.g. avx512, avx2, neon; "none": scalar)
    machine: str  # platform.machine(), e.g. x86_64
    torch: str  # the libtorch version that loads it


@dataclass(frozen=True)
class TorchExport:
    """The torch.export graphs (model.pt2, loss.pt2) and AOTInductor packages (*.aoti.pt2)."""

    dims: dict[str, dict[str, DimRange]]  # graph ("model", "loss") -> dim name ("batch", "length") -> sizes
    aoti: AotiTarget | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class PteInput:
    """One input of an ExecuTorch program: the largest shape it takes (its memory is planned for that shape)
    and which axes may be smaller (1..shape[axis]); every other size must be exactly shape[axis]."""

    name: str
    dtype: Literal["float32", "int64"]
    shape: list[int]
    axes: list[str]  # each axis's name (batch, channels, length, outputs)
    dynamic: list[int]


@dataclass(frozen=True)
class PteProgram:
    """model.pte or loss.pte: an ExecuTorch program with one method; hosts check every input against `inputs`
    before each call (runtime.pte.check_inputs: the ExecuTorch runtime checks only the element count)."""

    file: str
    method: str
    inputs: list[PteInput]
    delegate: Literal["xnnpack", "portable"]  # xnnpack: lowered to the XNNPACK delegate; portable: CPU kernels


@dataclass(frozen=True)
class Pte:
    """The ExecuTorch programs (export --format pte) and the release that wrote them."""

    executorch: str
    model: PteProgram
    loss: PteProgram
    # export --quantize int8 with pte: model.int8.pte (XNNPACK's int8 kernels) and what it cost in accuracy
    model_int8: PteProgram | None = field(default=None, metadata=OMIT_NONE)
    int8: Int8 | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class PteTrain:
    """train.pte (export --format pte-train): one method that runs the model (or, with `features`, the head on that
    program's output), the loss and the backward pass on a batch of exactly inputs[0].shape[0] series and returns
    [loss, scores, gradients..., parameters...] (ExecuTorch's training layout); a host applies SGD to the
    parameters in place. `inputs` are what a fine-tuning call takes (the series and their targets). Verified at export: `steps` SGD steps at
    learning rate `lr` equal the same steps in eager PyTorch (loss and every trained parameter)."""

    file: str
    method: str
    inputs: list[PteInput]
    finetune: Literal["head", "all"]  # head: the output layer only; all: every parameter, BatchNorm statistics frozen
    parameters: list[str]  # the trained parameters, in the program's order
    optimizer: Literal["sgd"]
    steps: int
    lr: float
    # --finetune head of a global-pooled network: the frozen network below the head as its own program
    # (train_features.pte, XNNPACK), run once per fine-tuning call; the method then takes its output (batch, C)
    # in place of x
    features: PteProgram | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class Int8:
    """An int8 model graph (model.int8.onnx: onnxruntime's static quantisation; model.int8.pte: XNNPACK's), and what
    it cost in accuracy against its fp32 graph."""

    file: str
    method: str  # how it was quantised (format, weight and activation types, calibration)
    calibration: str  # the series it was calibrated on
    calibration_series: int
    evaluated_on: str  # the labelled series both graphs were measured on
    evaluated_series: int
    metric: str  # the task's main metric (runtime.tasks)
    fp32: float
    int8: float
    drop: float  # in drop_unit: points of the metric, or percent of the fp32 error
    drop_unit: Literal["points", "percent"]
    max_drop: float  # export refuses a larger drop (--max-metric-drop)
    label_agreement: float | None  # share of series whose predicted label(s) are the same; null for regression
    golden_atol: float  # the int8 graph's own golden outputs (golden.json model_int8) are checked to these
    golden_rtol: float


@dataclass(frozen=True)
class Window:
    """A windowed model (train --window): it scores windows of `length` samples cut every `stride` samples
    from long recordings, labelled by `label` (runtime.windows.WINDOW_LABELS); how the recordings were read
    and how validation was split from training, so predict, evaluate and every host cut the same windows."""

    length: int
    stride: int
    label: Literal[WINDOW_LABELS]  # type: ignore[valid-type]
    split: str  # how the validation windows were held out (by recording, or by time with a gap)
    recording_column: str | None = field(default=None, metadata=OMIT_NONE)  # .csv recordings: the id column
    time_column: str | None = field(default=None, metadata=OMIT_NONE)  # .csv recordings: the time column
    # .csv recordings with a header: the signal columns' names in channel order (hosts match columns by name)
    channel_columns: list[str] | None = field(default=None, metadata=OMIT_NONE)
    # --task forecast (runtime.forecast): the next `horizon` samples of the channels `targets` (0-based, named
    # `target_names`), at `quantiles` (absent: a point forecast); MASE uses the seasonal-naive error of `season`
    horizon: int | None = field(default=None, metadata={**OMIT_NONE, "schema": {"minimum": 1}})
    targets: list[int] | None = field(default=None, metadata=OMIT_NONE)
    target_names: list[str] | None = field(default=None, metadata=OMIT_NONE)
    quantiles: list[float] | None = field(default=None, metadata=OMIT_NONE)
    season: int | None = field(default=None, metadata={**OMIT_NONE, "schema": {"minimum": 1}})


@dataclass(frozen=True)
class BatchBound:
    """At most `series_per_call` series per model graph call: the graph's intermediates take about
    `bytes_per_series` each (kernel models compare every bias at every position), so every host cuts a larger
    input into calls of this many and a call's working memory stays near series_per_call * bytes_per_series."""

    series_per_call: int = field(metadata={"schema": {"minimum": 1}})
    bytes_per_series: int = field(metadata={"schema": {"minimum": 1}})


@dataclass(frozen=True)
class Source:
    """The run and checkpoint the bundle was exported from, so `pipeline verify` can rebuild eager."""

    run_dir: str
    checkpoint: str
    checkpoint_sha256: str


@dataclass(frozen=True)
class Manifest:
    """manifest.json: everything a host needs to run a bundle and check it."""

    format_version: int
    task: Literal[TASK_NAMES]  # type: ignore[valid-type]
    classes: list[str] | None
    input: InputSpec
    outputs: list[str]
    normalization: Normalization
    model: dict[str, Any] = field(metadata={"schema": {
        "required": ["n_outputs"], "properties": {"n_outputs": {"type": "integer", "minimum": 1}}}})
    loss: LossEntry
    opset: int
    torchscript: dict[str, Any]
    versions: dict[str, str]
    files: dict[str, FileEntry]
    verification: Verification
    source: Source
    # a .csv training file's label columns (header names, or 0-based indices) and width
    csv_labels: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    onnx_layout: Literal["conv2d", "conv1d"] | None = field(default=None, metadata=OMIT_NONE)
    torch_export: TorchExport | None = field(default=None, metadata=OMIT_NONE)
    int8: Int8 | None = field(default=None, metadata=OMIT_NONE)
    pte: Pte | None = field(default=None, metadata=OMIT_NONE)  # absent unless exported with --format pte
    pte_train: PteTrain | None = field(default=None, metadata=OMIT_NONE)  # --format pte-train
    # absent in bundles of runs trained before the output layer existed (their graphs have none)
    output_base: OutputBase | None = field(default=None, metadata=OMIT_NONE)
    # absent unless the run was trained on windows of recordings (--window)
    window: Window | None = field(default=None, metadata=OMIT_NONE)
    # absent where the model's working memory per series is about its input's (every model but the kernel ones)
    batch_bound: BatchBound | None = field(default=None, metadata=OMIT_NONE)

    @property
    def n_outputs(self) -> int:
        return int(self.model["n_outputs"])

    def has(self, name: str) -> bool:
        """Whether the bundle lists the file `name` (e.g. a graph exported only in some formats)."""
        return name in self.files

    def to_json(self) -> str:
        return json.dumps(dump(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_FILE) -> "Manifest":
        """Parse and check manifest.json; a BundleError names the first bad field and the fix."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{where}: not valid JSON ({exc}); re-export the bundle") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in FORMAT_VERSIONS:
            shown = repr(version) if len(repr(version)) <= 60 else repr(version)[:60] + "..."
            raise BundleError(f"{where}: format_version {shown} is not supported by this runtime (it reads "
                              f"{', '.join(map(str, FORMAT_VERSIONS))}); upgrade the runtime or re-export the bundle")
        return load(cls, data, where, FORMAT_VERSION)

    @classmethod
    def read(cls, bundle_dir: Path) -> "Manifest":
        """The manifest of the bundle folder `bundle_dir`, checked."""
        path = Path(bundle_dir) / MANIFEST_FILE
        if not Path(bundle_dir).is_dir():
            raise BundleError(f"{bundle_dir}: not a folder; pass the bundle folder written by pipeline export")
        check_regular(path)
        if not path.exists():
            raise BundleError(f"{path}: not found; {bundle_dir} is not a bundle (pipeline export writes one)")
        return cls.from_json(path.read_bytes().decode("utf-8", errors="replace"), str(path))


# The keys every bundle manifest has: how a folder is recognised as one (export replaces only bundles).
REQUIRED_KEYS = frozenset(f.name for f in dataclasses.fields(Manifest) if f.default is dataclasses.MISSING)


def manifest_schema() -> dict:
    """The JSON Schema (draft 2020-12) of manifest.json, generated from `Manifest`."""
    schema = json_schema(Manifest)
    schema["properties"]["format_version"] = {"enum": list(FORMAT_VERSIONS)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://pipeline.invalid/bundle-manifest-{FORMAT_VERSION}.schema.json",
            "title": f"pipeline bundle manifest, format {FORMAT_VERSION}", **schema}


def schema_text() -> str:
    return json.dumps(manifest_schema(), indent=1) + "\n"
