"""Secure defaults for the gateway's asyncua server: asyncua's defaults trust every certificate,
accept 'admin' with any password and offer SecurityPolicy None."""

from __future__ import annotations

import logging
from pathlib import Path

from asyncua import Server, ua

from gateway.security.pki import ClientCertificateValidator, PkiPaths, ensure_pki
from gateway.security.roles import GatewayRuleset
from gateway.security.users import GatewayUserManager, UserStore

log = logging.getLogger(__name__)

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


async def configure_security(server: Server, data_dir: Path, *, insecure: bool = False, allow_anonymous: bool = True,
                             app_uri: str, hostnames: list[str]) -> PkiPaths:
    """Certificate, endpoints, identity tokens, users and the client-certificate check. Call before start()."""
    paths = ensure_pki(data_dir / "pki", app_uri, hostnames)
    await server.load_certificate(str(paths.own_cert))
    await server.load_private_key(str(paths.own_key))
    policies = list(SECURE_POLICIES)
    if insecure:
        policies.insert(0, ua.SecurityPolicyType.NoSecurity)
        log.warning("--insecure: SecurityPolicy None is offered; traffic on it is neither signed nor encrypted")
    server.set_security_policy(policies, permission_ruleset=GatewayRuleset())
    tokens: list[type] = [ua.UserNameIdentityToken]
    if allow_anonymous:
        tokens.insert(0, ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    server.iserver.set_user_manager(GatewayUserManager(UserStore(data_dir / "users.yaml"), allow_anonymous))
    # Checked against the secure channel's certificate, the one the client proved: when the channel
    # opens (gateway.transport, without the ApplicationUri, which only CreateSession brings) and at
    # ActivateSession (GatewaySession), not at CreateSession: a client on SecurityPolicy None may send
    # a certificate that the specification says to ignore.
    server.iserver.client_certificates = ClientCertificateValidator(paths)
    return paths
