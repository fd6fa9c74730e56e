"""Peak memory and time of `pipeline predict` on memory-mapped .npy files of growing size.

Each size runs the real CLI in a fresh process, which reports its own peak resident memory, so one
measurement cannot inherit another's pages. Run as `python -m pipeline.bench.memory BUNDLE DATA OUT`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MIB = 1024 * 1024
CHUNK_ROWS = 65536


def write_series(path: Path, n: int, length: int, seed: int = 0) -> Path:
    """An (n, 1, length) float32 .npy written in chunks, never whole in memory."""
    rng = np.random.default_rng(seed)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 1, length))
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        X[start:stop] = rng.standard_normal((stop - start, 1, length), dtype=np.float32)
    X.flush()
    del X
    return path


def predict_in_child(bundle: Path, data: Path, out: Path) -> dict:
    """Seconds and peak RSS (MB) of one `pipeline predict` run in a new process."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench.memory", str(bundle), str(data), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline predict failed on {data}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stream_sizes(bundle: Path, folder: Path, length: int, sizes_mib: list[int]) -> list[dict]:
    """One row per file size: MiB of series, seconds, seconds per GiB, peak RSS."""
    rows = []
    for size in sizes_mib:
        n = max(1, size * MIB // (4 * length))
        data = write_series(folder / f"series-{size}MiB.npy", n, length)
        result = predict_in_child(bundle, data, folder / "predictions.npy")
        data.unlink()
        (folder / "predictions.npy").unlink(missing_ok=True)
        rows.append({"mib": size, "series": n, "seconds": result["seconds"],
                     "seconds_per_gib": result["seconds"] * 1024 / size, "peak_rss_mb": result["peak_rss_mb"]})
    return rows


def _child(bundle: str, data: str, out: str) -> None:
    """`pipeline predict BUNDLE --data DATA --out OUT --force`, through the library function the command calls
    (the training library does not import the command-line shell)."""
    from pipeline.scoring import predict_file
    from pipeline.settings.scoring_config import PredictConfig

    start = time.perf_counter()
    predict_file(Path(bundle), PredictConfig(data=Path(data)), Path(out), force=True, log=lambda _: None)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_bytes() / 1e6}))


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    VmHWM belongs to the address space made at exec; getrusage's ru_maxrss would also count the
    parent's memory at fork (Linux keeps it across exec), so a child of a big process reads big.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


if __name__ == "__main__":
    _child(*sys.argv[1:4])
