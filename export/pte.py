"""ExecuTorch programs (export --format pte, the `executorch` extra): the model graph lowered to the XNNPACK
delegate and the loss graph on ExecuTorch's CPU kernels, each a .pte file with one method. The batch is dynamic
up to an explicit bound (ExecuTorch plans memory for the largest shape; a dimension without a bound would be
fixed at the example's size) and every other size is fixed: the length is the training length, as XNNPACK takes
one dynamic dimension. Lowering and running one program: export/pte_program.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.executorch_setup import available, require  # noqa: F401 (available: API)
from export.pte_program import PteRunner, lower
from export.pte_train import PteTrainer
from export.verify import Case, verify_graph
from runtime.compare import Row
from runtime.errors import BundleError
from runtime.manifest import LOSS_INPUTS, MODEL_INPUT, MODEL_INT8_PTE, MODEL_PRECISIONS, Pte, PteProgram
from runtime.pte import check_inputs

DEFAULT_MAX_BATCH = 64  # the verification grid's largest batch; memory is planned for this many series


def export_pte(graphs: list, loss_candidates: list, example_x: tuple, example_loss: tuple, loss_axes: dict, length: int,
               max_batch: int, paths: dict[str, Path], loss_what: str, log=print) -> Pte:
    """model.pte (XNNPACK; batch 1..max_batch, the training length) and loss.pte (CPU kernels; batch
    1..max_batch, and for per-step scores steps 1..length). `graphs`: the model graph's candidates, the 2D layout
    first (export.layout: XNNPACK then runs the network, its global pool included, as one delegate call)."""
    version = require()
    log(f"lowering the model to ExecuTorch (XNNPACK delegate, batch 1..{max_batch}, length {length})")
    model = lower(graphs, example_x, (MODEL_INPUT,), {MODEL_INPUT: {0: ("batch", max_batch)}}, paths["model"],
                  True, "model")
    bounds = {"batch": max_batch, "length": length}
    dynamic = {name: {axis: (dim, bounds[dim]) for axis, dim in axes.items()} for name, axes in loss_axes.items()}
    loss = lower(loss_candidates, example_loss, LOSS_INPUTS, dynamic, paths["loss"], False, loss_what)
    return Pte(version, model, loss)


def fits(program: PteProgram, case: Case) -> bool:
    """Whether a grid case is an input the program takes (the others are refused by check_inputs)."""
    try:
        check_inputs(program, [t.numpy() for t in case.inputs])
    except Exception:
        return False
    return True


def verify_pte(folder: Path, pte: Pte, graph, loss, model_grid: list[Case], loss_grid: list[Case],
               outputs: tuple[str, ...], loss_outputs: tuple[str, ...], atol: float, rtol: float,
               decision: str | None, allowance) -> list[Row]:
    """The programs in executorch.runtime against eager on every grid case they take (the training length,
    batches up to the bound)."""
    rows = verify_graph("model", graph, {"executorch": PteRunner(Path(folder) / pte.model.file, pte.model)},
                        [c for c in model_grid if fits(pte.model, c)], outputs, atol, rtol, decision, allowance)
    return rows + verify_graph("loss", loss, {"executorch": PteRunner(Path(folder) / pte.loss.file, pte.loss)},
                               [c for c in loss_grid if fits(pte.loss, c)], loss_outputs, atol, rtol)


class PteBundle:
    """A bundle's ExecuTorch programs in Python: the signature (when a key is given or $PIPELINE_PUBLIC_KEY is
    set) and every file's sha256 checked before a program is opened, as runtime.load does.

        bundle = PteBundle("artifacts/demo/pte")
        outputs = bundle.predict(x)             # x: float32 (N, channels, length); N > the bound: several calls
        loss, per_sample = bundle.loss(outputs["logits"], target)

    `precision` picks the model program: fp32 (model.pte), int8 (model.int8.pte, from export --format pte
    --quantize int8) or auto (int8 when the bundle has it), as runtime.load picks the ONNX graph.
    """

    def __init__(self, bundle_dir, public_key=None, precision: str = "fp32"):
        from runtime.bundle import check_files, signed_manifest

        path = Path(bundle_dir)
        if precision not in MODEL_PRECISIONS:
            raise BundleError(f"precision '{precision}' is not valid; choose one of {', '.join(MODEL_PRECISIONS)}")
        self.manifest = signed_manifest(path, public_key)
        check_files(path, self.manifest)
        if self.manifest.pte is None and self.manifest.pte_train is None:
            raise BundleError(f"{path}: has no ExecuTorch programs; re-export with --format pte (or a list with pte)")
        self.path, self.pte, self.trainer, self.precision = path, self.manifest.pte, None, "fp32"
        if self.pte is not None:
            int8 = self.pte.model_int8
            if precision == "int8" and int8 is None:
                raise BundleError(f"{path}: has no {MODEL_INT8_PTE}; re-export with `pipeline export RUN_DIR --format "
                                  "pte --quantize int8`, or run it in fp32")
            program = int8 if int8 is not None and precision in ("int8", "auto") else self.pte.model
            self.precision = "int8" if program is int8 else "fp32"
            self.model = PteRunner(path / program.file, program)
            self.loss_program = PteRunner(path / self.pte.loss.file, self.pte.loss)

    def predict(self, x) -> dict[str, np.ndarray]:
        """Named outputs; a batch larger than the program's bound runs in calls of the bound."""
        x = np.asarray(x)
        bound = self.model.program.inputs[0].shape[0]
        parts = [self.model([x[start:start + bound]]) for start in range(0, max(len(x), 1), bound)]
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.manifest.outputs)}

    def loss(self, prediction, target) -> tuple[float, np.ndarray]:
        loss, per_sample = self.loss_program([np.asarray(prediction), np.asarray(target)])
        return float(loss), per_sample

    def finetune(self, X, y, steps: int, lr: float) -> list[float]:
        """`steps` SGD steps of the bundle's fine-tuning program (train.pte) on X (exactly its batch of series at
        the training length) and targets y as the loss graph takes them; the loss before each step. The trained
        parameters live in this object's program (`self.trainer.parameters()`); model.pte is not changed."""
        spec = self.manifest.pte_train
        if spec is None:
            raise BundleError(f"{self.path}: has no fine-tuning program; re-export with --format pte-train")
        check_inputs(PteProgram(spec.file, spec.method, spec.inputs, "portable"), [np.asarray(X), np.asarray(y)])
        if self.trainer is None:
            self.trainer = PteTrainer(self.path / spec.file, spec.inputs[0].shape[0], spec.features)
        return self.trainer.finetune(X, y, steps, lr)
