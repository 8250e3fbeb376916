"""Secure defaults against asyncua's client: endpoints, users, roles, certificate trust."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Server, ua

from gateway.security.roles import Role
from gateway.security.users import UserStore


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


@pytest.mark.integration
async def test_secure_by_default(tmp_path: Path, secured_server: Any) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("viewer1", "viewer-secret", Role.viewer)
    server = await secured_server(insecure=False)
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


@pytest.mark.integration
async def test_unknown_certificate_is_refused_and_kept_for_review(tmp_path: Path, secured_server: Any,
                                                                 client_cert: Any) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("viewer1", "viewer-secret", Role.viewer)
    server = await secured_server(insecure=False)
    cert, key = await client_cert("unknown-client")
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


@pytest.mark.integration
async def test_passwords_and_anonymous(tmp_path: Path, secured_server: Any, client_cert: Any) -> None:
    data = tmp_path / "data"
    UserStore(data / "users.yaml").add("op1", "op-secret-1", Role.operator)
    server = await secured_server(insecure=True, allow_anonymous=False)
    cert, key = await client_cert("known-client")
    shutil.copy(cert, data / "pki" / "trusted" / cert.name)
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
