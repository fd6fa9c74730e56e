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


def not_regular(path) -> str | None:
    """What `path` is when it is in a bundle but not a regular file ('a symbolic link', 'a folder', 'not a regular
    file (a FIFO, socket or device)'), or None (a regular file, or nothing there). Never follows a link and never
    opens the path (a FIFO would block)."""
    import os
    import stat

    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return None if stat.S_ISREG(mode) else "not a regular file (a FIFO, socket or device)"


def check_regular(path) -> None:
    """An IntegrityError, in the words every host kit uses, unless `path` is a regular file (or absent)."""
    kind = not_regular(path)
    if kind is not None:
        raise IntegrityError(f"{path}: is {kind}; a bundle holds regular files only, so it is refused (copy the file "
                             "itself into the bundle, or re-export it)")
