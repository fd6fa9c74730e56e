"""Signing bundles in the OpenSSF model-signing format with the `model-signing` package (the `sign` extra):
`model.sig` in the bundle, a Sigstore bundle whose DSSE envelope signs the sha256 of every other file. Keys:
EC P-256/P-384/P-521 in PEM (the password, if any, from $PIPELINE_SIGN_KEY_PASSWORD, never a flag), or a
private key with its signing certificate and chain for organisations with a PKI. The checks are
runtime/signature.py's (standard library only), in every host kit too."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError
from runtime.errors import BundleError
from runtime.signature import SIGNATURE_FILE, PublicKey, check_signature

PASSWORD_ENV = "PIPELINE_SIGN_KEY_PASSWORD"
SIGN_EXTRA_HINT = "install the signing extra: pip install -e '.[sign]'"


def _model_signing():
    try:
        import model_signing.hashing
        import model_signing.signing
    except ModuleNotFoundError as exc:
        raise PipelineError(f"signing bundles needs the model-signing package ({exc.name} is missing); "
                            f"{SIGN_EXTRA_HINT}") from None
    return model_signing


def _check_file(flag: str, path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise PipelineError(f"{flag} {path}: {what}; pass a PEM file")
    return path


def sign_bundle(bundle_dir, key, cert=None, chain=()) -> Path:
    """Write bundle_dir/model.sig over every other file of the bundle (replacing an earlier signature).
    Returns the signature's path. The signature is written next to the bundle first, then renamed into it."""
    bundle_dir = Path(bundle_dir)
    key = _check_file("--sign-key", key)
    cert = None if cert is None else _check_file("--sign-cert", cert)
    chain = [_check_file("--sign-chain", c) for c in chain]
    if chain and cert is None:
        raise PipelineError("--sign-chain applies to a certificate signature; add --sign-cert CERT.pem")
    ms = _model_signing()
    password = os.environ.get(PASSWORD_ENV) or None
    config = ms.signing.Config()
    try:
        if cert is None:
            config.use_elliptic_key_signer(private_key=key, password=None if password is None else password.encode())
        else:
            config.use_certificate_signer(private_key=key, signing_certificate=cert, certificate_chain=chain)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = f" (a password-protected key reads its password from ${PASSWORD_ENV})" if "password" in first.lower() \
            else ""
        raise PipelineError(f"--sign-key {key}: cannot sign with it: {first}{hint}; use an EC P-256, P-384 or P-521 "
                            "PEM private key (pipeline keygen makes one)") from None
    final = bundle_dir / SIGNATURE_FILE
    config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[final], ignore_git_paths=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{bundle_dir.name}.sig.", suffix=".tmp", dir=bundle_dir.parent)
    os.close(fd)
    try:
        config.sign(bundle_dir, Path(tmp))
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return final


def signer_key(key, cert=None) -> PublicKey:
    """The public key of a signature made with `key` (or with `cert`'s key); a PipelineError when the key
    cannot sign a bundle (not a readable PEM private key, or not an EC key)."""
    try:
        if cert is not None:
            return PublicKey.read(_check_file("--sign-cert", cert))
        return PublicKey.from_pem(public_key_of(_check_file("--sign-key", key)).decode(), str(key))
    except BundleError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise PipelineError(f"--sign-key {key}: cannot sign with it: {reason}") from None


def public_key_of(private_key) -> bytes:
    """The PEM public key of a PEM private key (the sign extra's `cryptography`)."""
    from cryptography.hazmat.primitives import serialization

    _model_signing()  # the sign extra brings cryptography
    try:
        loaded = serialization.load_pem_private_key(Path(private_key).read_bytes(),
                                                    (os.environ.get(PASSWORD_ENV) or "").encode() or None)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = f" (a password-protected key reads its password from ${PASSWORD_ENV})" if "password" in first.lower() \
            else ""
        raise PipelineError(f"--sign-key {private_key}: cannot sign with it: not a readable PEM private key "
                            f"({first}){hint}") from None
    return loaded.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def keygen(out_prefix, curve: str = "P-256") -> tuple[Path, Path]:
    """A new EC key pair: OUT.key.pem (private, readable by its owner only) and OUT.pub.pem."""
    _model_signing()  # the sign extra brings cryptography
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    curves = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
    if curve not in curves:
        raise PipelineError(f"--curve '{curve}' is not valid; choose one of {', '.join(curves)}")
    private, public = Path(f"{out_prefix}.key.pem"), Path(f"{out_prefix}.pub.pem")
    for path in (private, public):
        if path.exists():
            raise PipelineError(f"{path} already exists; keygen never replaces a key, so choose another prefix")
    key = ec.generate_private_key(curves[curve]())
    password = os.environ.get(PASSWORD_ENV)
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else \
        serialization.NoEncryption()
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def sign_and_check(bundle_dir, key, cert=None, chain=()) -> str:
    """Sign, then check the signature as every host will (runtime/signature.py); the key's fingerprint."""
    public = signer_key(key, cert)  # a key that cannot sign is refused before anything is written
    sign_bundle(bundle_dir, key, cert, chain)
    return check_signature(bundle_dir, public).fingerprint
