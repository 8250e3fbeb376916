"""The gateway's PKI folder: own certificate, trusted and rejected client certificates, issuers.

    pki/own/cert.der, pki/own/private/key.pem   created on first start (key mode 0600)
    pki/trusted/       client certificates (DER or PEM) the gateway accepts
    pki/issuers/       CA certificates that sign trusted client certificates
    pki/rejected/      certificates the gateway refused; move one to trusted/ to accept it

The trusted folder is re-read when it changes, so trusting a client needs no restart.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import generate_private_key, generate_self_signed_app_certificate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERT_DAYS = 5 * 365


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


def ensure_pki(root: Path, app_uri: str, hostnames: list[str], name: str = "OPC UA Gateway") -> PkiPaths:
    """Create the folders and, if missing, expired or made for another URI, the own certificate."""
    paths = PkiPaths(root)
    for folder in (paths.own_key.parent, paths.trusted, paths.issuers, paths.rejected):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.own_key.parent, 0o700)
    if _own_cert_usable(paths, app_uri):
        return paths
    if paths.own_key.exists():
        key = serialization.load_pem_private_key(paths.own_key.read_bytes(), password=None)
    else:
        key = generate_private_key()
        fd = os.open(paths.own_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
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
    paths.own_cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    log.info("created application certificate %s (thumbprint %s)", paths.own_cert, thumbprint(cert))
    return paths


def _own_cert_usable(paths: PkiPaths, app_uri: str) -> bool:
    if not (paths.own_cert.exists() and paths.own_key.exists()):
        return False
    try:
        cert = x509.load_der_x509_certificate(paths.own_cert.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return app_uri in uris and cert.not_valid_after_utc > datetime.now(UTC)


def thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # SHA-1: as UA defines it


def _file_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cns[0].value) if cns else "certificate")[:60]
    return f"{cn} [{thumbprint(cert)}].der"


class ClientCertificateValidator:
    """Accepts a client certificate only if it is in trusted/ (or signed by a CA there or in issuers/),
    within its validity and issued for the client's ApplicationUri. A refused certificate is saved in
    rejected/ for an administrator to review.

    Synchronous on purpose: it runs inside ActivateSession, which asyncua calls synchronously, and
    reads only a few small files, and only when the folders changed."""

    def __init__(self, paths: PkiPaths) -> None:
        self.paths = paths
        self._stamp: tuple | None = None
        self._trusted_der: set[bytes] = set()
        self._verifier: x509.verification.ClientVerifier | None = None

    def _folder_stamp(self) -> tuple:
        entries: list = []
        for folder in (self.paths.trusted, self.paths.issuers):
            entries.append(folder.stat().st_mtime_ns if folder.exists() else 0)
            entries.extend(sorted((f.name, f.stat().st_mtime_ns) for f in folder.glob("*") if f.is_file()))
        return tuple(entries)

    def _reload_if_changed(self) -> None:
        stamp = self._folder_stamp()
        if stamp == self._stamp:
            return
        trusted = [c for f in sorted(self.paths.trusted.glob("*")) if (c := _load_cert(f)) is not None]
        issuers = [c for f in sorted(self.paths.issuers.glob("*")) if (c := _load_cert(f)) is not None]
        self._trusted_der = {c.public_bytes(serialization.Encoding.DER) for c in trusted}
        # CA certificates in trusted/ or issuers/ vouch for the certificates they signed.
        anchors = [c for c in trusted + issuers if _is_ca(c)]
        self._verifier = None
        if anchors:
            store = x509.verification.Store(anchors)
            self._verifier = x509.verification.PolicyBuilder().store(store).build_client_verifier()
        self._stamp = stamp

    def check(self, der: bytes, app: ua.ApplicationDescription | None) -> None:
        """Raise ServiceError with the OPC UA status if the certificate is not acceptable."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise ServiceError(ua.StatusCodes.BadCertificateInvalid) from None
        try:
            self._check_time_and_uri(cert, app)
            self._reload_if_changed()
            if der in self._trusted_der or self._chain_trusts(cert):
                return
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        except ServiceError as err:
            self._reject(cert, app, err)
            raise

    def _chain_trusts(self, cert: x509.Certificate) -> bool:
        if self._verifier is None:
            return False
        try:
            self._verifier.verify(cert, [])
            return True
        except x509.verification.VerificationError:
            return False

    @staticmethod
    def _check_time_and_uri(cert: x509.Certificate, app: ua.ApplicationDescription | None) -> None:
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise ServiceError(ua.StatusCodes.BadCertificateInvalid) from None
        if app is not None and app.ApplicationUri not in san.get_values_for_type(x509.UniformResourceIdentifier):
            raise ServiceError(ua.StatusCodes.BadCertificateUriInvalid)

    def _reject(self, cert: x509.Certificate, app: ua.ApplicationDescription | None, err: ServiceError) -> None:
        target = self.paths.rejected / _file_name(cert)
        try:
            if not target.exists():
                target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        except OSError as exc:
            log.error("cannot save rejected certificate to %s: %s", target, exc)
        log.warning("refused client certificate of '%s' (%s): %s; saved as %s - move it to %s to trust it",
                    getattr(app, "ApplicationUri", "?"), thumbprint(cert), ua.StatusCode(err.code).name, target,
                    self.paths.trusted)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _load_cert(file: Path) -> x509.Certificate | None:
    if not file.is_file() or file.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
        return None
    data = file.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        log.error("%s is not a certificate; ignored", file)
        return None
