"""`gateway pki list|trust|reject`: review and trust client certificates without moving files by hand.

The running gateway re-reads its trusted/ and issuers/ folders when they change, so a certificate
trusted here lets its client in at the next attempt, without a restart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.datadir import add_data_dir_option, ensure_data_dir
from gateway.files import write_atomically
from gateway.security.pki_files import (
    CertEntry,
    PkiPaths,
    cert_file_name,
    entries,
    find,
    load_crls,
    move,
    parse_cert,
    parse_crl,
    thumbprint,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    pki = sub.add_parser("pki", help="list, trust and reject client certificates")
    add_data_dir_option(pki)
    cmds = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    lst = cmds.add_parser("list", help="the gateway's own certificate, trusted, rejected, issuers and CRLs")
    lst.set_defaults(func=_list)
    trust = cmds.add_parser("trust", help="trust a rejected certificate (by name or thumbprint prefix), or a file")
    trust.add_argument("certificate", metavar="NAME|THUMBPRINT|FILE",
                       help="a certificate in rejected/ (file name, common name, or the first 4+ characters of "
                            "its thumbprint), or a certificate or CRL file to copy in")
    trust.add_argument("--issuer", action="store_true",
                       help="a CA certificate FILE goes to issuers/: it completes chains but trusts nothing itself")
    trust.set_defaults(func=_trust)
    reject = cmds.add_parser("reject", help="stop trusting a certificate (moves it from trusted/ to rejected/)")
    reject.add_argument("certificate", metavar="NAME|THUMBPRINT")
    reject.set_defaults(func=_reject)
    for action in (lst, trust, reject):
        add_data_dir_option(action)


def _paths(args: argparse.Namespace) -> PkiPaths:
    return PkiPaths(Path(args.data_dir) / "pki")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if not paths.root.is_dir():
        return _error(f"no PKI folder at {paths.root} (the gateway creates it on its first start; "
                      "is --data-dir right?)")
    try:
        own = x509.load_der_x509_certificate(paths.own_cert.read_bytes())
        print(f"own certificate: {thumbprint(own)}  expires {own.not_valid_after_utc:%Y-%m-%d}  "
              f"{own.subject.rfc4514_string()}  ({paths.own_cert})")
    except (OSError, ValueError):
        print(f"own certificate: none yet ({paths.own_cert} is created on the first start)")
    for title, folder in (("trusted", paths.trusted), ("rejected", paths.rejected), ("issuers", paths.issuers)):
        found = entries(folder) if folder.is_dir() else []
        print(f"{title} ({len(found)}):")
        for entry in found:
            print(f"  {_line(entry)}")
    crls = [(folder, crl) for folder in (paths.trusted_crl, paths.issuers_crl) if folder.is_dir()
            for crl in load_crls(folder)]
    print(f"revocation lists ({len(crls)}):")
    for folder, crl in crls:
        next_update = f"{crl.next_update_utc:%Y-%m-%d}" if crl.next_update_utc else "-"
        print(f"  {crl.issuer.rfc4514_string()}  {len(crl)} revoked  next update {next_update}  "
              f"({folder.relative_to(paths.root)})")
    return 0


def _line(entry: CertEntry) -> str:
    return f"{entry.thumbprint}  expires {entry.expires:%Y-%m-%d}  {entry.subject}  {entry.file.name}"


def _trust(args: argparse.Namespace) -> int:
    paths = _paths(args)
    given = Path(args.certificate)
    if given.is_file():
        return _trust_file(paths, given, issuer=args.issuer)
    if args.issuer:
        return _error(f"--issuer takes a certificate file; {given} is not one")
    found = find(paths.rejected, args.certificate) if paths.rejected.is_dir() else []
    if len(found) != 1:
        return _not_one(found, args.certificate, paths.rejected)
    target = move(found[0], paths.trusted)
    print(f"trusted {found[0].subject} ({found[0].thumbprint}): now {target}; its client gets in at the next attempt")
    return 0


def _trust_file(paths: PkiPaths, file: Path, *, issuer: bool) -> int:
    try:
        data = file.read_bytes()
    except OSError as exc:
        return _error(f"cannot read {file}: {exc.strerror}")
    try:
        cert = parse_cert(data)
    except ValueError:
        cert = None
    if cert is None:
        try:
            crl = parse_crl(data)
        except ValueError:
            return _error(f"{file} is neither a certificate nor a revocation list (DER or PEM)")
        return _add_crl(paths, file, crl)
    _make_folders(paths)
    folder = paths.issuers if issuer else paths.trusted
    target = folder / cert_file_name(cert)
    write_atomically(target, cert.public_bytes(serialization.Encoding.DER), 0o644)
    for stale in find(paths.rejected, thumbprint(cert)):
        stale.file.unlink(missing_ok=True)
    what = "issuer (completes chains, trusts nothing itself)" if issuer else "trusted"
    print(f"{what}: {cert.subject.rfc4514_string()} ({thumbprint(cert)}) copied to {target}")
    return 0


def _add_crl(paths: PkiPaths, file: Path, crl: x509.CertificateRevocationList) -> int:
    """A CRL goes next to the CA that signed it: trusted/crl or issuers/crl."""
    for certs, crl_folder in ((paths.trusted, paths.trusted_crl), (paths.issuers, paths.issuers_crl)):
        if not certs.is_dir():
            continue
        for entry in entries(certs):
            if entry.cert.subject == crl.issuer and crl.is_signature_valid(entry.cert.public_key()):
                _make_folders(paths)
                target = crl_folder / f"{cert_file_name(entry.cert).removesuffix('.der')}.crl"
                write_atomically(target, crl.public_bytes(serialization.Encoding.DER), 0o644)
                print(f"revocation list of {crl.issuer.rfc4514_string()} ({len(crl)} revoked) copied to {target}")
                return 0
    return _error(f"{file}: no CA certificate in {paths.trusted} or {paths.issuers} signed this revocation list "
                  f"({crl.issuer.rfc4514_string()}); add the CA first")


def _reject(args: argparse.Namespace) -> int:
    paths = _paths(args)
    found = find(paths.trusted, args.certificate) if paths.trusted.is_dir() else []
    if len(found) != 1:
        return _not_one(found, args.certificate, paths.trusted)
    _make_folders(paths)
    target = move(found[0], paths.rejected)
    print(f"no longer trusted: {found[0].subject} ({found[0].thumbprint}), moved to {target}; "
          "sessions already open stay open until they end")
    return 0


def _make_folders(paths: PkiPaths) -> None:
    ensure_data_dir(paths.root.parent)
    for folder in paths.folders():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def _not_one(found: list[CertEntry], key: str, folder: Path) -> int:
    if not found:
        return _error(f"no certificate in {folder} matches '{key}' (see `gateway pki list`)")
    lines = "\n".join(f"  {_line(e)}" for e in found)
    return _error(f"'{key}' matches {len(found)} certificates in {folder}; give more of the thumbprint:\n{lines}")
