"""Roles and what each may do.

viewer: browse, read, subscribe, history. operator: plus value writes and method calls.
admin: everything, including attribute writes and node management. Anonymous sessions are
viewers. The role decides per item in the gateway's write and call paths; `GatewayRuleset`
only decides which service requests a session may send at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from asyncua import ua
from asyncua.crypto.permission_rules import ADMIN_TYPES, USER_TYPES, PermissionRuleset, User, UserRole


class Role(enum.IntEnum):
    viewer = 1
    operator = 2
    admin = 3

    def allows(self, needed: Role) -> bool:
        return self >= needed

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown role '{text}' (roles: {', '.join(r.name for r in cls)})") from None


class ServiceRole(enum.IntEnum):
    """Roles of the gateway's own programs, never a person's: no user can be given one (`Role.parse`
    does not know them) and they are not listed with the users' roles.

    control: the control engine's setpoint writes. It ranks with an operator (equal as a number, so every
    check `role.allows(Role.operator)` passes and every `role is Role.admin` fails): it writes values
    where AccessLevel allows, never attributes or anything an admin may do; the audit trail names it
    `control`, so a setpoint written by a controller is told apart from an operator's.
    """

    control = Role.operator.value

    def allows(self, needed: Role) -> bool:
        return self >= needed


@dataclass
class GatewayUser(User):
    """asyncua's User with the gateway role; asyncua's own UserRole is kept coarse for its checks."""

    gateway_role: Role = Role.viewer


def role_of(user: User | None) -> Role:
    """The gateway role of a session user; anything unknown is a viewer (fail closed)."""
    if isinstance(user, GatewayUser):
        return user.gateway_role
    return Role.viewer


def asyncua_role(role: Role) -> UserRole:
    return {Role.viewer: UserRole.User, Role.operator: UserRole.User, Role.admin: UserRole.Admin}[role]


_USER_REQUESTS = frozenset(ua.NodeId(i) for i in USER_TYPES)
_ADMIN_REQUESTS = frozenset(ua.NodeId(i) for i in ADMIN_TYPES)


class GatewayRuleset(PermissionRuleset):
    """Which service requests reach the session: every session may use the normal services
    (viewers' writes and calls are refused per item with BadUserAccessDenied, as clients expect);
    node management needs an admin. asyncua consults no ruleset for RegisterServer/RegisterServer2
    (its processor has no user for them); the gateway's transport refuses them unless the channel's
    session is an admin's (gateway.transport.processor)."""

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: object) -> bool:
        if action_type_id in _USER_REQUESTS:
            return True
        if action_type_id in _ADMIN_REQUESTS:
            return role_of(user) is Role.admin
        return False
