"""The gateway's PKI folder on disk: own key and certificate, trusted, issuers, rejected, CRLs.

    pki/own/cert.der, pki/own/private/key.pem   created on first start (key mode 0600)
    pki/trusted/        certificates the gateway trusts: client certificates, or CAs whose
                        certificates are all trusted
    pki/trusted/crl/    revocation lists of the CAs in trusted/
    pki/issuers/        CA certificates that complete a chain but are not trusted themselves
    pki/issuers/crl/    revocation lists of the CAs in issuers/
    pki/rejected/       certificates the gateway refused (at most MAX_REJECTED, oldest dropped)

Certificates are DER or PEM files (.der, .pem, .crt, .cer); revocation lists .crl, .der or .pem.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto.cert_gen import generate_private_key, generate_self_signed_app_certificate
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.files import write_atomically

log = logging.getLogger(__name__)

CERT_DAYS = 5 * 365
MAX_REJECTED = 100
CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
CRL_SUFFIXES = (".crl", ".der", ".pem")


class PkiError(ValueError):
    """The PKI folder cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class PkiPaths:
    root: Path

    @property
    def own_cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def own_key(self) -> Path:
        return self.root / "own" / "private" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def issuers(self) -> Path:
        return self.root / "issuers"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def trusted_crl(self) -> Path:
        return self.trusted / "crl"

    @property
    def issuers_crl(self) -> Path:
        return self.issuers / "crl"

    def folders(self) -> tuple[Path, ...]:
        return (self.root, self.own_cert.parent, self.own_key.parent, self.trusted, self.trusted_crl, self.issuers,
                self.issuers_crl, self.rejected)


def ensure_pki(root: Path, app_uri: str, hostnames: list[str], name: str = "OPC UA Gateway") -> PkiPaths:
    """Create the folders and, if missing, expired or made for another URI, the own certificate.

    Raises PkiError if the private key is readable by group or others."""
    paths = PkiPaths(root)
    for folder in paths.folders():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.own_key.parent, 0o700)
    check_key_mode(paths.own_key)
    if paths.own_key.exists():
        try:
            key = serialization.load_pem_private_key(paths.own_key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PkiError(f"private key {paths.own_key} cannot be used ({exc}); move it aside and a new one "
                           "is created (clients then have to trust the new certificate)") from None
        if _own_cert_usable(paths, app_uri, key):
            return paths
    else:
        key = generate_private_key()
        write_private(paths.own_key, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                                       serialization.NoEncryption()))
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri)]
    for host in dict.fromkeys(hostnames):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = generate_self_signed_app_certificate(
        key, name, {}, alt_names, extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=CERT_DAYS,
    )
    write_atomically(paths.own_cert, cert.public_bytes(serialization.Encoding.DER), 0o644)
    log.info("created application certificate %s (thumbprint %s)", paths.own_cert, thumbprint(cert))
    return paths


def check_key_mode(key: Path) -> None:
    """Refuse a private key that group or others may read or write."""
    try:
        mode = key.stat().st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise PkiError(f"private key {key} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                       f"run: chmod 600 {key}")


def write_private(target: Path, data: bytes) -> None:
    """Write a secret: created 0600 under a fresh name (O_EXCL: never an existing file or a planted
    link), then renamed over `target`, so no reader ever sees it with wider permissions or half-written."""
    write_atomically(target, data, 0o600)


def _own_cert_usable(paths: PkiPaths, app_uri: str, key: object) -> bool:
    """The own certificate exists, is for this URI and this key, and has not expired."""
    try:
        cert = x509.load_der_x509_certificate(paths.own_cert.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    same_key = cert.public_key() == key.public_key()  # type: ignore[attr-defined]
    return same_key and app_uri in uris and cert.not_valid_after_utc > datetime.now(UTC)


def thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # SHA-1: as UA defines it


def common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def cert_file_name(cert: x509.Certificate) -> str:
    """`<common name>_<thumbprint>.der`, of letters, digits, `_`, `.` and `-` only, never starting
    with `-` or `.`: safe to type or paste into a shell unquoted."""
    cn = re.sub(r"[^A-Za-z0-9_.-]+", "_", common_name(cert)).lstrip("-.")[:60] or "certificate"
    return f"{cn}_{thumbprint(cert)}.der"


def load_cert(file: Path) -> x509.Certificate | None:
    """The certificate in a DER or PEM file; None (and an error logged) if it is not one."""
    if not file.is_file() or file.suffix.lower() not in CERT_SUFFIXES:
        return None
    try:
        return parse_cert(file.read_bytes())
    except (OSError, ValueError) as exc:
        log.error("%s is not a readable certificate (%s); ignored", file, exc)
        return None


def parse_cert(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def load_crls(folder: Path) -> list[x509.CertificateRevocationList]:
    crls = []
    for file in sorted(folder.glob("*")):
        if not file.is_file() or file.suffix.lower() not in CRL_SUFFIXES:
            continue
        try:
            crls.append(parse_crl(file.read_bytes()))
        except (OSError, ValueError) as exc:
            log.error("%s is not a readable revocation list (%s); ignored", file, exc)
    return crls


@dataclass(frozen=True)
class CertEntry:
    """One certificate file of a PKI folder."""

    file: Path
    cert: x509.Certificate

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def expires(self) -> datetime:
        return self.cert.not_valid_after_utc


def entries(folder: Path) -> list[CertEntry]:
    """The certificates of a folder, by file name."""
    return [CertEntry(f, c) for f in sorted(folder.glob("*")) if (c := load_cert(f)) is not None]


def save_rejected(paths: PkiPaths, cert: x509.Certificate, limit: int = MAX_REJECTED) -> Path:
    """Keep a refused certificate for review, at most `limit` files (the oldest are dropped), so a
    client cycling through certificates cannot fill the disk."""
    target = paths.rejected / cert_file_name(cert)
    if target.exists():
        os.utime(target)  # seen again: now the newest
    else:
        write_atomically(target, cert.public_bytes(serialization.Encoding.DER), 0o644)
    files = [f for f in paths.rejected.iterdir() if f.is_file()]
    if len(files) > limit:
        def age(f: Path) -> int:
            try:
                return f.stat().st_mtime_ns
            except FileNotFoundError:
                return 0

        for old in sorted(files, key=age)[: len(files) - limit]:
            if old != target:
                old.unlink(missing_ok=True)
    return target


def find(folder: Path, key: str) -> list[CertEntry]:
    """The certificates of `folder` that `key` names: file name, file name without suffix, common
    name, or a prefix of at least 4 characters of the thumbprint."""
    key_l = key.lower()
    found = []
    for entry in entries(folder):
        if key in (entry.file.name, entry.file.stem, common_name(entry.cert)) or (
                len(key_l) >= 4 and entry.thumbprint.startswith(key_l)):
            found.append(entry)
    return found


def move(entry: CertEntry, to_folder: Path) -> Path:
    target = to_folder / entry.file.name
    os.replace(entry.file, target)
    return target


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_issuer(cert: x509.Certificate) -> bool:
    """A CA that signs other certificates, as opposed to an application's self-signed certificate,
    which often says cA=TRUE too but names its application URI."""
    if not is_ca(cert):
        return False
    try:
        if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return not san.get_values_for_type(x509.UniformResourceIdentifier)


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
