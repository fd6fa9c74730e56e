"""model.int8.pte (export --format pte --quantize int8): the model graph quantised by XNNPACK's quantizer (PT2E:
int8 weights with one scale per output channel, int8 activations per tensor, min/max calibration on the same
series as model.int8.onnx), lowered to XNNPACK's int8 kernels. Like model.int8.onnx it cannot equal eager to
1e-5, so it is held to the task's main metric instead: model.pte and model.int8.pte both run in
executorch.runtime on the run's labelled held-out series, and the export fails, with nothing written, when the
drop is larger than --max-metric-drop (export.quantize.judged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.golden import tensor_json
from export.pte_program import PteRunner, lower
from export.quantize import Int8Inputs, compare, int8_entry, raw_scores
from pipeline.errors import PipelineError
from runtime.manifest import MODEL_INPUT, MODEL_INT8_PTE, Int8, PteProgram
from runtime.tasks import TASKS

METHOD = ("XNNPACK quantizer (PT2E), symmetric: int8 weights per output channel, int8 activations per tensor "
          "(min/max); XNNPACK's int8 kernels")


def golden_pte(folder: Path, program: PteProgram, golden_model: dict, output_names) -> dict:
    """A program's own outputs on the golden model input (model.int8.pte: golden.json model_int8_pte)."""
    from runtime.golden import golden_array

    inputs = golden_model["inputs"]
    outputs = PteRunner(Path(folder) / program.file, program)([golden_array(inputs[MODEL_INPUT])])
    return {"inputs": inputs, "outputs": {n: tensor_json(torch.from_numpy(o)) for n, o in zip(output_names, outputs)}}


def _at_length(X: np.ndarray, length: int, what: str) -> None:
    if X.shape[-1] != length:
        raise PipelineError(f"--quantize int8 with --format pte: {what} have length {X.shape[-1]}; model.int8.pte "
                            f"takes length {length} (the training length); pass --calibration-data with series of "
                            f"length {length}, or leave pte out of --format")


def export_int8_pte(candidates: list, example_x: tuple, inputs: Int8Inputs, fp32: PteProgram, folder: Path,
                    task_name: str, max_drop: float | None, log=print) -> tuple[PteProgram, Int8]:
    """folder/model.int8.pte beside the verified folder/model.pte (`fp32`), measured against it."""
    length, bound = fp32.inputs[0].shape[2], fp32.inputs[0].shape[0]
    _at_length(inputs.calibration, length, f"the calibration series ({inputs.calibration_source})")
    _at_length(inputs.X, length, f"the series of {inputs.where}")
    log(f"quantising the ExecuTorch model to int8 (XNNPACK; {len(inputs.calibration)} series to calibrate on); "
        f"measuring model.pte and model.int8.pte on {len(inputs.rows)} series of {inputs.where}")
    program = lower(candidates, example_x, (MODEL_INPUT,), {MODEL_INPUT: {0: ("batch", bound)}},
                    Path(folder) / MODEL_INT8_PTE, True, "the int8 model", inputs.calibration)
    runners = [PteRunner(Path(folder) / p.file, p) for p in (fp32, program)]
    scores = [raw_scores(lambda x, r=r: r([x]), inputs.X, inputs.rows, bound) for r in runners]
    task = TASKS[task_name]
    measured = compare(task, scores[0], scores[1], inputs.targets, inputs.where)
    return program, int8_entry(task, measured, inputs, max_drop, MODEL_INT8_PTE, METHOD, log)
