"""What a role may do to a node: the one rule behind what a session reads and what it may do.

A session reads its own UserAccessLevel, UserWriteMask and UserExecutable (the attributes in the
address space hold the model's values, the same for everyone); the write path and method calls
check the very same functions, so a client that reads "writable" can write and one that reads
"not writable" is refused.

- UserAccessLevel: the node's AccessLevel (narrowed by a UserAccessLevel the nodeset states), with
  CurrentWrite only for operators and admins. HistoryWrite, StatusWrite and TimestampWrite are
  never shown: the gateway serves no HistoryUpdate and takes no client status or timestamp.
- UserWriteMask: the node's WriteMask for admins (without the attributes no one writes: NodeId,
  NodeClass and the per-session User* attributes), 0 for everyone else.
- UserExecutable: Executable for operators and admins, False for viewers.
- Namespace 0 (the Server object and the standard types) is never written through the gateway,
  whatever the role: its variables (ServerStatus, NamespaceArray, ServerDiagnostics/EnabledFlag...)
  are kept by the server itself, and no standard node needs a client to change it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace, NodeData

from gateway.security.roles import Role

SERVER_NAMESPACE = 0

_CURRENT_WRITE = ua.AccessLevel.CurrentWrite.mask
_NOT_SERVED = ua.AccessLevel.HistoryWrite.mask | ua.AccessLevel.StatusWrite.mask | ua.AccessLevel.TimestampWrite.mask

# WriteMask bit per attribute (Part 3, 8.60); asyncua's enum stops at ValueForVariableType.
_WRITE_MASK_BIT: dict[ua.AttributeIds, int] = {
    **{ua.AttributeIds[m.name]: m.mask for m in ua.WriteMask if m.name in ua.AttributeIds.__members__},
    ua.AttributeIds.DataTypeDefinition: 1 << 22,
    ua.AttributeIds.RolePermissions: 1 << 23,
    ua.AttributeIds.AccessRestrictions: 1 << 24,
    ua.AttributeIds.AccessLevelEx: 1 << 25,
}
# Identity, and the attributes each session reads for itself: no write changes them.
_NEVER_WRITTEN = {ua.AttributeIds.NodeId, ua.AttributeIds.NodeClass, ua.AttributeIds.UserAccessLevel,
                  ua.AttributeIds.UserWriteMask, ua.AttributeIds.UserExecutable,
                  ua.AttributeIds.UserRolePermissions}
_NEVER_WRITTEN_MASK = sum(_WRITE_MASK_BIT.get(a, 0) for a in _NEVER_WRITTEN)


def attribute(nd: NodeData, aid: ua.AttributeIds, default: Any = None) -> Any:
    """The plain value of one of a node's attributes, or `default` when it has none."""
    av = nd.attributes.get(aid)
    if av is None or av.value is None or av.value.Value is None or av.value.Value.Value is None:
        return default
    return av.value.Value.Value


def writes_values(role: Role) -> bool:
    """Whether the role writes values and calls methods at all (operators and admins)."""
    return role.allows(Role.operator)


def in_server_namespace(nd: NodeData) -> bool:
    return nd.nodeid.NamespaceIndex == SERVER_NAMESPACE


def user_access_level(nd: NodeData, role: Role) -> int:
    level = int(attribute(nd, ua.AttributeIds.AccessLevel, 0))
    level &= int(attribute(nd, ua.AttributeIds.UserAccessLevel, level)) & ~_NOT_SERVED
    if not writes_values(role) or in_server_namespace(nd):
        level &= ~_CURRENT_WRITE
    return level


def write_mask_bit(nd: NodeData, aid: ua.AttributeIds) -> int | None:
    """The WriteMask bit that governs writing `aid` of this node; None where the Value attribute of a
    Variable is meant (AccessLevel governs that) or the attribute is never written."""
    if aid == ua.AttributeIds.Value:
        if attribute(nd, ua.AttributeIds.NodeClass) == ua.NodeClass.VariableType:
            return ua.WriteMask.ValueForVariableType.mask
        return None
    if aid in _NEVER_WRITTEN:
        return None
    return _WRITE_MASK_BIT.get(aid)


def user_write_mask(nd: NodeData, role: Role) -> int:
    if role is not Role.admin or in_server_namespace(nd):
        return 0
    return int(attribute(nd, ua.AttributeIds.WriteMask, 0)) & ~_NEVER_WRITTEN_MASK


def user_executable(nd: NodeData, role: Role) -> bool:
    return bool(attribute(nd, ua.AttributeIds.Executable, False)) and writes_values(role)


_PER_USER: dict[ua.AttributeIds, tuple[Any, ua.VariantType]] = {
    ua.AttributeIds.UserAccessLevel: (user_access_level, ua.VariantType.Byte),
    ua.AttributeIds.UserWriteMask: (user_write_mask, ua.VariantType.UInt32),
    ua.AttributeIds.UserExecutable: (user_executable, ua.VariantType.Boolean),
}


def answer_per_user(aspace: AddressSpace, nodes_to_read: Sequence[ua.ReadValueId], results: list[ua.DataValue],
                    role: Role) -> list[ua.DataValue]:
    """Replace, in a Read's results, the User* attributes by what this role may do (in place)."""
    for i, rv in enumerate(nodes_to_read):
        rule = _PER_USER.get(rv.AttributeId)
        if rule is None:
            continue
        dv = results[i]
        nd = aspace.get(rv.NodeId)
        if nd is None or (dv.StatusCode is not None and not dv.StatusCode.is_good()):
            continue
        fn, vtype = rule
        results[i] = ua.DataValue(ua.Variant(fn(nd, role), vtype))
    return results
