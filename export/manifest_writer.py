"""The bundle's self-description: manifest.json, the ONNX metadata and README.txt."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.options import ExportConfig
from pipeline.version import __version__
from pipeline.training.run_config import ModelRecord
from runtime.bundle import file_sha256 as sha256
from runtime.inputs import plural
from runtime.manifest import (FORMAT_VERSION, GRAPH_FILES, LOSS_INPUTS, LOSS_OUTPUTS, MODEL_INPUT, SALIENCY_OUTPUT,
                              BatchBound, FileEntry, InputSpec, Int8, LengthSpec, LossEntry, Manifest, Normalization,
                              OutputBase, Pte, PteTrain, Source, TensorSpec, TorchExport, Verification, Window)
from runtime.tasks import TASKS


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
class Graphs:
    """What exporting the graphs settled: TorchScript methods, the verification summary, the ONNX layout, the
    torch.export dims and AOTInductor target, the int8 graph's figures."""

    methods: dict
    verification: Verification
    layout: str | None = None
    exported: TorchExport | None = None
    int8: Int8 | None = None
    batch_bound: BatchBound | None = None
    pte: Pte | None = None
    pte_train: PteTrain | None = None


def onnx_metadata(record: ModelRecord, config: ExportConfig) -> dict[str, str]:
    return {
        "pipeline.format_version": str(FORMAT_VERSION), "pipeline.task": record.task,
        "pipeline.classes": json.dumps(record.encoding.to_dict()["classes"]),
        "pipeline.normalize": record.model.normalize, "pipeline.loss": json.dumps(record.loss.to_dict()),
        "pipeline.opset": str(config.opset), "pipeline.version": __version__, "torch.version": torch.__version__,
        "onnx.version": onnx.__version__,
    }


def _target_spec(task: str, k: int, steps: bool = False) -> TensorSpec:
    spec = TASKS[task]
    meaning = spec.target_meaning + (" at every time step" if steps else "")
    return TensorSpec(LOSS_INPUTS[1], spec.target_dtype, spec.target_shape(k, steps), meaning)


def build_manifest(tmp: Path, record: ModelRecord, weights: dict, config: ExportConfig, graphs: Graphs,
                   source: dict) -> Manifest:
    cfg, task, base = record.model, record.task, record.output_base
    files = {p.name: FileEntry(sha256(p), p.stat().st_size) for p in sorted(tmp.iterdir())}
    length = LengthSpec(fixed=cfg.length) if cfg.fixed_length else LengthSpec(min=1, max=None, trained=cfg.length)
    return Manifest(
        format_version=FORMAT_VERSION, task=task, classes=record.encoding.to_dict()["classes"],
        input=InputSpec(MODEL_INPUT, "float32", ["batch", "channels", "length"], cfg.in_channels, length),
        outputs=list(TASKS[task].outputs) + ([SALIENCY_OUTPUT] if config.saliency else []),
        normalization=Normalization(cfg.normalize, True, weights["normalize.mean"].reshape(-1).tolist(),
                                    weights["normalize.std"].reshape(-1).tolist()),
        model=cfg.to_dict(),
        loss=LossEntry(record.loss.name, record.loss.to_dict()["params"], [
            TensorSpec(LOSS_INPUTS[0], "float32", ["batch", cfg.n_outputs] + (["length"] if cfg.per_step else [])),
            _target_spec(task, cfg.target_outputs, cfg.per_step)],
            list(LOSS_OUTPUTS)),
        opset=config.opset, torchscript=graphs.methods,
        versions={"pipeline": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": ort.__version__, "numpy": np.__version__},
        files=files, verification=graphs.verification, source=Source(**source),
        # a .csv training file's label columns (header names, or 0-based indices) and width: predict leaves
        # them out of a .csv laid out the same way, as train and evaluate do
        csv_labels=record.csv_labels, onnx_layout=graphs.layout, torch_export=graphs.exported,
        int8=graphs.int8, output_base=None if base is None else OutputBase(base.rule, True, base.scale, base.shift, base.loss_scale),
        window=Window(**record.window) if record.window else None, batch_bound=graphs.batch_bound, pte=graphs.pte,
        pte_train=graphs.pte_train)


def readme_text(record: ModelRecord, want: tuple[str, ...], saliency: bool = False) -> str:
    cfg, task = record.model, record.task
    what = {("model", "onnx"): "the model graph (ONNX, onnxruntime)", ("loss", "onnx"): "the loss graph (ONNX)",
            ("model", "torchscript"): "the model graph (TorchScript; torch::jit::load in C++)",
            ("loss", "torchscript"): "the loss graph (TorchScript)",
            ("model", "pt2"): "the model graph (torch.export; torch.export.load in Python)",
            ("loss", "pt2"): "the loss graph (torch.export)",
            ("model", "aoti"): "the model compiled by AOTInductor for this machine (C++: AOTIModelPackageLoader)",
            ("loss", "aoti"): "the loss compiled by AOTInductor (manifest.json torch_export.aoti: its target)",
            ("model", "pte"): "the model as an ExecuTorch program (XNNPACK; manifest.json pte: the shapes it takes)",
            ("loss", "pte"): "the loss as an ExecuTorch program (check every input's shape first: manifest pte)"}
    lines = "".join(f"  {GRAPH_FILES[key]:<18} {text}\n" for key, text in what.items() if key[1] in want)
    length = f"length {cfg.length}" if cfg.fixed_length else "any length"
    target = _target_spec(task, cfg.target_outputs, cfg.per_step)
    text = README.format(task=task, files=lines, channels=plural(cfg.in_channels, "channel"), length=length,
                         outputs=", ".join(TASKS[task].outputs + ((SALIENCY_OUTPUT,) if saliency else ())),
                         target=f"{target.dtype}, {target.meaning}",
                         loss=json.dumps(record.loss.to_dict()))
    if record.window and record.window["label"] == "each":
        w = record.window
        text += textwrap.fill(f"Windows: trained on windows of {w['length']} samples every {w['stride']} samples of long "
                              "recordings with a label at every time step; each output is (batch, outputs, length). "
                              "Where windows overlap, a sample's probabilities are the mean of every window covering "
                              "it; a stream (runtime: bundle.stream(), Node/browser: bundle.stream(), C++: "
                              "pipeline::StepStream) answers each sample once every window covering it has arrived "
                              "(docs/segmentation.md).", width=100) + "\n"
    elif record.window:
        w = record.window
        text += textwrap.fill(f"Windows: trained on windows of {w['length']} samples every {w['stride']} samples of long recordings, "
                 f"a window taking the label of its {w['label']} time step where labels are per step (manifest.json "
                 "window); feed a live recording to a "
                 "stream (runtime: bundle.stream(), Node/browser: bundle.stream(), C++: pipeline::Stream) to get "
                 "every window's outputs as it completes.", width=100) + "\n"
    return text
