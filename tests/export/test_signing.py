"""Signing from the command line: export --sign-key, pipeline sign, pipeline keygen, the --public-key checks of
predict and verify, and interoperability both ways with the `model_signing` tool."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from runtime.signature import SIGNATURE_FILE, PublicKey


def _run(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def _fp(path) -> str:
    return PublicKey.read(path).fingerprint[:16]


def _model_signing(*args) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("model_signing")
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_dir(task_bundles, tmp_path):
    return shutil.copytree(task_bundles["multiclass"].run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("*bundle*"))


def test_export_signs_every_file_and_verify_says_by_which_key(run_dir, keys, tmp_path):
    result = _run("export", run_dir, "--format", "onnx", "--sign-key", keys.private(), "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "b"
    files = sorted(p.name for p in bundle.iterdir())
    assert files == ["README.txt", "golden.json", "loss.onnx", "manifest.json", "manifest.schema.json", "model.onnx",
                     SIGNATURE_FILE, "verification.json"]
    assert f"signed every file into {bundle / SIGNATURE_FILE} (key {_fp(keys.public())})" in result.output
    checked = _run("verify", bundle, "--public-key", keys.public())
    assert checked.exit_code == 0 and checked.output.splitlines()[0] == (
        f"signature: verified with {keys.public()} (key {_fp(keys.public())}), covering all 7 files")
    unchecked = _run("verify", bundle)
    assert unchecked.output.splitlines()[0] == (
        f"signature: {SIGNATURE_FILE} signed by key {_fp(keys.public())}, not checked: pass --public-key PUBLIC.pem "
        "(or set $PIPELINE_PUBLIC_KEY) to check it")
    refused = _run("predict", bundle, "--data", run_dir / "calibration.npy", "--public-key", keys.public("other"))
    assert (refused.exit_code, refused.output) == (2, (
        f"Error: {bundle / SIGNATURE_FILE}: signed by another key ({_fp(keys.public())}), not by "
        f"{keys.public('other')} ({_fp(keys.public('other'))}); pass the public key the bundle was signed with, or "
        "sign it again\n"))
    from_env = _run("evaluate", bundle, "--data", run_dir / "calibration.npy",
                    env={"PIPELINE_PUBLIC_KEY": str(keys.public("other"))})
    assert from_env.exit_code == 2 and "signed by another key" in from_env.output
    # interoperable: the model_signing tool verifies what we signed
    tool = _model_signing("verify", "key", bundle, "--signature", bundle / SIGNATURE_FILE,
                          "--public_key", keys.public())
    assert tool.returncode == 0 and "Verification succeeded" in tool.stdout + tool.stderr


def test_a_bundle_signed_by_the_model_signing_tool_verifies_here(task_bundles, keys, tmp_path):
    bundle = shutil.copytree(task_bundles["regression"].bundle, tmp_path / "b")
    tool = _model_signing("sign", "key", bundle, "--private_key", keys.private("p384"),
                          "--signature", bundle / SIGNATURE_FILE)
    assert tool.returncode == 0, tool.stderr
    checked = _run("verify", bundle, "--public-key", keys.public("p384"))
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[0].startswith(f"signature: verified with {keys.public('p384')}")
    (bundle / "README.txt").write_text("changed")
    refused = _run("verify", bundle, "--public-key", keys.public("p384"))
    assert (refused.exit_code, refused.output) == (2, f"Error: {bundle / 'README.txt'}: sha256 differs from the "
                                                      "signed digest (the file was changed after signing)\n")


def test_sign_an_earlier_bundle_and_sign_it_again_with_a_new_key(task_bundles, keys, tmp_path):
    bundle = shutil.copytree(task_bundles["binary"].bundle, tmp_path / "b")
    assert _run("verify", bundle).output.splitlines()[0] == (
        f"signature: none (pipeline sign {bundle} --key KEY.pem signs it)")
    result = _run("sign", bundle, "--key", keys.private("p521"))
    assert (result.exit_code, result.output) == (0, f"signed {bundle} (key {_fp(keys.public('p521'))}): "
                                                    f"{bundle / SIGNATURE_FILE}\n")
    assert _run("verify", bundle, "--public-key", keys.public("p521")).exit_code == 0
    assert _run("sign", bundle, "--key", keys.private("other")).exit_code == 0  # key rotation: the new key signs
    assert _run("verify", bundle, "--public-key", keys.public("other")).exit_code == 0
    assert _run("verify", bundle, "--public-key", keys.public("p521")).exit_code == 2
    (tmp_path / "notes").mkdir()
    refused = _run("sign", tmp_path / "notes", "--key", keys.private())
    assert (refused.exit_code, refused.output) == (2, f"Error: {tmp_path / 'notes'}: not a bundle (no bundle "
                                                      "manifest.json in it); pass a folder written by pipeline export\n")


def test_export_refuses_a_key_that_cannot_sign_before_exporting(run_dir, keys, tmp_path):
    result = _run("export", run_dir, "--format", "onnx", "--sign-key", keys.private("rsa"), "--out", tmp_path / "b")
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: --sign-key {keys.private('rsa')}: cannot sign with it: ")
    assert not (tmp_path / "b").exists()
    chain_only = _run("export", run_dir, "--sign-chain", keys.public(), "--out", tmp_path / "b")
    assert (chain_only.exit_code, chain_only.output) == (
        2, "Error: --sign-chain applies to a certificate signature; add --sign-cert CERT.pem\n")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_replaces_one(tmp_path, task_bundles):
    result = _run("keygen", tmp_path / "keys" / "signing", "--curve", "P-384")
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "signing.key.pem", tmp_path / "keys" / "signing.pub.pem"
    assert oct(private.stat().st_mode & 0o777) == "0o600" and PublicKey.read(public).curve.name == "P-384"
    again = _run("keygen", tmp_path / "keys" / "signing")
    assert (again.exit_code, again.output) == (2, f"Error: {private} already exists; keygen never replaces a key, so "
                                                  "choose another prefix\n")
    bundle = shutil.copytree(task_bundles["binary"].bundle, tmp_path / "b")
    assert _run("sign", bundle, "--key", private).exit_code == 0
    assert _run("verify", bundle, "--public-key", public).exit_code == 0
    # a password from the environment, never a flag: the key is written encrypted and signs with it
    env = {"PIPELINE_SIGN_KEY_PASSWORD": "correct horse"}
    assert _run("keygen", tmp_path / "locked", env=env).exit_code == 0
    assert "ENCRYPTED" in (tmp_path / "locked.key.pem").read_text()
    assert _run("sign", bundle, "--key", tmp_path / "locked.key.pem", env=env).exit_code == 0
    refused = _run("sign", bundle, "--key", tmp_path / "locked.key.pem", env={"PIPELINE_SIGN_KEY_PASSWORD": ""})
    assert refused.exit_code == 2 and "PIPELINE_SIGN_KEY_PASSWORD" in refused.output


def _certificates(folder: Path, keys) -> tuple[Path, Path, Path]:
    """A CA and a code-signing leaf certificate for keys.p256 (the PKI case)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = serialization.load_pem_private_key(keys.private().read_bytes(), None)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeline test CA")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model signer")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "leaf.crt"
    for path, cert in zip(paths, (ca, leaf)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keys.private(), paths[1], paths[0]


def test_a_certificate_signature_verifies_with_the_leaf_certificate_here_and_the_chain_in_model_signing(
        run_dir, keys, tmp_path):
    key, leaf, ca = _certificates(tmp_path, keys)
    result = _run("export", run_dir, "--format", "onnx", "--sign-key", key, "--sign-cert", leaf, "--sign-chain", ca,
                  "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    material = json.loads((tmp_path / "b" / SIGNATURE_FILE).read_text())["verificationMaterial"]
    assert "publicKey" not in material  # the certificate chain is the verification material
    assert _run("verify", tmp_path / "b", "--public-key", leaf).exit_code == 0
    assert _run("verify", tmp_path / "b", "--public-key", keys.public("other")).exit_code == 2
    tool = _model_signing("verify", "certificate", tmp_path / "b", "--signature", tmp_path / "b" / SIGNATURE_FILE,
                          "--certificate_chain", ca)
    assert tool.returncode == 0, tool.stdout + tool.stderr
    assert os.path.exists(tmp_path / "b" / SIGNATURE_FILE)


# --- refused in one line, nothing of the user's lost (issue: hardened where bundles travel) -------------------

@pytest.mark.parametrize("prefix, message", [
    ("", "Error: keygen PREFIX '.' names no file; pass a prefix such as keys/signing (it writes keys/signing.key.pem "
         "and keys/signing.pub.pem)\n"),
    ("{tmp}/notes.txt/signing", "Error: {tmp}/notes.txt: is a file, so keygen cannot make "
                                "{tmp}/notes.txt/signing.key.pem below it; choose a PREFIX in a folder\n")])
@pytest.mark.hostile
def test_keygen_refuses_a_prefix_that_names_no_file_or_lies_below_a_file(tmp_path, monkeypatch, prefix, message):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    result = _run("keygen", prefix.format(tmp=tmp_path))
    assert result.exit_code == 2
    assert result.output == message.format(tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notes.txt"]


@pytest.mark.hostile
def test_keygen_in_a_folder_it_cannot_write_is_one_line_and_leaves_no_half_pair(tmp_path, monkeypatch):
    real_open = os.open

    def public_refused(path, flags, mode=0o777):  # as a read-only folder answers (root ignores chmod here)
        if str(path).endswith(".pub.pem"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", public_refused)
    result = _run("keygen", tmp_path / "keys" / "signing")
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path / 'keys' / 'signing.pub.pem'}: cannot write the key pair there "
                             "(Permission denied); choose a PREFIX in a folder you can write\n")
    assert list((tmp_path / "keys").iterdir()) == []  # the private key written a moment before is gone too


@pytest.mark.hostile
def test_export_with_a_sign_cert_that_is_no_certificate_names_the_cert(run_dir, keys, tmp_path):
    (tmp_path / "notes.pem").write_text("not a certificate\n")
    result = _run("export", run_dir, "--format", "onnx", "--sign-key", keys.private(), "--sign-cert",
                  tmp_path / "notes.pem", "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert result.output == (f"Error: --sign-cert {tmp_path / 'notes.pem'}: not a PEM certificate (no BEGIN "
                             "CERTIFICATE block); pass the X.509 signing certificate of --sign-key\n")
    assert not (tmp_path / "b").exists()


def _signed_copy(signed_bundles, tmp_path) -> tuple[Path, bytes]:
    folder = shutil.copytree(signed_bundles["multiclass"], tmp_path / "bundle")
    return folder, (folder / SIGNATURE_FILE).read_bytes()


@pytest.mark.hostile
def test_sign_refuses_a_bundle_holding_a_symlink_and_keeps_its_signature(signed_bundles, keys, tmp_path):
    folder, before = _signed_copy(signed_bundles, tmp_path)
    (folder / "README.txt").unlink()
    (folder / "README.txt").symlink_to(tmp_path / "elsewhere.txt")  # dangling
    result = _run("sign", folder, "--key", keys.private("other"))
    assert result.exit_code == 2
    assert result.output == (f"Error: {folder / 'README.txt'}: is a symbolic link; a bundle holds regular files "
                             "only (put the file itself there), so it is not signed\n")
    assert (folder / SIGNATURE_FILE).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    verify = _run("verify", folder, "--public-key", keys.public())
    assert verify.exit_code == 2
    assert verify.output == (f"Error: {folder / 'README.txt'}: is a symbolic link; a bundle holds regular files only, "
                             "so it is refused (copy the file itself into the bundle, or re-export it)\n")


@pytest.mark.hostile
def test_sign_covers_a_signature_file_below_the_top_and_verify_then_accepts_it(signed_bundles, keys, tmp_path,
                                                                             monkeypatch):
    folder, _ = _signed_copy(signed_bundles, tmp_path)
    (folder / "sub").mkdir()
    shutil.copy(folder / SIGNATURE_FILE, folder / "sub" / SIGNATURE_FILE)
    monkeypatch.chdir(tmp_path)  # the bundle named relative to here, as a user types it
    result = _run("sign", folder.name, "--key", keys.private("other"))
    assert result.exit_code == 0, result.output
    signed = json.loads(__import__("base64").b64decode(json.loads((folder / SIGNATURE_FILE).read_text())
                                                       ["dsseEnvelope"]["payload"]))
    assert "sub/model.sig" in {r["name"] for r in signed["predicate"]["resources"]}
    assert _run("verify", folder, "--public-key", keys.public("other")).exit_code == 0


@pytest.mark.hostile
def test_sign_that_cannot_write_in_the_bundle_or_whose_new_signature_fails_keeps_the_old_one(
        signed_bundles, keys, tmp_path, monkeypatch):
    import tempfile

    import export.signing as signing
    from runtime.errors import BundleError

    folder, before = _signed_copy(signed_bundles, tmp_path)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, **kwargs):  # as a read-only bundle folder answers (root ignores chmod here)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = _run("sign", folder, "--key", keys.private("other"))
    assert result.exit_code == 2
    assert result.output == (f"Error: {folder}: cannot write its signature there (Permission denied); make the bundle "
                             "folder writable, or sign a copy of it\n")
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)

    def refused(*args, **kwargs):
        raise BundleError("the new signature does not check")

    monkeypatch.setattr(signing, "check_signature", refused)
    result = _run("sign", folder, "--key", keys.private("other"))
    assert result.exit_code == 2
    assert result.output == (f"Error: the new signature was refused, so {folder / SIGNATURE_FILE} was left as it "
                             "was: the new signature does not check\n")
    assert (folder / SIGNATURE_FILE).read_bytes() == before  # the old signature, byte for byte
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary signature left
    monkeypatch.undo()
    assert _run("verify", folder, "--public-key", keys.public()).exit_code == 0
