"""The bundle folder: what --out may be, and the atomic swap of a finished bundle into place."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.files import json_object_with
from runtime.manifest import MANIFEST_FILE, REQUIRED_KEYS


def is_bundle(folder: Path) -> bool:
    """A folder `pipeline export` wrote: its manifest.json has the bundle keys."""
    return json_object_with(Path(folder) / MANIFEST_FILE, REQUIRED_KEYS)


def check_bundle_target(out: Path, run_dir: Path, force: bool) -> None:
    """--out may be a new folder, an empty one, or (with --force) an earlier bundle; never anything else."""
    resolved, run = Path(out).resolve(), Path(run_dir).resolve()
    if resolved == run or resolved in run.parents:
        what = "is the run folder" if resolved == run else f"holds the run folder {run_dir}"
        raise PipelineError(f"--out {out} {what}; a bundle needs a folder of its own (default RUN_DIR/bundle), "
                            "and nothing else is ever replaced")
    if not out.exists():
        return
    if not out.is_dir():
        raise PipelineError(f"--out {out} is a file; pass a folder for the bundle")
    if not any(out.iterdir()):
        return
    if not is_bundle(out):
        raise PipelineError(f"--out {out} is not a bundle (no bundle manifest.json in it); export replaces only a "
                            "folder written by pipeline export, so choose another --out")
    if not force:
        raise PipelineError(f"{out} already exists; pass --force to replace it or choose another --out")


def swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` with the finished folder `tmp`. The old bundle is moved aside, not deleted, until the
    new one is in place; a kill between the two renames leaves it at .NAME.old, restored by `recover`."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def recover(out: Path) -> bool:
    """Put back a bundle left at .NAME.old by an export killed between its two renames."""
    old = Path(out).with_name(f".{Path(out).name}.old")
    if old.is_dir() and not Path(out).exists():
        old.rename(out)
        return True
    return False
