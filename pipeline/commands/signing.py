"""`pipeline sign` (a bundle exported earlier) and `pipeline keygen` (an EC key pair to sign with)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.options import NamedPath

from pipeline.commands.common import UserError, user_errors


@click.command()
@click.argument("bundle", type=NamedPath(file_okay=False, path_type=Path))
@click.option("--key", type=NamedPath(dir_okay=False, path_type=Path), required=True, metavar="KEY.pem",
              help="EC private key (P-256/384/521, PEM); its password, if any, from $PIPELINE_SIGN_KEY_PASSWORD.")
@click.option("--cert", type=NamedPath(dir_okay=False, path_type=Path), default=None, metavar="CERT.pem",
              help="Sign as this X.509 signing certificate of --key (a certificate signature, for a PKI).")
@click.option("--chain", type=NamedPath(dir_okay=False, path_type=Path), multiple=True, metavar="CERT.pem",
              help="With --cert: the certificate chain up to the root (repeat the flag).")
@user_errors
def sign(bundle, key, cert, chain):
    """Sign every file of a bundle into BUNDLE/model.sig (OpenSSF model-signing format), replacing an earlier
    signature; hosts given the public key refuse the bundle if any file changes.

    \b
    Examples:
      pipeline sign artifacts/demo/bundle --key signing.key.pem
      pipeline sign artifacts/demo/int8 --key keys/ops.key.pem
      pipeline sign BUNDLE --key leaf.key.pem --cert leaf.crt.pem --chain ca.crt.pem
    """
    from export.folder import is_bundle
    from export.signing import sign_and_check

    if not bundle.is_dir() or not is_bundle(bundle):
        raise UserError(f"{bundle}: not a bundle (no bundle manifest.json in it); pass a folder written by "
                        "pipeline export")
    fingerprint = sign_and_check(bundle, key, cert, chain)
    click.echo(f"signed {bundle} (key {fingerprint[:16]}): {bundle / 'model.sig'}")


@click.command()
@click.argument("prefix", type=click.Path(path_type=Path))  # an empty prefix: keygen says what a prefix is
@click.option("--curve", type=click.Choice(("P-256", "P-384", "P-521")), default="P-256", show_default=True)
@user_errors
def keygen(prefix, curve):
    """Make an EC key pair to sign bundles with: PREFIX.key.pem (private, readable by you only; encrypted with
    $PIPELINE_SIGN_KEY_PASSWORD when set) and PREFIX.pub.pem (give it to the hosts). Never replaces a file.

    \b
    Examples:
      pipeline keygen keys/signing
      pipeline keygen keys/2027 --curve P-384
    """
    from export.signing import keygen as make_keys

    private, public = make_keys(prefix, curve)
    click.echo(f"wrote {private} (keep it secret) and {public} (the hosts' --public-key)")
