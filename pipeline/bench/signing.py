"""What checking a bundle's signature costs: runtime.load with a public key (model.sig verified, every file
hashed against the signed digests) against runtime.load without one, timed side by side in the same rounds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.bench.timing import sample


def signature_rows(bundle: Path, work: Path, calls: int, rounds: int, log) -> list[dict]:
    """Rows of the 'signature' section (none, with a note, when the sign extra is not installed)."""
    import runtime
    from pipeline.errors import PipelineError
    from runtime.signature import check_signature

    try:
        from export.signing import keygen, sign_bundle

        signed = shutil.copytree(bundle, work / "bundle-signed")
        private, public = keygen(work / "bench-signing")
        sign_bundle(signed, private)
    except PipelineError as exc:
        log(f"signature: skipped ({exc})")
        return [{"section": "signature", "name": "runtime.load", "metric": "skipped", "unit": "", "value": None,
                 "note": str(exc)}]
    log("signature: runtime.load of a signed bundle with and without its public key, side by side")
    plain, checked, alone = [], [], []
    for _ in range(rounds):  # interleaved, so both see the same machine
        plain += sample(lambda: runtime.load(signed), calls)
        checked += sample(lambda: runtime.load(signed, public_key=public), calls)
        alone += sample(lambda: check_signature(signed, public), calls)
    base = float(np.median(plain))
    size = sum(p.stat().st_size for p in signed.iterdir())
    row = {"section": "signature", "unit": "ms", "calls": len(plain)}
    return [
        {**row, "name": "runtime.load", "metric": "unsigned check (sha256 sums)", "value": base * 1e3, "ratio": 1.0,
         "note": f"bundle of {size / 1e6:.2f} MB"},
        {**row, "name": "runtime.load, public_key", "metric": "signature + sums", "value": float(np.median(checked)) * 1e3,
         "ratio": float(np.median(checked)) / base, "note": "model.sig verified before anything loads"},
        {**row, "name": "check_signature", "metric": "ECDSA + every file's sha256", "value": float(np.median(alone)) * 1e3,
         "ratio": float(np.median(alone)) / base, "note": "ratio: against runtime.load without a key"},
    ]
