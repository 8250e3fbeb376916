"""What a secure channel may be used for, by its security policy and mode.

The endpoints promise signed and encrypted channels (plus SecurityPolicy None with --insecure).
asyncua opens a None channel for anyone (the specification requires it for discovery) and then
serves every service on it. Here a channel whose (policy, mode) is not an offered endpoint gets
only discovery; a channel request for a policy that is not offered is refused at once; a password
travels only encrypted, by the channel or by the token itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asyncua import ua
from asyncua.crypto.security_policies import SecurityPolicyNone

from gateway.transport.refusal import Refused

NONE_URI = SecurityPolicyNone.URI
_DEPRECATED = {
    "http://opcfoundation.org/UA/SecurityPolicy#Basic128Rsa15": "Basic128Rsa15",
    "http://opcfoundation.org/UA/SecurityPolicy#Basic256": "Basic256",
}
# Password encryption of UserName tokens by the offered policies (Basic256Sha256 and
# Aes128_Sha256_RsaOaep use RSA-OAEP, Aes256_Sha256_RsaPss RSA-OAEP-SHA256). RSA 1.5 belongs to the
# deprecated Basic128Rsa15 and is refused.
TOKEN_ENCRYPTION = frozenset({
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep",
    "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256",
})


def _request(name: str) -> ua.NodeId:
    return ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))


# Services any channel may use, whatever its security (Part 4, 5.4: discovery needs no session).
DISCOVERY_REQUESTS = frozenset(_request(n) for n in (
    "GetEndpoints", "FindServers", "FindServersOnNetwork", "CloseSecureChannel"))


@dataclass(frozen=True)
class OfferedSecurity:
    """The (security policy URI, message security mode) pairs of the offered endpoints."""

    pairs: frozenset[tuple[str, ua.MessageSecurityMode]]

    @classmethod
    def of(cls, policy_factories: Iterable[object]) -> OfferedSecurity:
        return cls(frozenset((f.cls.URI, f.mode) for f in policy_factories))  # type: ignore[attr-defined]

    @property
    def uris(self) -> frozenset[str]:
        return frozenset(uri for uri, _ in self.pairs)

    def offers(self, uri: str, mode: ua.MessageSecurityMode) -> bool:
        return (uri, mode) in self.pairs

    def refuse_channel_request(self, uri: str | None) -> str | None:
        """Why an OpenSecureChannel for `uri` is refused, or None. A None channel is always opened, for discovery."""
        if uri == NONE_URI:
            return None
        if uri in _DEPRECATED:
            return f"security policy {_DEPRECATED[uri]} is deprecated and not offered"
        if uri not in self.uris:
            return f"security policy {uri!r} is not offered"
        return None

    def session_allowed(self, uri: str, mode: ua.MessageSecurityMode) -> bool:
        """Sessions and every service but discovery need a channel matching an offered endpoint."""
        return self.offers(uri, mode)


def check_identity_token(token: object, channel_mode: ua.MessageSecurityMode) -> None:
    """Refuse a UserName token whose password would be readable on the wire."""
    if not isinstance(token, ua.UserNameIdentityToken):
        return
    algorithm = token.EncryptionAlgorithm
    if not algorithm:
        if channel_mode != ua.MessageSecurityMode.SignAndEncrypt:
            raise Refused(ua.StatusCodes.BadIdentityTokenRejected,
                               "password sent in plain text on a channel that is not encrypted")
        return
    if algorithm not in TOKEN_ENCRYPTION:
        raise Refused(ua.StatusCodes.BadIdentityTokenRejected,
                           f"password encrypted with {algorithm!r}, which no offered policy uses")
