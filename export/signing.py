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
from runtime.errors import BundleError, not_regular
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


def _regular_files_only(bundle_dir: Path) -> None:
    """A bundle holds regular files in folders: a link, FIFO or device in it is refused, naming it."""
    for path in sorted(bundle_dir.rglob("*")):
        kind = not_regular(path)  # the runtime's test, which never follows a link or opens a FIFO
        if kind == "a symbolic link":
            raise PipelineError(f"{path}: is a symbolic link; a bundle holds regular files only (put the file "
                                "itself there), so it is not signed")
        if kind is not None and kind != "a folder":
            raise PipelineError(f"{path}: is {kind}; a bundle holds regular files only, so it is not signed")


def sign_bundle(bundle_dir, key, cert=None, chain=(), public: PublicKey | None = None) -> Path:
    """Write bundle_dir/model.sig over every other file of the bundle (replacing an earlier signature).
    Returns the signature's path. The new signature is written beside the old one inside the bundle, checked
    with runtime/signature.py against `public` (when given), and only then renamed over it: a refused sign
    leaves every byte of the bundle as it was."""
    bundle_dir = Path(bundle_dir)
    key = _check_file("--sign-key", key)
    cert = None if cert is None else _check_file("--sign-cert", cert)
    chain = [_check_file("--sign-chain", c) for c in chain]
    if chain and cert is None:
        raise PipelineError("--sign-chain applies to a certificate signature; add --sign-cert CERT.pem")
    _regular_files_only(bundle_dir)
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
    try:
        fd, name = tempfile.mkstemp(prefix=f".{SIGNATURE_FILE}.", suffix=".tmp", dir=bundle_dir)
    except OSError as exc:
        raise PipelineError(f"{bundle_dir}: cannot write its signature there ({exc.strerror}); make the bundle "
                            "folder writable, or sign a copy of it") from None
    os.close(fd)
    tmp = Path(name)
    ignored = [Path(SIGNATURE_FILE), Path(tmp.name)]  # model-signing takes them relative to the bundle folder
    config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=False))
    try:
        config.sign(bundle_dir, tmp)
        if public is not None:
            try:
                check_signature(bundle_dir, public, signature=tmp)
            except BundleError as exc:
                raise PipelineError(f"the new signature was refused, so {final} was left as it was: {exc}") from None
        os.replace(tmp, final)
    except OSError as exc:
        raise PipelineError(f"{bundle_dir}: cannot write its signature ({exc.strerror}); make the bundle folder "
                            "writable, or sign a copy of it") from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def signer_key(key, cert=None) -> PublicKey:
    """The public key of a signature made with `key` (or with `cert`'s key); a PipelineError when the key
    cannot sign a bundle (not a readable PEM private key, or not an EC key)."""
    if cert is not None:
        cert = _check_file("--sign-cert", cert)
        text = cert.read_text(errors="replace")
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise PipelineError(f"--sign-cert {cert}: not a PEM certificate (no BEGIN CERTIFICATE block); pass the "
                                "X.509 signing certificate of --sign-key")
        try:
            return PublicKey.read(cert)
        except BundleError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise PipelineError(f"--sign-cert {cert}: cannot sign as it: {reason}") from None
    try:
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
    prefix = str(out_prefix)
    if Path(prefix).name in ("", ".", "..") or prefix.endswith(("/", os.sep)):
        raise PipelineError(f"keygen PREFIX '{prefix}' names no file; pass a prefix such as keys/signing (it writes "
                            "keys/signing.key.pem and keys/signing.pub.pem)")
    private, public = Path(f"{prefix}.key.pem"), Path(f"{prefix}.pub.pem")
    for parent in private.parents:
        if parent.exists() and not parent.is_dir():
            raise PipelineError(f"{parent}: is a file, so keygen cannot make {private} below it; choose a PREFIX in "
                                "a folder")
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise PipelineError(f"{path} already exists; keygen never replaces a key, so choose another prefix")
    key = ec.generate_private_key(curves[curve]())
    password = os.environ.get(PASSWORD_ENV)
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else \
        serialization.NoEncryption()
    written = []
    try:
        private.parent.mkdir(parents=True, exist_ok=True)
        for path, data, mode in (
                (private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            encryption), 0o600),
                (public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except OSError as exc:
        for path in written:  # ours, made a moment ago: no half key pair is left behind
            path.unlink(missing_ok=True)
        where = exc.filename or private
        raise PipelineError(f"{where}: cannot write the key pair there ({exc.strerror}); choose a PREFIX in a folder "
                            "you can write") from None
    return private, public


def sign_and_check(bundle_dir, key, cert=None, chain=()) -> str:
    """Sign, then check the signature as every host will (runtime/signature.py); the key's fingerprint."""
    public = signer_key(key, cert)  # a key that cannot sign is refused before anything is written
    sign_bundle(bundle_dir, key, cert, chain, public=public)  # checked with `public` before it became model.sig
    return public.fingerprint
