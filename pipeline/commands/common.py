"""What every command shares: our errors as one line (exit 2), and failed exports as one line (exit 1)."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import click

from pipeline.errors import TRAIN_EXTRA_HINT, PipelineError
from runtime.errors import BundleError


class UserError(click.ClickException):
    """Our own errors: one message, exit status 2, no traceback."""

    exit_code = 2


def user_errors(fn):
    """Turn PipelineError, the runtime's BundleError (and a missing torch) into a one-line click error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PipelineError, BundleError) as exc:  # a bundle file refused anywhere below a command: one line
            raise UserError(str(exc)) from None
        except ModuleNotFoundError as exc:
            if exc.name in ("torch", "onnx", "onnxscript", "matplotlib", "tqdm"):
                raise UserError(f"this command needs {exc.name}, which the runtime-only install leaves out; "
                                f"{TRAIN_EXTRA_HINT}") from None
            raise
        except OSError as exc:  # the file system refused a path of the user's (too long, not allowed, disk full)
            if exc.errno is None:
                raise
            name = str(exc.filename) if exc.filename is not None else ""
            shown = name if len(name) <= 80 else name[:60] + "..." + name[-17:]
            raise UserError(f"{shown + ': ' if shown else ''}{exc.strerror}; check the path and its folder") from None

    return wrapper


@contextlib.contextmanager
def export_failures():
    """An export that fails its checks (verification, capture, --max-metric-drop): one line, exit status 1."""
    from export.exporters import ExportError
    from export.quantize import MetricDropError
    from export.verify import VerificationError

    try:
        yield
    except (VerificationError, ExportError, MetricDropError) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None


def path_text(path: Path | None) -> str | None:
    return None if path is None else str(path)
