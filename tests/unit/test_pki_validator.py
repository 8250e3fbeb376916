"""Client certificate checks: policy, usage, time, URI, trust through trusted/ and issuers/, CRLs,
the bounded rejected/ folder, and re-reading the folders only when they change."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.security.pki import RESCAN_S, ClientCertificateValidator
from gateway.security.pki_files import MAX_REJECTED, PkiError, PkiPaths, ensure_pki

NOW = datetime.now(UTC)
_KEYS: dict[int, rsa.RSAPrivateKey] = {}


def key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    if (bits, n) not in _KEYS:
        _KEYS[(bits, n)] = rsa.generate_private_key(65537, bits)
    return _KEYS[(bits, n)]


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, *, subject_key: rsa.RSAPrivateKey | None = None, issuer: x509.Certificate | None = None,
              issuer_key: rsa.RSAPrivateKey | None = None, ca: bool = False, uri: str | None = None,
              usage: dict | None = None, eku: list | None = None, days: tuple[int, int] = (-1, 30),
              serial: int | None = None) -> x509.Certificate:
    subject_key = subject_key or key()
    usage_flags = dict(digital_signature=True, content_commitment=False, key_encipherment=True,
                       data_encipherment=True, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                       encipher_only=False, decipher_only=False)
    usage_flags.update(usage or {})
    builder = (x509.CertificateBuilder().subject_name(name(cn))
               .issuer_name(issuer.subject if issuer else name(cn))
               .public_key(subject_key.public_key()).serial_number(serial or x509.random_serial_number())
               .not_valid_before(NOW + timedelta(days=days[0])).not_valid_after(NOW + timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**usage_flags), critical=True))
    if not ca or uri:  # a CA names no application
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri or f"urn:{cn}")]), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def sha1_signed(cert: x509.Certificate, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1 (which `cryptography` no longer signs certificates with):
    the signature algorithm OIDs are swapped (same length) and the TBS part signed again."""
    sha256_rsa = bytes.fromhex("2a864886f70d01010b")
    sha1_rsa = bytes.fromhex("2a864886f70d010105")
    der = cert.public_bytes(serialization.Encoding.DER).replace(sha256_rsa, sha1_rsa)
    tbs = x509.load_der_x509_certificate(der).tbs_certificate_bytes
    signature = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    return x509.load_der_x509_certificate(der[: -len(signature)] + signature)


def make_crl(issuer: x509.Certificate, issuer_key: rsa.RSAPrivateKey, revoked: list[x509.Certificate]):
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(NOW - timedelta(days=1)).next_update(NOW + timedelta(days=7)))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(NOW).build())
    return builder.sign(issuer_key, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def put(folder: Path, cert, file: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file
    target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return target


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    paths = PkiPaths(tmp_path / "pki")
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)
    return paths


def refused(validator: ClientCertificateValidator, cert: x509.Certificate,
            app: ua.ApplicationDescription | None = None) -> str:
    with pytest.raises(ServiceError) as err:
        validator.check(der(cert), app)
    return ua.StatusCode(err.value.code).name


def app(uri: str) -> ua.ApplicationDescription:
    return ua.ApplicationDescription(ApplicationUri=uri, ApplicationType=ua.ApplicationType.Client)


def test_trusted_self_signed_is_accepted_with_or_without_the_application(pki: PkiPaths) -> None:
    cert = make_cert("client1", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    put(pki.trusted, cert, "client1.der")
    validator = ClientCertificateValidator(pki)
    validator.check(der(cert), app("urn:client1"))
    validator.check(der(cert), None)  # at OpenSecureChannel: everything but the URI
    assert refused(validator, cert, app("urn:someone-else")) == "BadCertificateUriInvalid"


def test_policy_key_size_and_signature_algorithm(pki: PkiPaths) -> None:
    small = make_cert("small-key", subject_key=key(1024))
    sha1 = sha1_signed(make_cert("sha1"), key())
    assert sha1.signature_hash_algorithm.name == "sha1"
    for cert, file in ((small, "small.der"), (sha1, "sha1.der")):
        put(pki.trusted, cert, file)  # trusted, yet too weak for the offered policies
    validator = ClientCertificateValidator(pki)
    assert refused(validator, small) == "BadCertificatePolicyCheckFailed"
    assert refused(validator, sha1) == "BadCertificatePolicyCheckFailed"


def test_key_usage_and_extended_key_usage(pki: PkiPaths) -> None:
    no_signature = make_cert("no-signature", usage={"digital_signature": False})
    no_encipherment = make_cert("no-enc", usage={"key_encipherment": False, "data_encipherment": False})
    server_only = make_cert("server-only", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    for cert in (no_signature, no_encipherment, server_only):
        put(pki.trusted, cert, f"{cert.serial_number}.der")
    validator = ClientCertificateValidator(pki)
    for cert in (no_signature, no_encipherment, server_only):
        assert refused(validator, cert) == "BadCertificateUseNotAllowed"


def test_validity_period(pki: PkiPaths) -> None:
    expired = make_cert("expired", days=(-30, -1))
    future = make_cert("future", days=(2, 30))
    for cert in (expired, future):
        put(pki.trusted, cert, f"{cert.serial_number}.der")
    validator = ClientCertificateValidator(pki)
    assert refused(validator, expired) == "BadCertificateTimeInvalid"
    assert refused(validator, future) == "BadCertificateTimeInvalid"


def test_ca_in_trusted_vouches_for_what_it_signed_until_its_crl_revokes_it(pki: PkiPaths) -> None:
    ca_key = key(n=1)
    ca = make_cert("Site CA", subject_key=ca_key, ca=True)
    client = make_cert("ca-client", issuer=ca, issuer_key=ca_key)
    other = make_cert("other-client", issuer=ca, issuer_key=ca_key)
    put(pki.trusted, ca, "site-ca.der")
    validator = ClientCertificateValidator(pki)
    validator.check(der(client), app("urn:ca-client"))  # not itself in trusted/: its CA is
    put(pki.trusted_crl, make_crl(ca, ca_key, [client]), "site-ca.crl")
    assert refused(validator, client, app("urn:ca-client")) == "BadCertificateRevoked"
    validator.check(der(other), None)  # the CRL names only the one


def test_crl_not_signed_by_the_ca_is_ignored(pki: PkiPaths) -> None:
    ca_key = key(n=1)
    ca = make_cert("Site CA", subject_key=ca_key, ca=True)
    client = make_cert("ca-client", issuer=ca, issuer_key=ca_key)
    put(pki.trusted, ca, "site-ca.der")
    put(pki.trusted_crl, make_crl(ca, key(n=2), [client]), "forged.crl")  # the CA's name, another key
    ClientCertificateValidator(pki).check(der(client), None)


def test_issuers_complete_a_chain_but_trust_nothing(pki: PkiPaths) -> None:
    ca_key = key(n=1)
    ca = make_cert("Vendor CA", subject_key=ca_key, ca=True)
    client = make_cert("vendor-client", issuer=ca, issuer_key=ca_key)
    validator = ClientCertificateValidator(pki)
    put(pki.trusted, client, "vendor-client.der")
    assert refused(validator, client) == "BadCertificateChainIncomplete"  # its CA is nowhere
    (pki.trusted / "vendor-client.der").unlink()
    put(pki.issuers, ca, "vendor-ca.der")
    assert refused(validator, client) == "BadCertificateUntrusted"  # the CA completes, but does not trust
    put(pki.trusted, client, "vendor-client.der")
    validator.check(der(client), app("urn:vendor-client"))


def test_revoked_intermediate_ca(pki: PkiPaths) -> None:
    root_key, inter_key = key(n=1), key(n=2)
    root = make_cert("Root CA", subject_key=root_key, ca=True)
    inter = make_cert("Plant CA", subject_key=inter_key, issuer=root, issuer_key=root_key, ca=True)
    client = make_cert("plant-client", issuer=inter, issuer_key=inter_key)
    put(pki.trusted, root, "root.der")
    put(pki.issuers, inter, "plant.der")
    validator = ClientCertificateValidator(pki)
    validator.check(der(client), None)
    put(pki.trusted_crl, make_crl(root, root_key, [inter]), "root.crl")
    assert refused(validator, client) == "BadCertificateIssuerRevoked"


def test_a_client_certificate_that_is_a_ca_is_refused(pki: PkiPaths) -> None:
    root_key = key(n=1)
    root = make_cert("Root CA", subject_key=root_key, ca=True)
    sub_ca = make_cert("Sub CA", subject_key=key(n=2), issuer=root, issuer_key=root_key, ca=True, uri="urn:sub-ca")
    put(pki.trusted, root, "root.der")
    assert refused(ClientCertificateValidator(pki), sub_ca) == "BadCertificateUseNotAllowed"


def test_refused_certificates_are_kept_bounded_under_shell_safe_names(pki: PkiPaths) -> None:
    validator = ClientCertificateValidator(pki)
    hostile = make_cert("$(rm -rf ~) [x] 'y'", serial=1)
    assert refused(validator, hostile) == "BadCertificateUntrusted"
    (kept,) = pki.rejected.iterdir()
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.der", kept.name), kept.name
    assert kept.read_bytes() == der(hostile)
    past = NOW.timestamp() - 1000
    os.utime(kept, (past, past))  # the oldest
    for n in range(2, MAX_REJECTED + 6):
        refused(validator, make_cert(f"flood-{n}", serial=n))
    files = list(pki.rejected.iterdir())
    assert len(files) == MAX_REJECTED
    assert not kept.exists(), "the oldest is dropped first"


def test_folders_are_reread_only_when_they_change(pki: PkiPaths) -> None:
    clock = Clock()
    ca_key = key(n=1)
    ca = make_cert("Site CA", subject_key=ca_key, ca=True)
    client = make_cert("ca-client", issuer=ca, issuer_key=ca_key)
    newcomer = make_cert("newcomer")
    put(pki.trusted, ca, "site-ca.der")
    put(pki.trusted_crl, make_crl(ca, ca_key, []), "site-ca.crl")
    validator = ClientCertificateValidator(pki, clock=clock)
    validator.check(der(client), None)
    put(pki.trusted, newcomer, "newcomer.der")  # a file added: seen at the next check
    validator.check(der(newcomer), None)
    # A renewed CRL written over the old one changes no folder: seen within RESCAN_S, not re-read before.
    crl = put(pki.trusted_crl, make_crl(ca, ca_key, [client]), "site-ca.crl")
    os.utime(crl, ns=(crl.stat().st_atime_ns, crl.stat().st_mtime_ns + 1_000_000))
    validator.check(der(client), None)
    clock.t += RESCAN_S
    assert refused(validator, client) == "BadCertificateRevoked"


def test_one_warning_with_the_reason_per_certificate_and_minute(pki: PkiPaths,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    validator = ClientCertificateValidator(pki, clock=clock)
    cert = make_cert("stranger")
    with caplog.at_level(logging.INFO, logger="gateway.security.pki"):
        for _ in range(5):
            refused(validator, cert, app("urn:stranger"))
        clock.t += 61
        refused(validator, cert, app("urn:stranger"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "BadCertificateUntrusted" in warnings[0] and "urn:stranger" in warnings[0]
    assert "gateway pki trust" in warnings[0] and "4 more refusal(s)" in warnings[1]


def test_own_key_is_created_private_and_never_through_a_planted_link(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    stolen = tmp_path / "elsewhere" / "stolen.pem"
    stolen.parent.mkdir()
    link = PkiPaths(root).own_key
    link.parent.mkdir(parents=True)
    link.symlink_to(stolen)  # dangling: a naive open(O_CREAT) would write the key there
    old_umask = os.umask(0)
    try:
        paths = ensure_pki(root, "urn:test:gateway", ["localhost"])
    finally:
        os.umask(old_umask)
    assert not stolen.exists()
    assert paths.own_key.is_file() and not paths.own_key.is_symlink()
    assert paths.own_key.stat().st_mode & 0o777 == 0o600
    assert not [f for f in paths.own_key.parent.iterdir() if f.name != "key.pem"], "no temporary file left"


def test_own_key_refused_when_others_can_read_it_or_it_is_not_a_key(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    paths = ensure_pki(root, "urn:test:gateway", ["localhost"])
    paths.own_key.chmod(0o644)
    with pytest.raises(PkiError, match=rf"^private key {re.escape(str(paths.own_key))} .*mode 0644.*"
                                       rf"run: chmod 600 {re.escape(str(paths.own_key))}$"):
        ensure_pki(root, "urn:test:gateway", ["localhost"])
    paths.own_key.chmod(0o600)
    ensure_pki(root, "urn:test:gateway", ["localhost"])
    paths.own_key.write_bytes(b"not a key")
    with pytest.raises(PkiError, match=rf"^private key {re.escape(str(paths.own_key))} cannot be used"):
        ensure_pki(root, "urn:test:gateway", ["localhost"])
