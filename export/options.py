"""What `pipeline export` is asked for: the formats, tolerances and int8 settings, checked at once."""

from __future__ import annotations

from dataclasses import dataclass


from export.exporters import DEFAULT_OPSET, OPSETS
from export.quantize import QUANTIZE_CHOICES
from export.verify import DEFAULT_ATOL, DEFAULT_RTOL
from pipeline.device import check_device
from pipeline.errors import PipelineError
from runtime.manifest import GRAPH_FORMATS


FORMATS = (*GRAPH_FORMATS, "all")  # --format takes a comma-separated list of these
ALL = ("onnx", "torchscript")  # what --format all means (the default)
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "torch.export (.pt2)",
                "aoti": "AOTInductor (.aoti.pt2)"}
DEVICES = ("cpu", "cuda")


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
        if self.device != "cpu" and self.device in DEVICES and "aoti" not in self.formats:
            raise PipelineError(f"--device {self.device} applies to AOTInductor packages only; add aoti to --format")
        check_device(self.device, DEVICES)
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
