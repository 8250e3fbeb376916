"""A new client's way in, end to end: refused, trusted with `gateway pki trust`, logged in as an
operator; a CA-signed client let in by its CA and shut out by the CA's CRL; a private key others
can read refused at start."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.security.pki_files import thumbprint
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sim_site.xml"
SITE = "urn:test:sim-site"


async def gateway_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The real `gateway` command in a child process (the server under test keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", *args, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def gateway(tmp_path: Path, free_port: int):
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data"))  # secure by default: no --insecure
    await gw.load()
    await gw.start()
    yield gw
    await gw.stop()


async def connect_and_write(gw: Gateway, app_uri: str, cert: Path, key: Path, value: float) -> None:
    client = Client(gw.config.endpoint, timeout=5)
    client.application_uri = app_uri
    await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
    client.set_user("operator1")
    client.set_password("op-secret-1")
    async with client:
        node = client.get_node(ua.NodeId("Sim1.Setpoint", await client.get_namespace_index(SITE)))
        await node.write_value(ua.Variant(value, ua.VariantType.Double))
        assert await node.read_value() == value


async def refused_with(gw: Gateway, app_uri: str, cert: Path, key: Path) -> str:
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await connect_and_write(gw, app_uri, cert, key, 1.0)
    return ua.StatusCode(refused.value.code).name


@pytest.mark.integration
async def test_refused_client_is_trusted_with_the_cli_and_logs_in_as_operator(
        gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = gateway.config.data_dir
    cert, key = tmp_path / "my-client.der", tmp_path / "my-client.pem"
    await setup_self_signed_certificate(key, cert, "urn:my-client", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                        {"commonName": "my-client"})
    tp = thumbprint(x509.load_der_x509_certificate(cert.read_bytes()))
    with caplog.at_level(logging.INFO):
        assert await refused_with(gateway, "urn:my-client", cert, key) == "BadCertificateUntrusted"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "gateway.security.pki"]
    assert len(warnings) == 1 and "gateway pki trust" in warnings[0].getMessage()
    asyncua_errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR  # the server's side
                      and r.name.startswith("asyncua") and not r.name.startswith("asyncua.client")
                      and "BadCertificate" in r.getMessage()]
    assert asyncua_errors == [], "the refusal is the gateway's one WARNING, not asyncua's ERROR"

    code, out, err = await gateway_cli("pki", "list", "--data-dir", str(data), cwd=tmp_path)
    assert code == 0, err
    rejected_part = out.split("rejected (1):", 1)[1].split("issuers", 1)[0]
    assert tp in rejected_part and "CN=my-client" in rejected_part
    own = x509.load_der_x509_certificate((data / "pki" / "own" / "cert.der").read_bytes())
    assert f"own certificate: {thumbprint(own)}" in out

    code, out, err = await gateway_cli("pki", "trust", tp[:12], "--data-dir", str(data), cwd=tmp_path)
    assert code == 0, err
    await connect_and_write(gateway, "urn:my-client", cert, key, 12.5)  # no restart

    # --data-dir before the sub-command works as well as after it.
    code, out, err = await gateway_cli("--data-dir", str(data), "pki", "reject", tp[:8], cwd=tmp_path)
    assert code == 0, err
    assert await refused_with(gateway, "urn:my-client", cert, key) == "BadCertificateUntrusted"
    assert (data.stat().st_mode & 0o777) == 0o700
    assert ((data / "pki" / "own" / "private" / "key.pem").stat().st_mode & 0o777) == 0o600


def _ca_signed(tmp_path: Path) -> tuple[Path, Path, Path, rsa.RSAPrivateKey, x509.Certificate, x509.Certificate]:
    """A site CA (PEM file), and a client certificate (DER) and key (PEM) it signed."""
    now = datetime.now(UTC)
    ca_key, client_key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)

    def build(subject: str, key: rsa.RSAPrivateKey, ca: bool, issuer: x509.Certificate | None) -> x509.Certificate:
        cn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(cn).issuer_name(issuer.subject if issuer else cn)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                                key_encipherment=not ca, data_encipherment=not ca, key_agreement=False,
                                                key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                                decipher_only=False), critical=True))
        if not ca:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                       .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:ca-client"),
                                                                   x509.DNSName("localhost")]), critical=False))
        return builder.sign(ca_key, hashes.SHA256())

    ca = build("Site CA", ca_key, True, None)
    client = build("ca-client", client_key, False, ca)
    ca_file, cert_file, key_file = tmp_path / "site-ca.pem", tmp_path / "ca-client.der", tmp_path / "ca-client.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(client.public_bytes(serialization.Encoding.DER))
    key_file.write_bytes(client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return ca_file, cert_file, key_file, ca_key, ca, client


@pytest.mark.integration
async def test_ca_signed_client_in_by_its_ca_and_out_by_its_crl(gateway: Gateway, tmp_path: Path) -> None:
    data = str(gateway.config.data_dir)
    ca_file, cert, key, ca_key, ca, client = _ca_signed(tmp_path)
    assert await refused_with(gateway, "urn:ca-client", cert, key) == "BadCertificateUntrusted"
    code, _, err = await gateway_cli("pki", "trust", str(ca_file), "--data-dir", data, cwd=tmp_path)
    assert code == 0, err
    await connect_and_write(gateway, "urn:ca-client", cert, key, 3.0)  # its CA is trusted, it is not itself
    now = datetime.now(UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(now - timedelta(minutes=1))
           .next_update(now + timedelta(days=7))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(client.serial_number)
                                    .revocation_date(now).build())
           .sign(ca_key, hashes.SHA256()))
    crl_file = tmp_path / "site-ca.crl"
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    code, _, err = await gateway_cli("pki", "trust", str(crl_file), "--data-dir", data, cwd=tmp_path)
    assert code == 0, err
    assert list((gateway.config.data_dir / "pki" / "trusted" / "crl").iterdir())
    assert await refused_with(gateway, "urn:ca-client", cert, key) == "BadCertificateRevoked"


@pytest.mark.integration
async def test_private_key_readable_by_others_is_refused_at_start(tmp_path: Path, free_port: int) -> None:
    data = tmp_path / "data"
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}", data_dir=data))
    await gw.load()
    await gw.start()
    await gw.stop()
    key = data / "pki" / "own" / "private" / "key.pem"
    os.chmod(key, 0o640)
    code, _, err = await gateway_cli("--nodeset", str(FIXTURE), "--endpoint", f"opc.tcp://127.0.0.1:{free_port}",
                                       "--data-dir", str(data), cwd=tmp_path)
    assert code == 2
    lines = [line for line in err.splitlines() if "chmod 600" in line]
    assert lines == [f"gateway: cannot start: private key {key} is accessible by group or others (mode 0640); "
                     f"run: chmod 600 {key}"], err
    assert "Traceback" not in err

