"""What every ExecuTorch step needs first: whether the `executorch` extra is installed (a one-line refusal
saying how to install it when not), and a quiet file descriptor 2 while ExecuTorch's C++ code runs."""

from __future__ import annotations

import contextlib
import os
import sys

from pipeline.errors import PipelineError


def available() -> bool:
    try:
        import executorch  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> str:
    """executorch's version, or a PipelineError (exit 2) saying how to install it."""
    try:
        from executorch import version
    except ImportError:
        raise PipelineError("--format pte needs ExecuTorch: pip install 'pipeline[executorch]' (with torch pinned "
                          "in the same command, e.g. pip install torch==2.13.0 'pipeline[executorch]')") from None
    return version.__version__.split("+")[0]


@contextlib.contextmanager
def silent_fd2():
    """ExecuTorch's C++ runtime and torchao log to file descriptor 2 (cpuinfo notes, failed optional kernels);
    the user sees our one-line messages instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
