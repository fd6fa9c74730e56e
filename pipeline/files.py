"""Atomic file writing: write to a temporary file in the same folder, then rename into place."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError


def temp_prefix(path: Path) -> str:
    """Temporary siblings of `path` carry the writer's process id, so a killed writer's leftovers are known."""
    return f".{Path(path).name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary siblings of `path` left by writers that were killed (their process is gone)."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = candidate.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def json_object_with(path: Path, keys: set[str]) -> bool:
    """Whether `path` holds a JSON object with all of `keys`: how a command knows a folder is its own."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and keys <= set(found)


def check_output_file(path: Path | None, force: bool, flag: str = "--out") -> None:
    """An output file may be new, or (with --force) an earlier file; a folder or anything else is never replaced."""
    if path is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir():
        raise PipelineError(f"{flag} {path} is a folder; pass a file name (nothing in the folder is replaced)")
    if not path.is_file():
        raise PipelineError(f"{flag} {path} is not a regular file; pass another {flag}")
    if not force:
        raise PipelineError(f"{path} already exists; pass --force to replace it or choose another {flag}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename tmp over `path`, so readers never see half a file: a writer
    killed at any moment leaves the previous file whole (and a temporary file that the next write removes)."""
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj) -> Path:
    """Pretty JSON, atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n"))


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))
