"""The settings of `pipeline predict`, `evaluate` and `verify`, one field each with its flag (see
pipeline/settings/fields.py); the commands' options are generated from them. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.settings.fields import setting
from runtime.manifest import MODEL_PRECISIONS
from runtime.signature import PUBLIC_KEY_ENV, SIGNATURE_FILE

PREDICT_TARGET_HELP = ("CSV label column(s), by name or 0-based index, to leave out of the series [default: the "
                       "training data's label column, where the file has it; 'none': every column is a series "
                       "value].")
PUBLIC_KEY_HELP = (f"Refuse the bundle unless its signature ({SIGNATURE_FILE}) verifies with this PEM public key and "
                   f"covers exactly its files [default: ${PUBLIC_KEY_ENV}; unset: not checked].")
EVALUATE_TARGET_HELP = ("CSV label column(s), by name or 0-based index [default: the training data's label column, "
                        "where the file has it, else the last column].")


@dataclass(frozen=True)
class ScoringConfig:
    """How predict and evaluate read a series file and run the bundle's model graph."""

    data: Path | None = setting(None, kind="data", required=True,
                                help="Series file: .npz, .npy, .csv, UCR .tsv or UCR/UEA .ts; for a "
                                "windowed bundle, recordings (a per-sample .csv, an .npz, or a folder of them).")
    target_column: str | None = setting(None, type=str, help=PREDICT_TARGET_HELP)
    pad: bool = setting(False, kind="switch", help="Right-pad unequal-length .ts series with their last value.")
    batch_size: int | None = setting(None, kind="count", help="Series per onnxruntime call [default: as many as fit "
                                     "8 MiB, at most 256].")
    threads: int | None = setting(None, kind="count",
                                  help="onnxruntime intra-op threads [default: onnxruntime's choice].")
    precision: str = setting("fp32", choices=MODEL_PRECISIONS,
                             help="Model graph: fp32 (model.onnx), int8 (model.int8.onnx, from export --quantize "
                             "int8), auto (int8 when the bundle has it).")
    public_key: Path | None = setting(None, kind="file", help=PUBLIC_KEY_HELP)

    def __post_init__(self):
        if self.data is None:
            raise PipelineError("--data is required: the series file to score")
        object.__setattr__(self, "data", Path(self.data))
        if self.precision not in MODEL_PRECISIONS:
            raise PipelineError(f"--precision '{self.precision}' is not valid; choose one of "
                                f"{', '.join(MODEL_PRECISIONS)}")
        for flag, value in (("--batch-size", self.batch_size), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise PipelineError(f"{flag} must be at least 1; got {value}")


@dataclass(frozen=True)
class PredictConfig(ScoringConfig):
    """`pipeline predict`: the label columns are left out of a CSV laid out as the training data."""

    saliency: Path | None = setting(None, kind="file", metavar="FILE.npy", help="Also write the saliency maps, "
                                    "one row per series or window (bundles exported with --saliency).")
    segments: bool = setting(False, kind="switch", help="A bundle trained with --window-label each: one row per "
                             "segment (recording, start, end, label, mean probability) instead of one per sample.")

    def __post_init__(self):
        super().__post_init__()
        if self.saliency is not None:
            object.__setattr__(self, "saliency", Path(self.saliency))


@dataclass(frozen=True)
class EvaluateConfig(ScoringConfig):
    """`pipeline evaluate`: the label columns are read as the targets."""

    target_column: str | None = setting(None, type=str, help=EVALUATE_TARGET_HELP)


@dataclass(frozen=True)
class VerifyConfig:
    """`pipeline verify`: where the checkpoint is, and the tolerances (the export's by default)."""

    run_dir: Path | None = setting(None, name="--run", kind="folder", help="Run folder with the checkpoint, for "
                                   "the eager re-check [default: the one recorded at export].")
    atol: float | None = setting(None, type=float, help="[default: the tolerance used at export]")
    rtol: float | None = setting(None, type=float, help="[default: the tolerance used at export]")
    threads: int | None = setting(None, kind="count", help="onnxruntime intra-op threads.")
    public_key: Path | None = setting(None, kind="file", help=PUBLIC_KEY_HELP)
