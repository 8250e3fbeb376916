"""Which client certificates the gateway accepts (folder layout: gateway.security.pki_files).

A certificate is accepted if it meets the offered security policies (RSA key of 2048 to 4096 bits,
signed with SHA-256/384/512), is within its validity, names the client's ApplicationUri, may be
used by an application (KeyUsage digitalSignature and key or data encipherment; ExtendedKeyUsage,
if present, clientAuth), is trusted (itself in trusted/, or signed through a chain that reaches a
CA in trusted/; CAs in issuers/ complete a chain without being trusted), and neither it nor a CA
of its chain is revoked by a CRL of its issuer.

Chains are built and checked by `cryptography`'s x509.verification. asyncua's TrustStore and
CertificateValidator are not used: the TrustStore makes no difference between trusted/ and
issuers/, revokes every certificate whose serial number appears in any CRL (serials are unique
only per issuer) without checking who signed the CRL, logs each untrusted certificate as an ERROR
with a traceback, and loads asynchronously, while this check runs synchronously inside the stack
(OpenSecureChannel, ActivateSession); its CertificateValidator needs an ApplicationDescription,
which OpenSecureChannel does not have, and demands nonRepudiation, which OPC UA's validation
rules (Part 4) do not check and some clients' certificates lack.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.security.pki_files import (
    PkiError,
    PkiPaths,
    common_name,
    ensure_pki,
    is_ca,
    is_issuer,
    is_self_signed,
    load_cert,
    load_crls,
    save_rejected,
    thumbprint,
)

__all__ = ["ClientCertificateValidator", "PkiError", "PkiPaths", "ensure_pki", "thumbprint"]

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048  # the AsymmetricKeyLength range of Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss
MAX_RSA_BITS = 4096
ALLOWED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
RESCAN_S = 1.0  # files rewritten in place (a renewed CRL) are seen within this time; added or removed ones at once
REPEAT_QUIET_S = 60.0  # the same certificate refused again within this time is counted, not logged again


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _TrustState:
    trusted_der: frozenset[bytes] = frozenset()
    roots: list[x509.Certificate] = field(default_factory=list)  # self-signed CAs of trusted/ and issuers/
    intermediates: list[x509.Certificate] = field(default_factory=list)  # the other CAs
    crls_by_ca: dict[bytes, list[x509.CertificateRevocationList]] = field(default_factory=dict)  # CA DER -> its CRLs

    def known_issuer(self, cert: x509.Certificate) -> bool:
        return any(ca.subject == cert.issuer for ca in (*self.roots, *self.intermediates))


def _require_ca(policy: verification.Policy, cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("a CA certificate needs basicConstraints cA=TRUE")


# OPC UA application certificates carry extensions the Web PKI profile (cryptography's default) does
# not expect; the leaf's extensions are checked here by OPC UA's rules, a CA's only for cA=TRUE.
_POLICY = verification.PolicyBuilder().extension_policies(
    ca_policy=verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, _require_ca),
    ee_policy=verification.ExtensionPolicy.permit_all(),
)


class ClientCertificateValidator:
    """Checks a client's certificate; a refusal is a ServiceError with the OPC UA status, one WARNING
    with the reason, and, for a certificate not in trusted/, a copy in rejected/ for review.

    Synchronous on purpose: the stack calls it inside OpenSecureChannel and ActivateSession. It
    stats four folders per call, lists them at most once per RESCAN_S, and reads files only when
    they changed."""

    def __init__(self, paths: PkiPaths, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self._clock = clock
        self._state = _TrustState()
        self._dir_stamp: tuple[int, ...] | None = None
        self._file_stamp: tuple | None = None
        self._scanned_at = float("-inf")
        self._last_logged: dict[tuple[str, int], tuple[float, int]] = {}
        self._trust_dir_names = tuple(str(d) for d in self._trust_dirs())

    def check(self, der: bytes, app: ua.ApplicationDescription | None) -> None:
        """Raise ServiceError with the OPC UA status if the certificate is not acceptable.

        `app` is the client's description from CreateSession; None (at OpenSecureChannel, before a
        session exists) checks everything but the ApplicationUri."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            log.warning("refused a client certificate: BadCertificateInvalid: not a DER X.509 certificate")
            raise ServiceError(ua.StatusCodes.BadCertificateInvalid) from None
        state = self._current_state()
        try:
            self._validate(cert, app, state)
        except _Refused as refused:
            self._report(cert, der, app, refused, state)
            raise ServiceError(refused.status) from None

    # -- the checks ------------------------------------------------------------------------------------

    def _validate(self, cert: x509.Certificate, app: ua.ApplicationDescription | None, state: _TrustState) -> None:
        _check_policy(cert)
        _check_time(cert)
        _check_uri(cert, app)
        _check_usage(cert)
        chain = self._trusted_chain(cert, state)
        _check_revocation(chain, state)

    @staticmethod
    def _trusted_chain(cert: x509.Certificate, state: _TrustState) -> list[x509.Certificate]:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in state.trusted_der and cert.issuer == cert.subject:  # these very bytes were trusted
            return [cert]
        if is_self_signed(cert):
            raise _Refused(ua.StatusCodes.BadCertificateUntrusted, "self-signed and not in trusted/")
        try:
            if not state.roots:
                raise verification.VerificationError("no CA certificate in trusted/ or issuers/")
            verifier = _POLICY.store(verification.Store(state.roots)).build_client_verifier()
            chain = verifier.verify(cert, state.intermediates).chain
        except verification.VerificationError as exc:
            if not state.known_issuer(cert):
                status = (ua.StatusCodes.BadCertificateChainIncomplete if der in state.trusted_der
                          else ua.StatusCodes.BadCertificateUntrusted)
                raise _Refused(status, f"its issuer ({cert.issuer.rfc4514_string()}) is in neither trusted/ "
                                       "nor issuers/") from None
            raise _Refused(ua.StatusCodes.BadCertificateInvalid, f"its chain does not verify: {exc}") from None
        if not any(c.public_bytes(serialization.Encoding.DER) in state.trusted_der for c in chain):
            raise _Refused(ua.StatusCodes.BadCertificateUntrusted,
                           "neither it nor a CA of its chain is in trusted/")
        return chain

    # -- the folders, re-read only when they changed ---------------------------------------------------

    def _current_state(self) -> _TrustState:
        dir_stamp = tuple(_mtime(d) for d in self._trust_dir_names)
        now = self._clock()
        if dir_stamp == self._dir_stamp and now - self._scanned_at < RESCAN_S:
            return self._state
        file_stamp = tuple((f.name, _mtime(f)) for d in self._trust_dirs() if d.is_dir() for f in sorted(d.iterdir()))
        self._scanned_at = now
        if dir_stamp != self._dir_stamp or file_stamp != self._file_stamp:
            self._state = self._load()
            self._dir_stamp, self._file_stamp = dir_stamp, file_stamp
        return self._state

    def _trust_dirs(self) -> tuple[Path, ...]:
        p = self.paths
        return p.trusted, p.trusted_crl, p.issuers, p.issuers_crl

    def _load(self) -> _TrustState:
        trusted = _certs(self.paths.trusted)
        issuers = _certs(self.paths.issuers)
        cas = list({c.public_bytes(serialization.Encoding.DER): c for c in trusted + issuers if is_issuer(c)}.values())
        state = _TrustState(
            trusted_der=frozenset(c.public_bytes(serialization.Encoding.DER) for c in trusted),
            roots=[c for c in cas if is_self_signed(c)],
            intermediates=[c for c in cas if not is_self_signed(c)],
        )
        for crl in load_crls(self.paths.trusted_crl) + load_crls(self.paths.issuers_crl):
            signers = [ca for ca in cas if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())]
            if not signers:
                log.warning("revocation list of %s is signed by no CA in trusted/ or issuers/; ignored",
                            crl.issuer.rfc4514_string())
            for ca in signers:
                state.crls_by_ca.setdefault(ca.public_bytes(serialization.Encoding.DER), []).append(crl)
        for ca in cas:
            if ca.public_bytes(serialization.Encoding.DER) not in state.crls_by_ca:
                log.warning("CA %s has no revocation list in %s or %s: the certificates it signed are not checked "
                            "for revocation", ca.subject.rfc4514_string(), self.paths.trusted_crl,
                            self.paths.issuers_crl)
        log.info("client certificates: %d trusted, %d CA(s), %d revocation list(s)", len(trusted), len(cas),
                 sum(len(v) for v in state.crls_by_ca.values()))
        return state

    # -- refusals ----------------------------------------------------------------------------------------

    def _report(self, cert: x509.Certificate, der: bytes, app: ua.ApplicationDescription | None,
                refused: _Refused, state: _TrustState) -> None:
        tp = thumbprint(cert)
        saved = None
        if der not in state.trusted_der:
            try:
                saved = save_rejected(self.paths, cert)
            except OSError as exc:
                log.error("cannot save the refused certificate in %s: %s", self.paths.rejected, exc)
        now = self._clock()
        key = (tp, refused.status)
        last, repeats = self._last_logged.get(key, (float("-inf"), 0))
        if now - last < REPEAT_QUIET_S:
            self._last_logged[key] = (last, repeats + 1)
            return
        if len(self._last_logged) > 1000:  # a client cycling through certificates: keep this bounded
            self._last_logged.clear()
        self._last_logged[key] = (now, 0)
        uri = f", application {app.ApplicationUri}" if app is not None else ""
        again = f" ({repeats} more refusal(s) since the last report)" if repeats else ""
        hint = ""
        if saved is not None and refused.status == ua.StatusCodes.BadCertificateUntrusted:
            hint = (f"; saved as {saved}; to trust it: gateway pki trust {tp[:12]} "
                    f"--data-dir {self.paths.root.parent}")
        log.warning("refused client certificate '%s' (thumbprint %s%s): %s: %s%s%s", common_name(cert), tp, uri,
                    ua.StatusCode(refused.status).name, refused.reason, hint, again)


def _check_policy(cert: x509.Certificate) -> None:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Refused(ua.StatusCodes.BadCertificatePolicyCheckFailed,
                       f"a {type(key).__name__} key; the offered security policies need RSA")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise _Refused(ua.StatusCodes.BadCertificatePolicyCheckFailed,
                       f"an RSA key of {key.key_size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted")
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, ALLOWED_HASHES):
        name = algorithm.name.upper() if algorithm is not None else cert.signature_algorithm_oid.dotted_string
        raise _Refused(ua.StatusCodes.BadCertificatePolicyCheckFailed,
                       f"signed with {name}; SHA-256, SHA-384 or SHA-512 are accepted")


def _check_time(cert: x509.Certificate) -> None:
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _Refused(ua.StatusCodes.BadCertificateTimeInvalid,
                       f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                       f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def _check_uri(cert: x509.Certificate, app: ua.ApplicationDescription | None) -> None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _Refused(ua.StatusCodes.BadCertificateInvalid, "no subjectAltName with the application URI") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if app is not None and app.ApplicationUri not in uris:
        raise _Refused(ua.StatusCodes.BadCertificateUriInvalid,
                       f"issued for {', '.join(uris) or 'no URI'}, not for {app.ApplicationUri}")


def _check_usage(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _Refused(ua.StatusCodes.BadCertificateUseNotAllowed, "no keyUsage extension") from None
    if not (usage.digital_signature and (usage.key_encipherment or usage.data_encipherment)):
        raise _Refused(ua.StatusCodes.BadCertificateUseNotAllowed,
                       "keyUsage lacks digitalSignature, or both keyEncipherment and dataEncipherment")
    if is_ca(cert) and not is_self_signed(cert):
        raise _Refused(ua.StatusCodes.BadCertificateUseNotAllowed, "a CA certificate, not an application's")
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH not in extended:
        raise _Refused(ua.StatusCodes.BadCertificateUseNotAllowed, "extendedKeyUsage lacks clientAuth")


def _check_revocation(chain: list[x509.Certificate], state: _TrustState) -> None:
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        for crl in state.crls_by_ca.get(issuer.public_bytes(serialization.Encoding.DER), []):
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                if position == 0:
                    raise _Refused(ua.StatusCodes.BadCertificateRevoked,
                                   f"revoked by {issuer.subject.rfc4514_string()}")
                raise _Refused(ua.StatusCodes.BadCertificateIssuerRevoked,
                               f"its CA {cert.subject.rfc4514_string()} is revoked")


def _certs(folder: Path) -> list[x509.Certificate]:
    return [c for f in sorted(folder.glob("*")) if (c := load_cert(f)) is not None] if folder.is_dir() else []


def _mtime(path: Path | str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0
