"""The shape check an ExecuTorch program (.pte) needs before every call: the ExecuTorch runtime checks only an
input's element count against the memory planned for it, so a (2, 64, 3) series given to a (batch, 3, 64)
program is answered with garbage. Every input's rank, dtype and fixed sizes must equal the manifest's entry
(manifest.json `pte`) and each dynamic axis must lie in 1..its bound. numpy only; the C++ .pte kit
(runtime/hosts/pte) applies the same rule in the same words."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import BundleError
from runtime.manifest import PteInput, PteProgram


def described(spec: PteInput) -> str:
    """'(batch 1..64, 3, 64)': the sizes an input takes."""
    sizes = [f"{spec.axes[i]} 1..{n}" if i in spec.dynamic else str(n) for i, n in enumerate(spec.shape)]
    return f"({', '.join(sizes)})"


def check_inputs(program: PteProgram, arrays: Sequence[np.ndarray]) -> None:
    """A BundleError naming the first input whose shape or dtype the program cannot take, and what it takes."""
    if len(arrays) != len(program.inputs):
        raise BundleError(f"{program.file}: takes {len(program.inputs)} input(s) "
                          f"({', '.join(s.name for s in program.inputs)}), got {len(arrays)}")
    for spec, array in zip(program.inputs, arrays):
        shape = tuple(int(n) for n in np.shape(array))
        fits = len(shape) == len(spec.shape) and all(
            1 <= n <= limit if i in spec.dynamic else n == limit for i, (n, limit) in enumerate(zip(shape, spec.shape)))
        if not fits:
            raise BundleError(f"{spec.name}: shape {shape} does not fit {program.file} {program.method}: it takes "
                              f"{described(spec)}; cut larger batches into calls of at most {spec.shape[0]}")
        dtype = str(np.asarray(array).dtype)
        if dtype != spec.dtype:
            raise BundleError(f"{spec.name}: dtype {dtype}; {program.file} {program.method} takes {spec.dtype}")
