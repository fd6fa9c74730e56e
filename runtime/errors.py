"""Exception types of the runtime: one message each, naming the file or argument and the fix."""

from __future__ import annotations


class BundleError(Exception):
    """A bundle that cannot be used: missing, of an unknown format, or not what its manifest says."""


class IntegrityError(BundleError):
    """A bundle file whose size or sha256 differs from the manifest (tampered or truncated)."""


class InputError(BundleError, ValueError):
    """Series, predictions or targets that do not fit the bundle (shape, dtype, values)."""


def input_error(problems: list[str]) -> InputError:
    """One InputError for every problem found: the problem itself, or a numbered list."""
    if len(problems) == 1:
        return InputError(problems[0])
    return InputError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
