"""Bundle signatures in the OpenSSF model-signing format, checked with the Python standard library alone.

A signed bundle holds `model.sig`: a Sigstore bundle (v0.3 JSON) whose DSSE envelope wraps an in-toto
statement listing the sha256 of every other file of the bundle (predicate https://model_signing/signature/v1.0).
`check_signature` verifies the envelope's ECDSA signature (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, as
model-signing signs) over the DSSE pre-authentication encoding against the key the host trusts, then that the
signed file list is exactly the bundle's files with their digests, before any graph is opened. The Node,
browser and C++ kits make the same checks with the same messages. No numpy, no third-party crypto.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import BundleError, check_regular

SIGNATURE_FILE = "model.sig"  # model-signing's default name; the one file of a bundle the signature leaves out
PUBLIC_KEY_ENV = "PIPELINE_PUBLIC_KEY"  # a service's trusted key, when the caller passes none
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"


@dataclass(frozen=True)
class Curve:
    name: str
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int
    hash: str


CURVES = {  # by the OID of SubjectPublicKeyInfo's parameters (SEC 2 / FIPS 186-4 constants)
    "1.2.840.10045.3.1.7": Curve(
        "P-256", 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff,
        0xffffffff00000001000000000000000000000000fffffffffffffffffffffffc,
        0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b,
        0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
        0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5,
        0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551, "sha256"),
    "1.3.132.0.34": Curve(
        "P-384", 2**384 - 2**128 - 2**96 + 2**32 - 1, 2**384 - 2**128 - 2**96 + 2**32 - 4,
        int("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef", 16),
        int("aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7", 16),
        int("3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f", 16),
        int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16),
        "sha384"),
    "1.3.132.0.35": Curve(
        "P-521", 2**521 - 1, 2**521 - 4,
        int("0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573"
            "df883d2c34f1ef451fd46b503f00", 16),
        int("00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348"
            "b3c1856a429bf97e7e31c2e5bd66", 16),
        int("011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c"
            "7086a272c24088be94769fd16650", 16),
        int("01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c"
            "9b8899c47aebb6fb71e91386409", 16),
        "sha512"),
}
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
KEY_TYPES = {"1.2.840.113549.1.1.1": "RSA", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448",
             "1.2.840.10040.4.1": "DSA"}


# --- DER, just enough for SubjectPublicKeyInfo, certificates and ECDSA signatures ---------------------------

def _tlv(data: bytes, i: int) -> tuple[int, bytes, int]:
    """(tag, contents, index after) of the DER element at data[i]."""
    tag, length = data[i], data[i + 1]
    i += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or i + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[i:i + count], "big")
        i += count
    if i + length > len(data):
        raise ValueError("DER element runs past the end")
    return tag, data[i:i + length], i + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        tag, contents, i = _tlv(data, i)
        out.append((tag, contents))
    return out


def _oid(contents: bytes) -> str:
    first = contents[0]
    parts, value = [first // 40, first % 40], 0
    for byte in contents[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _pem_blocks(text: str) -> dict[str, bytes]:
    """{label: DER} of the PEM blocks in `text` (the first of each label)."""
    blocks, label, lines = {}, None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            label, lines = line[11:-5], []
        elif line.startswith("-----END ") and label is not None:
            blocks.setdefault(label, base64.b64decode("".join(lines), validate=True))
            label = None
        elif label is not None:
            lines.append(line)
    return blocks


def fingerprint(spki_der: bytes) -> str:
    """A public key's fingerprint: the sha256 of its PEM SubjectPublicKeyInfo, 64-column base64, as
    model-signing records it in a signature's key hint (`openssl pkey -pubin -in PUBLIC.pem | sha256sum`)."""
    text = base64.b64encode(spki_der).decode()
    lines = "".join(text[i:i + 64] + "\n" for i in range(0, len(text), 64))
    return hashlib.sha256(f"-----BEGIN PUBLIC KEY-----\n{lines}-----END PUBLIC KEY-----\n".encode()).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An EC public key the host trusts: its curve, point and fingerprint (see `fingerprint`)."""

    curve: Curve
    x: int
    y: int
    fingerprint: str
    source: str

    @classmethod
    def from_spki(cls, der: bytes, source: str) -> "PublicKey":
        (_, spki), = _children(der)[:1]
        algorithm, bits = _children(spki)[:2]
        ids = _children(algorithm[1])
        kind = _oid(ids[0][1])
        if kind != EC_PUBLIC_KEY_OID:
            raise BundleError(f"{source}: unsupported key type ({KEY_TYPES.get(kind, kind)}); bundles are signed and "
                              "checked with EC keys (P-256, P-384 or P-521), see docs/signing.md")
        curve_oid = _oid(ids[1][1]) if len(ids) > 1 and ids[1][0] == 0x06 else "?"
        if curve_oid not in CURVES:
            raise BundleError(f"{source}: unsupported EC curve {curve_oid}; use P-256, P-384 or P-521")
        curve = CURVES[curve_oid]
        point = bits[1][1:]  # the BIT STRING's unused-bits byte, then 04 || X || Y
        size = (curve.p.bit_length() + 7) // 8
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise BundleError(f"{source}: the EC point is not an uncompressed {curve.name} point")
        x, y = int.from_bytes(point[1:1 + size], "big"), int.from_bytes(point[1 + size:], "big")
        if (y * y - x * x * x - curve.a * x - curve.b) % curve.p:
            raise BundleError(f"{source}: the EC point is not on {curve.name}")
        return cls(curve, x, y, fingerprint(der), source)

    @classmethod
    def read(cls, path) -> "PublicKey":
        """A PEM public key (or the key of a PEM certificate, e.g. a signing certificate of a PKI)."""
        source = str(path)
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise BundleError(f"{source}: public key not found; pass the PEM public key the bundle was signed "
                              "for") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{source}: cannot read the public key ({exc})") from None
        return cls.from_pem(text, source)

    @classmethod
    def from_pem(cls, text: str, source: str) -> "PublicKey":
        """A PEM public key, or the key of a PEM certificate; `source` names it in messages."""
        blocks: dict[str, bytes] = {}
        try:
            blocks = _pem_blocks(text)
            if "PUBLIC KEY" in blocks:
                return cls.from_spki(blocks["PUBLIC KEY"], source)
            if "CERTIFICATE" in blocks:
                return cls.from_spki(_certificate_spki(blocks["CERTIFICATE"]), source)
        except BundleError:
            raise
        except (ValueError, IndexError, binascii.Error):
            raise BundleError(f"{source}: not a readable PEM public key; export it with "
                              "openssl ec -in KEY.pem -pubout -out PUBLIC.pem") from None
        found = f" (found {', '.join(blocks)})" if blocks else ""
        raise BundleError(f"{source}: holds no PEM public key{found}; export one with openssl ec -in KEY.pem -pubout "
                          "-out PUBLIC.pem")


def _certificate_spki(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an X.509 certificate."""
    (_, cert), = _children(der)[:1]
    tbs = _children(_children(cert)[0][1])
    fields = tbs[1:] if tbs[0][0] == 0xA0 else tbs  # the optional [0] version
    tag, contents = fields[5]  # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    length = len(contents)
    head = bytes([tag]) + (bytes([length]) if length < 128 else
                           bytes([0x80 | ((length.bit_length() + 7) // 8)]) + length.to_bytes(
                               (length.bit_length() + 7) // 8, "big"))
    return head + contents


# --- ECDSA verification (FIPS 186-4), on public data only ------------------------------------------------

def _add(curve: Curve, P, Q):
    """Jacobian point addition (None: the point at infinity)."""
    if P is None:
        return Q
    if Q is None:
        return P
    p = curve.p
    X1, Y1, Z1 = P
    X2, Y2, Z2 = Q
    Z1Z1, Z2Z2 = Z1 * Z1 % p, Z2 * Z2 % p
    U1, U2 = X1 * Z2Z2 % p, X2 * Z1Z1 % p
    S1, S2 = Y1 * Z2 * Z2Z2 % p, Y2 * Z1 * Z1Z1 % p
    if U1 == U2:
        return _double(curve, P) if S1 == S2 else None
    H, R = (U2 - U1) % p, (S2 - S1) % p
    HH = H * H % p
    HHH = H * HH % p
    V = U1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - S1 * HHH) % p, H * Z1 * Z2 % p


def _double(curve: Curve, P):
    if P is None or P[1] == 0:
        return None
    p = curve.p
    X, Y, Z = P
    YY = Y * Y % p
    S = 4 * X * YY % p
    ZZ = Z * Z % p
    M = (3 * X * X + curve.a * ZZ * ZZ) % p
    X3 = (M * M - 2 * S) % p
    return X3, (M * (S - X3) - 8 * YY * YY) % p, 2 * Y * Z % p


def _verify_ecdsa(key: PublicKey, message: bytes, signature_der: bytes) -> bool:
    curve = key.curve
    try:
        (tag, body), = _children(signature_der)
        (t1, r_bytes), (t2, s_bytes) = _children(body)
    except ValueError:
        return False
    if tag != 0x30 or t1 != 0x02 or t2 != 0x02:
        return False
    r, s, n = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big"), curve.n
    if not (0 < r < n and 0 < s < n):
        return False
    digest = hashlib.new(curve.hash, message).digest()
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - n.bit_length())
    w = pow(s, -1, n)
    u1, u2 = e * w % n, r * w % n
    G, Q = (curve.gx, curve.gy, 1), (key.x, key.y, 1)
    GQ, point = _add(curve, G, Q), None
    for bit in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):  # Shamir's trick
        point = _double(curve, point)
        pick = ((u1 >> bit) & 1, (u2 >> bit) & 1)
        if pick != (0, 0):
            point = _add(curve, point, {(1, 0): G, (0, 1): Q, (1, 1): GQ}[pick])
    if point is None:
        return False
    X, _, Z = point
    x = X * pow(Z * Z % curve.p, -1, curve.p) % curve.p
    return x % n == r


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# --- the bundle's signature ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Signed:
    """What a verified signature says: every file's sha256, and the key that signed (its fingerprint)."""

    digests: dict[str, str]
    fingerprint: str


def read_statement(path: Path) -> tuple[dict, bytes, bytes]:
    """(the in-toto statement, the DSSE pre-authentication encoding, the DER signature) of a model.sig file;
    a BundleError when it is not a model-signing Sigstore bundle."""
    def bad(why: str) -> BundleError:
        return BundleError(f"{path}: not a model-signing signature ({why}); sign the bundle again (pipeline sign)")

    try:
        text = path.read_bytes().decode("utf-8")
        bundle = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not valid JSON: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise bad(f"mediaType is not {BUNDLE_MEDIA_TYPE}")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
        raise bad(f"no DSSE envelope of {PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise bad("the envelope must hold exactly one signature")
    try:
        payload = base64.b64decode(envelope.get("payload", ""), validate=True)
        signature = base64.b64decode(signatures[0].get("sig", ""), validate=True)
        statement = json.loads(payload)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise bad(f"unreadable payload or signature: {str(exc).splitlines()[0]}") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE \
            or statement.get("predicateType") != PREDICATE_TYPE:
        raise bad(f"the payload is not an in-toto statement of {PREDICATE_TYPE}")
    _key_hint(bundle, bad)
    return statement, pae(PAYLOAD_TYPE, payload), signature


def _key_hint(bundle: dict, bad) -> str | None:
    """verificationMaterial.publicKey.hint of a parsed model.sig, each level absent (or null) or of its JSON type;
    `bad(why)` makes the refusal."""
    material = bundle.get("verificationMaterial")
    if material is None:
        return None
    if not isinstance(material, dict):
        raise bad("verificationMaterial is not an object")
    public_key = material.get("publicKey")
    if public_key is None:
        return None
    if not isinstance(public_key, dict):
        raise bad("verificationMaterial.publicKey is not an object")
    hint = public_key.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise bad("verificationMaterial.publicKey.hint is not a string")
    return hint


def _signed_digests(statement: dict, path: Path) -> dict[str, str]:
    resources = (statement.get("predicate") or {}).get("resources")
    if not isinstance(resources, list):
        raise BundleError(f"{path}: the signed statement lists no files; sign the bundle again (pipeline sign)")
    digests = {}
    for item in resources:
        if not isinstance(item, dict) or item.get("algorithm") != "sha256" or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("digest"), str):
            raise BundleError(f"{path}: a signed file entry is not {{name, sha256 digest}}; sign the bundle again")
        digests[item["name"]] = item["digest"]
    return digests


def bundle_files(bundle_dir: Path, leave_out: tuple[str, ...] = (SIGNATURE_FILE,)) -> list[str]:
    """Every file of the bundle folder but its signature (the top-level one only, as model-signing leaves it out)
    and `leave_out`: names relative to the folder, '/' separated."""
    root = Path(bundle_dir)
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() or not p.is_dir())
    return sorted(name for name in names if name not in leave_out)


def check_signature(bundle_dir, public_key, sha256=None, signature: Path | None = None) -> Signed:
    """Verify `bundle_dir/model.sig` against `public_key` (a path or a PublicKey): the envelope's signature,
    then that the signed files are exactly the bundle's files with those sha256 digests. A BundleError names
    the file or the reason; nothing of the bundle is opened but its files' bytes. `sha256(path) -> hex`.
    `signature`: a new signature file inside the bundle to check in model.sig's place (pipeline sign's, before
    it replaces model.sig); both are left out of the files it must cover."""
    bundle_dir = Path(bundle_dir)
    key = public_key if isinstance(public_key, PublicKey) else PublicKey.read(public_key)
    path = bundle_dir / SIGNATURE_FILE if signature is None else Path(signature)
    check_regular(path)
    if not path.is_file():
        raise BundleError(f"{path}: not found; the bundle is not signed (sign it with pipeline sign BUNDLE --key "
                          "KEY.pem), and a public key was given, so it is refused")
    statement, message, signature_der = read_statement(path)
    hint = _hint_of(path)
    if hint and hint != key.fingerprint:
        raise BundleError(f"{path}: signed by another key ({hint[:16]}), not by {key.source} ({key.fingerprint[:16]}); "
                          "pass the public key the bundle was signed with, or sign it again")
    if not _verify_ecdsa(key, message, signature_der):
        raise BundleError(f"{path}: the signature does not verify with {key.source} (key {key.fingerprint[:16]}); "
                          "the bundle was signed with another key or its signature was altered")
    digests = _signed_digests(statement, path)
    leave_out = (SIGNATURE_FILE,) if signature is None else (
        SIGNATURE_FILE, Path(os.path.abspath(path)).relative_to(os.path.abspath(bundle_dir)).as_posix())
    present = bundle_files(bundle_dir, leave_out)
    for name in present:
        check_regular(bundle_dir / name)  # a link, a FIFO or a device, signed or not
        if name not in digests:
            raise BundleError(f"{bundle_dir / name}: not covered by the signature (added or renamed after signing)")
    for name in sorted(digests):
        if name not in present:
            raise BundleError(f"{bundle_dir / name}: signed but missing (removed or renamed after signing)")
    hasher = sha256 or file_sha256
    for name in sorted(digests):
        if hasher(bundle_dir / name) != digests[name]:
            raise BundleError(f"{bundle_dir / name}: sha256 differs from the signed digest (the file was changed "
                              "after signing)")
    return Signed(digests, key.fingerprint)


def signer_hint(bundle_dir) -> str | None:
    """The key hint a signature records (model-signing: the signing key's fingerprint), or None."""
    return _hint_of(Path(bundle_dir) / SIGNATURE_FILE)


def _hint_of(path: Path) -> str | None:
    try:
        bundle = json.loads(path.read_text())
        return _key_hint(bundle, ValueError) if isinstance(bundle, dict) else None
    except (OSError, ValueError):
        return None  # check_signature names what is wrong with the file


def trusted_key(public_key=None):
    """The key to check bundles with: the one given, else $PIPELINE_PUBLIC_KEY, else None (no check)."""
    return public_key if public_key is not None else (os.environ.get(PUBLIC_KEY_ENV) or None)


def file_sha256(path: Path) -> str:
    """A file's sha256 as lowercase hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
