"""Secure defaults against asyncua's client: endpoints, users, roles, certificate trust."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from asyncua import Client, Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.security.roles import Role
from gateway.security.setup import configure_security
from gateway.security.users import UserStore
from gateway.session import GatewayInternalServer
from gateway.transport import GatewayServer

APP_URI = "urn:opcua-gateway:test"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _server(data: Path, *, insecure: bool, allow_anonymous: bool = True) -> Server:
    server = GatewayServer(iserver=GatewayInternalServer())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{_port()}")
    await server.set_application_uri(APP_URI)
    await configure_security(server, data, insecure=insecure, allow_anonymous=allow_anonymous, app_uri=APP_URI,
                             hostnames=["localhost", "127.0.0.1"])
    await server.start()
    return server


def _url(server: Server) -> str:
    return server.endpoint.geturl()


async def _secure_client(server: Server, name: str, cert: Path, key: Path, policy: str = "Basic256Sha256",
                         user: str | None = None, password: str | None = None) -> Client:
    client = Client(_url(server), timeout=5)
    client.application_uri = f"urn:{name}"  # must match the certificate
    await client.set_security_string(f"{policy},SignAndEncrypt,{cert},{key}")
    if user:
        client.set_user(user)
        client.set_password(password)
    return client


async def _client_cert(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, f"urn:{name}", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                        {"commonName": name})
    return cert, key


@pytest.mark.integration
async def test_secure_by_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("viewer1", "viewer-secret", Role.viewer)
    server = await _server(data, insecure=False)
    try:
        for folder in ("own", "trusted", "rejected", "issuers"):
            assert (data / "pki" / folder).is_dir()
        endpoints = await Client(_url(server)).connect_and_get_server_endpoints()
        offered = {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode.name) for e in endpoints}
        assert offered == {(p, m) for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
                           for m in ("Sign", "SignAndEncrypt")}
        # A client with SecurityPolicy None finds no endpoint to open a channel on.
        with pytest.raises(Exception):  # noqa: B017 - asyncua raises different errors per version
            async with Client(_url(server), timeout=3):
                pass
    finally:
        await server.stop()


@pytest.mark.integration
async def test_unknown_certificate_is_refused_and_kept_for_review(tmp_path: Path) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("viewer1", "viewer-secret", Role.viewer)
    server = await _server(data, insecure=False)
    cert, key = await _client_cert(tmp_path, "unknown-client")
    try:
        client = await _secure_client(server, "unknown-client", cert, key)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            async with client:
                pass
        assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted
        rejected = list((data / "pki" / "rejected").glob("*.der"))
        assert len(rejected) == 1 and rejected[0].read_bytes() == cert.read_bytes()
        # The administrator trusts it by moving it; no restart needed.
        shutil.move(rejected[0], data / "pki" / "trusted" / rejected[0].name)
        client = await _secure_client(server, "unknown-client", cert, key, "Aes256Sha256RsaPss", "viewer1",
                                      "viewer-secret")
        async with client:
            assert await client.nodes.server_state.read_value() == ua.ServerState.Running
    finally:
        await server.stop()


@pytest.mark.integration
async def test_passwords_and_anonymous(tmp_path: Path) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("op1", "op-secret-1", Role.operator)
    server = await _server(data, insecure=True, allow_anonymous=False)
    cert, key = await _client_cert(tmp_path, "known-client")
    shutil.copy(cert, data / "pki" / "trusted" / cert.name)
    try:
        async def connect(user: str | None, password: str | None) -> None:
            client = await _secure_client(server, "known-client", cert, key, user=user, password=password)
            async with client:
                await client.nodes.server_state.read_value()

        await connect("op1", "op-secret-1")
        for user, password in (("op1", "wrong-password"), ("admin", "admin"), ("nobody", "op-secret-1")):
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await connect(user, password)
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(ua.UaStatusCodeError) as anonymous:
            await connect(None, None)
        assert anonymous.value.code == ua.StatusCodes.BadIdentityTokenRejected
    finally:
        await server.stop()
