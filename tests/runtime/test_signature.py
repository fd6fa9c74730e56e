"""Signed bundles in the Python runtime: the standard-library ECDSA check agrees with `cryptography` (an
independent implementation) on every curve, a signed bundle loads and predicts as before, and every forgery
is refused with one line before anything of the bundle is opened. FORGERIES is shared with the host kits'
tests (tests/runtime/test_hosts.py), which must say the same."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
from runtime.signature import SIGNATURE_FILE, PublicKey, _verify_ecdsa, check_signature, fingerprint

HASHES = {"p256": hashes.SHA256(), "p384": hashes.SHA384(), "p521": hashes.SHA512()}


def _private(keys, name):
    return serialization.load_pem_private_key(keys.private(name).read_bytes(), None)


@pytest.mark.parametrize("name", ["p256", "p384", "p521"])
@settings(max_examples=25, deadline=None)
@given(message=st.binary(max_size=300), flip=st.integers(min_value=0, max_value=10_000))
def test_ecdsa_agrees_with_cryptography(keys, name, message, flip):
    key = _private(keys, name)
    ours = PublicKey.read(keys.public(name))
    signature = key.sign(message, ec.ECDSA(HASHES[name]))
    assert _verify_ecdsa(ours, message, signature)
    changed = bytearray(message or b"\0")
    changed[flip % len(changed)] ^= 1 << (flip % 8)
    assert not _verify_ecdsa(ours, bytes(changed), signature)
    other = _private(keys, "other" if name == "p256" else name).sign(message + b"x", ec.ECDSA(HASHES[name]))
    assert not _verify_ecdsa(ours, message, other)


def test_the_fingerprint_is_the_pem_keys_sha256_as_model_signing_records_it(keys):
    import hashlib

    pem = keys.public().read_bytes()
    der = serialization.load_pem_public_key(pem).public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint(der) == hashlib.sha256(pem).hexdigest() == PublicKey.read(keys.public()).fingerprint


# --- forgeries: (what is done to a copy of a signed bundle, the message; {where(name)} is how a host names a
# file of the bundle, {key} the public key's path, {fp} / {other} the fingerprints of the trusted / other key) ---

def _swap_graph(folder: Path, other: Path, recompute: bool) -> None:
    shutil.copy(other / "model.onnx", folder / "model.onnx")
    if recompute:  # what an attacker who can write the bundle does: the manifest's sums made to match
        from runtime.bundle import file_sha256

        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["model.onnx"] = {"sha256": file_sha256(folder / "model.onnx"),
                                           "bytes": (folder / "model.onnx").stat().st_size}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _resign(folder: Path, keys, name: str, hint: bool = True) -> None:
    from export.signing import sign_bundle

    sign_bundle(folder, keys.private(name))
    if not hint:
        sig = json.loads((folder / SIGNATURE_FILE).read_text())
        del sig["verificationMaterial"]["publicKey"]
        (folder / SIGNATURE_FILE).write_text(json.dumps(sig))


def _edit_payload(folder: Path) -> None:
    """The signed statement's digest of README.txt changed, the signature kept."""
    sig = json.loads((folder / SIGNATURE_FILE).read_text())
    statement = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    sig["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / SIGNATURE_FILE).write_text(json.dumps(sig))


def _set_material(folder: Path, material) -> None:
    """model.sig's verificationMaterial (the key hint's home, outside what is signed) replaced."""
    sig = json.loads((folder / SIGNATURE_FILE).read_text())
    sig["verificationMaterial"] = material
    (folder / SIGNATURE_FILE).write_text(json.dumps(sig))


def _signature_below(folder: Path) -> None:
    (folder / "sub").mkdir()
    shutil.copy(folder / SIGNATURE_FILE, folder / "sub" / SIGNATURE_FILE)


CHANGED = "{where[%s]}: sha256 differs from the signed digest (the file was changed after signing)"
NOT_A_SIGNATURE = "{where[model.sig]}: not a model-signing signature (%s); sign the bundle again (pipeline sign)"
FORGERIES = {
    "graph swapped": (lambda f, o, k: _swap_graph(f, o, False), CHANGED % "model.onnx"),
    "graph swapped, sums recomputed": (lambda f, o, k: _swap_graph(f, o, True), CHANGED % "manifest.json"),
    "manifest edited": (lambda f, o, k: (f / "manifest.json").write_text(
        (f / "manifest.json").read_text().replace('"cat"', '"cow"')), CHANGED % "manifest.json"),
    "file added": (lambda f, o, k: (f / "extra.onnx").write_bytes(b"\0"),
                   "{where[extra.onnx]}: not covered by the signature (added or renamed after signing)"),
    "file removed": (lambda f, o, k: (f / "README.txt").unlink(),
                     "{where[README.txt]}: signed but missing (removed or renamed after signing)"),
    "file renamed": (lambda f, o, k: (f / "README.txt").rename(f / "NOTES.txt"),
                     "{where[NOTES.txt]}: not covered by the signature (added or renamed after signing)"),
    "signature file added below": (lambda f, o, k: _signature_below(f),
                                   "{where[sub/model.sig]}: not covered by the signature (added or renamed after "
                                   "signing)"),
    "signature key hint a number": (lambda f, o, k: _set_material(f, {"publicKey": {"hint": 12345}}),
                                    NOT_A_SIGNATURE % "verificationMaterial.publicKey.hint is not a string"),
    "signature public key a string": (lambda f, o, k: _set_material(f, {"publicKey": "the signer's key"}),
                                      NOT_A_SIGNATURE % "verificationMaterial.publicKey is not an object"),
    "signature material a list": (lambda f, o, k: _set_material(f, [{"publicKey": {}}]),
                                  NOT_A_SIGNATURE % "verificationMaterial is not an object"),
    "signed by another key": (lambda f, o, k: _resign(f, k, "other"),
                              "{where[model.sig]}: signed by another key ({other}), not by {key} ({fp}); pass the "
                              "public key the bundle was signed with, or sign it again"),
    "another key, no hint": (lambda f, o, k: _resign(f, k, "other", hint=False),
                             "{where[model.sig]}: the signature does not verify with {key} (key {fp}); the bundle was "
                             "signed with another key or its signature was altered"),
    "signed statement edited": (lambda f, o, k: _edit_payload(f),
                                "{where[model.sig]}: the signature does not verify with {key} (key {fp}); the bundle "
                                "was signed with another key or its signature was altered"),
    "the signature of another bundle": (lambda f, o, k: shutil.copy(o / SIGNATURE_FILE, f / SIGNATURE_FILE),
                                        CHANGED % "README.txt"),
    "signature truncated": (lambda f, o, k: (f / SIGNATURE_FILE).write_bytes((f / SIGNATURE_FILE).read_bytes()[:120]),
                            "{where[model.sig]}: not a model-signing signature (not valid JSON"),
    "signature not JSON": (lambda f, o, k: (f / SIGNATURE_FILE).write_bytes(b"\x00 garbage"),
                           "{where[model.sig]}: not a model-signing signature (not valid JSON"),
    "signature removed": (lambda f, o, k: (f / SIGNATURE_FILE).unlink(),
                          "{where[model.sig]}: not found; the bundle is not signed (sign it with pipeline sign BUNDLE "
                          "--key KEY.pem), and a public key was given, so it is refused"),
}
PREFIX_ONLY = {"signature truncated", "signature not JSON"}  # the JSON parser's own words follow, per language


class Where(dict):
    def __init__(self, name_of):
        super().__init__()
        self.name_of = name_of

    def __missing__(self, name):
        return self.name_of(name)


def forged(case: str, signed_bundles, keys, tmp_path: Path, name_of, key_name: str | None = None) -> tuple[Path, str]:
    """A forged copy of the signed multiclass bundle and the message a host must give, naming files with
    name_of(folder, name) and the trusted key as key_name (default: its path)."""
    folder = shutil.copytree(signed_bundles["multiclass"], tmp_path / case.replace(" ", "-").replace(",", ""))
    change, message = FORGERIES[case]
    change(folder, signed_bundles["regression"], keys)
    text = message.format(where=Where(lambda name: name_of(folder, name)), key=key_name or keys.public(),
                          fp=PublicKey.read(keys.public()).fingerprint[:16],
                          other=PublicKey.read(keys.public("other")).fingerprint[:16])
    return folder, text


def _loads(monkeypatch) -> list:
    """Every graph session and manifest read the runtime starts from now on."""
    import onnxruntime

    opened = []
    real_session, real_read = onnxruntime.InferenceSession, runtime.Manifest.read
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a[0]) or real_session(*a, **k))
    monkeypatch.setattr(runtime.Manifest, "read", classmethod(lambda cls, d: opened.append(d) or real_read(d)))
    return opened


def test_a_signed_bundle_loads_and_predicts_as_the_unsigned_one(signed_bundles, task_bundles, keys, monkeypatch):
    x = np.random.default_rng(0).normal(size=(5, 1, 16)).astype(np.float32)
    for task, folder in signed_bundles.items():
        plain = runtime.load(task_bundles[task].bundle).predict(x)
        signed = runtime.load(folder, public_key=keys.public()).predict(x)
        assert plain.keys() == signed.keys() and all(np.array_equal(plain[k], signed[k]) for k in plain)
    monkeypatch.setenv("PIPELINE_PUBLIC_KEY", str(keys.public("other")))  # a service's trusted key
    with pytest.raises(runtime.BundleError, match="signed by another key"):
        runtime.load(signed_bundles["regression"])
    monkeypatch.setenv("PIPELINE_PUBLIC_KEY", str(keys.public()))
    assert runtime.load(signed_bundles["regression"]).task == "regression"


@pytest.mark.parametrize("case", FORGERIES)
def test_every_forgery_is_refused_before_anything_is_opened(case, signed_bundles, keys, tmp_path, monkeypatch):
    folder, message = forged(case, signed_bundles, keys, tmp_path, lambda f, name: str(f / name))
    opened = _loads(monkeypatch)
    with pytest.raises(runtime.BundleError) as caught:
        runtime.load(folder, public_key=keys.public())
    if case in PREFIX_ONLY:
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    else:
        assert str(caught.value) == message
    assert opened == []
    if case.startswith("signature") or case in ("signed by another key", "another key, no hint", "file added"):
        assert runtime.load(folder).task == "multiclass"  # without a key the runtime behaves as before


@pytest.mark.parametrize("kind, shown", [("rsa", "RSA"), ("ed25519", "Ed25519")])
def test_a_key_of_another_type_is_refused_by_name(kind, shown, signed_bundles, keys):
    with pytest.raises(runtime.BundleError) as caught:
        check_signature(signed_bundles["multiclass"], keys.public(kind))
    assert str(caught.value) == (f"{keys.public(kind)}: unsupported key type ({shown}); bundles are signed and "
                                 "checked with EC keys (P-256, P-384 or P-521), see docs/signing.md")


def test_a_certificate_is_a_public_key_too(signed_bundles, keys, tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = _private(keys, "p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "signer.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signed = check_signature(signed_bundles["multiclass"], tmp_path / "signer.crt")
    assert signed.fingerprint == PublicKey.read(keys.public()).fingerprint
    assert sorted(signed.digests) == sorted(p.name for p in signed_bundles["multiclass"].iterdir()
                                            if p.name != SIGNATURE_FILE)
