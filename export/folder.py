"""The bundle folder: what --out may be, and the atomic swap of a finished bundle into place."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.files import json_object_with
from runtime.manifest import MANIFEST_FILE, REQUIRED_KEYS
from runtime.signature import SIGNATURE_FILE

OWN_LEFTOVER = re.compile(rf"\.{re.escape(SIGNATURE_FILE)}\..+\.tmp")  # a signature pipeline sign was writing


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
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PipelineError(f"--out {out} holds files that no export wrote ({shown}: not in its manifest.json); "
                            "--force replaces only what an export wrote, so move them out or choose another --out")


def foreign_files(bundle: Path) -> list[str]:
    """Files of an earlier bundle that neither its manifest.json lists nor a pipeline command writes there (its
    manifest, its signature, a temporary signature left by a killed pipeline sign), '/'-separated."""
    try:
        listed = json.loads((bundle / MANIFEST_FILE).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    ours = set(listed) if isinstance(listed, dict) else set()
    ours |= {MANIFEST_FILE, SIGNATURE_FILE}
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if not p.is_dir())
    return [name for name in names if name not in ours and not OWN_LEFTOVER.fullmatch(name)]


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
