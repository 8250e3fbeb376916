"""Whose subscription is it: each session acts only on its own subscriptions.

asyncua keys subscriptions by a small server-wide integer and checks no owner, so any session
could delete, modify or republish another's by guessing it. A subscription belongs to the session
that created it (or took it over); TransferSubscriptions moves it only to a session of the same
identity, or to an admin:

- a named user may take over subscriptions created under the same user name;
- an anonymous session may take over anonymous subscriptions created from the same client
  certificate (the same application instance); without a certificate there is no identity to
  compare and an anonymous subscription cannot be transferred, except by an admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua.crypto.permission_rules import User

from gateway.security.roles import Role, role_of

Identity = tuple[str, str | bytes]


def identity_of(user: User | None, channel_certificate: bytes | None) -> Identity | None:
    """What must match for a transfer: the user name, or the client certificate of an anonymous session."""
    name = getattr(user, "name", None)
    if name:
        return ("user", name)
    if channel_certificate:
        return ("anonymous", channel_certificate)
    return None


@dataclass(frozen=True)
class SubscriptionOwner:
    identity: Identity | None


def may_transfer(owner: SubscriptionOwner | None, user: User | None, channel_certificate: bytes | None) -> bool:
    if role_of(user) is Role.admin:
        return True
    if owner is None or owner.identity is None:
        return False
    return identity_of(user, channel_certificate) == owner.identity
