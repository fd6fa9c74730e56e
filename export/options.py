"""What `pipeline export` is asked for: the formats, tolerances and int8 settings, checked at once."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.training.device import check_device
from pipeline.errors import PipelineError
from pipeline.settings.fields import setting
from runtime.manifest import GRAPH_FORMATS, QUANTIZATIONS

DEFAULT_OPSET = 18
# what torch.onnx's dynamo exporter writes: it writes opset 18 when asked for less, so less is refused
OPSETS = range(18, 24)
DEFAULT_ATOL = 1e-5  # every exported output against eager PyTorch: |diff| <= atol + rtol x |eager|
DEFAULT_RTOL = 1e-5
QUANTIZE_CHOICES = QUANTIZATIONS

TRAIN_FORMAT = "pte-train"  # an on-device fine-tuning program, not a graph of the model or the loss
FORMATS = (*GRAPH_FORMATS, TRAIN_FORMAT, "all")  # --format takes a comma-separated list of these
FINETUNE = ("head", "all")
ALL = ("onnx", "torchscript")  # what --format all means (the default)
FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "torch.export (.pt2)",
                "aoti": "AOTInductor (.aoti.pt2)", "pte": "ExecuTorch (.pte)",
                TRAIN_FORMAT: "an ExecuTorch fine-tuning program (train.pte)"}
DEFAULT_PTE_MAX_BATCH = 64  # the verification grid's largest batch
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how strictly to check it (each field is also `pipeline export`'s flag)."""

    fmt: str = setting(  # one of FORMATS or a comma-separated list of them
        "all", name="--format", metavar="FORMATS", help="Graph formats, comma-separated: onnx, torchscript, pt2 "
        "(torch.export program), aoti (AOTInductor package compiled for this machine, for C++ without Python), pte "
        "(ExecuTorch program for phones and boards; the executorch extra), pte-train (an ExecuTorch program that "
        "fine-tunes the model on the device), all (= onnx,torchscript).")
    pte_max_batch: int = setting(DEFAULT_PTE_MAX_BATCH, metavar="N", help="The most series one call of model.pte "
                                 "and loss.pte takes (ExecuTorch plans their memory for this many).")
    finetune: str = setting("head", choices=FINETUNE, help="What --format pte-train trains: head (the output layer) "
                            "or all (every parameter; BatchNorm statistics stay frozen).")
    finetune_batch: int = setting(16, metavar="N", help="The series per fine-tuning step of --format pte-train "
                                  "(the program takes exactly this many).")
    opset: int = setting(DEFAULT_OPSET, help="ONNX opset.")
    atol: float = setting(DEFAULT_ATOL, help="Absolute tolerance against eager.")
    rtol: float = setting(DEFAULT_RTOL, help="Relative tolerance against eager.")
    device: str = setting("cpu", choices=DEVICES,
                          help="What the AOTInductor packages are compiled for (cuda needs CUDA here).")
    quantize: str | None = setting(  # "int8": also model.int8.onnx (export/quantize.py)
        None, choices=QUANTIZE_CHOICES, help="Also write model.int8.onnx (onnxruntime static INT8: QDQ, per-channel "
        "weights) and, with pte in --format, model.int8.pte (XNNPACK's int8), calibrated on the run's "
        "calibration.npy; each int8 graph and its fp32 graph are measured on the run's test (else validation) data "
        "and the export fails when the main metric drops more than --max-metric-drop.")
    calibration_data: str | None = setting(
        None, kind="file", metavar="FILE", parse=str, help="Series to calibrate the int8 graph on (any data file; "
        "labels not needed) [default: RUN_DIR/calibration.npy, a sample of the training series].")
    max_metric_drop: float | None = setting(  # None: quantize.default_max_drop of the task
        None, type=float, help="Largest drop of the main metric allowed for the int8 graph [default: 1 point of "
        "accuracy (micro-F1 for multilabel); 2 percent of RMSE (MAE for counts)].")
    saliency: bool = setting(False, kind="switch", help="Add the output 'saliency' to the model graph of every "
                             "format: the class activation map of the predicted class (each label's for multilabel, "
                             "each target's for regression), one value per time step (fcn, resnet, inception, lite "
                             "and their ensembles).")
    sign_key: str | None = setting(
        None, kind="file", metavar="KEY.pem", parse=str, help="Sign every file of the bundle (model.sig, OpenSSF "
        "model-signing format) with this EC private key (P-256/384/521); its password, if any, from "
        "$PIPELINE_SIGN_KEY_PASSWORD. Needs the sign extra.")
    sign_cert: str | None = setting(
        None, kind="file", metavar="CERT.pem", parse=str,
        help="With --sign-key: sign as this X.509 signing certificate (a certificate signature, for a PKI).")
    sign_chain: tuple[str, ...] = setting(
        (), kind="many", metavar="CERT.pem", parse=lambda paths: tuple(str(p) for p in paths),
        help="With --sign-cert: the certificate chain up to the root (repeat the flag).")

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
        if self.pte_max_batch != DEFAULT_PTE_MAX_BATCH and "pte" not in self.formats:
            raise PipelineError("--pte-max-batch applies to ExecuTorch programs only; add pte to --format")
        if not isinstance(self.pte_max_batch, int) or self.pte_max_batch < 1:
            raise PipelineError(f"--pte-max-batch must be 1 or more; got {self.pte_max_batch}")
        if (self.finetune != "head" or self.finetune_batch != 16) and TRAIN_FORMAT not in self.formats:
            raise PipelineError("--finetune and --finetune-batch apply to the fine-tuning program; add pte-train to "
                                "--format")
        if self.finetune not in FINETUNE:
            raise PipelineError(f"--finetune '{self.finetune}' is not valid; choose {', '.join(FINETUNE)}")
        if not isinstance(self.finetune_batch, int) or self.finetune_batch < 1:
            raise PipelineError(f"--finetune-batch must be 1 or more; got {self.finetune_batch}")
        if self.atol < 0 or self.rtol < 0:
            raise PipelineError("--atol and --rtol must be >= 0")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise PipelineError(f"--quantize '{self.quantize}' is not valid; choose {', '.join(QUANTIZE_CHOICES)}")
        if self.quantize and not {"onnx", "pte"} & set(self.formats):
            raise PipelineError(f"--quantize {self.quantize} quantises the ONNX and ExecuTorch model graphs; add onnx "
                                "or pte to --format")
        for flag, value in (("--calibration-data", self.calibration_data), ("--max-metric-drop", self.max_metric_drop)):
            if value is not None and self.quantize is None:
                raise PipelineError(f"{flag} applies to the int8 graph only; add --quantize int8")
        if self.sign_cert is not None and self.sign_key is None:
            raise PipelineError("--sign-cert needs --sign-key, the certificate's private key")
        if self.sign_chain and self.sign_cert is None:
            raise PipelineError("--sign-chain applies to a certificate signature; add --sign-cert CERT.pem")
        if self.max_metric_drop is not None and not self.max_metric_drop >= 0:
            raise PipelineError(f"--max-metric-drop must be >= 0; got {self.max_metric_drop:g}")

    @property
    def formats(self) -> tuple[str, ...]:
        """The graph formats to write, in GRAPH_FORMATS order ('all' is onnx and torchscript)."""
        names = {n.strip() for n in self.fmt.split(",")}
        names |= set(ALL) if "all" in names else set()
        return tuple(f for f in (*GRAPH_FORMATS, TRAIN_FORMAT) if f in names)
