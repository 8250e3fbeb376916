"""Does a value fit its variable's DataType? Walks the DataType hierarchy down to a builtin type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.nodeset.nodedata import attribute_value

if TYPE_CHECKING:
    from collections.abc import Mapping

_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_SIGNED = {ua.VariantType.SByte, ua.VariantType.Int16, ua.VariantType.Int32, ua.VariantType.Int64}
_UNSIGNED = {ua.VariantType.Byte, ua.VariantType.UInt16, ua.VariantType.UInt32, ua.VariantType.UInt64}
_NUMBER = _SIGNED | _UNSIGNED | {ua.VariantType.Float, ua.VariantType.Double}
# Abstract ns0 types a value can stand for, by their numeric id.
_ABSTRACT: dict[int, set[ua.VariantType] | None] = {
    24: None,  # BaseDataType: anything
    26: _NUMBER,  # Number
    27: _SIGNED,  # Integer
    28: _UNSIGNED,  # UInteger
    29: {ua.VariantType.Int32},  # Enumeration
    22: {ua.VariantType.ExtensionObject},  # Structure
}


class TypeIndex:
    """Node classes and DataType supertypes over the server's nodes plus the nodes being loaded."""

    def __init__(self, aspace: AddressSpace, new_nodes: Mapping[ua.NodeId, Any]) -> None:
        self._aspace = aspace
        self._new = new_nodes
        self._builtin: dict[ua.NodeId, int | None] = {}

    def nodeclass(self, nid: ua.NodeId) -> ua.NodeClass | None:
        r = self._new.get(nid)
        if r is not None:
            return r.nodeclass
        nd = self._aspace.get(nid)
        if nd is None:
            return None
        return ua.NodeClass(attribute_value(nd, ua.AttributeIds.NodeClass).Value.Value)

    def supertype(self, nid: ua.NodeId) -> ua.NodeId | None:
        r = self._new.get(nid)
        if r is not None:
            for reftype, target, fwd, _ in r.refs:
                if reftype == _HAS_SUBTYPE and not fwd:
                    return target
        nd = self._aspace.get(nid)
        if nd is not None:
            for ref in nd.references:
                if ref.ReferenceTypeId == _HAS_SUBTYPE and not ref.IsForward:
                    return ref.NodeId
        return None

    def builtin_base(self, datatype: ua.NodeId) -> int | None:
        """The ns0 id (1-29) this DataType derives from, or None if the chain is broken."""
        if datatype in self._builtin:
            return self._builtin[datatype]
        cur: ua.NodeId | None = datatype
        found = None
        for _ in range(64):
            if cur is None:
                break
            if cur.NamespaceIndex == 0 and isinstance(cur.Identifier, int) and cur.Identifier <= 29:
                found = cur.Identifier
                break
            cur = self.supertype(cur)
        self._builtin[datatype] = found
        return found


def check_value_type(variant: ua.Variant, datatype: ua.NodeId, types: TypeIndex) -> str | None:
    """None if the value fits, else the reason it does not."""
    vt = variant.VariantType
    if vt == ua.VariantType.Null or variant.Value is None:
        return None
    base = types.builtin_base(datatype)
    if base is None:
        return None  # the chain is checked elsewhere (unknown data type)
    if base in _ABSTRACT:
        allowed = _ABSTRACT[base]
        ok = allowed is None or vt in allowed
    else:
        ok = int(vt) == base
    if ok:
        return None
    return f"value is {vt.name} but the DataType {datatype.to_string()} needs {_type_name(base)}"


def _type_name(base: int) -> str:
    names = {24: "BaseDataType", 26: "a Number", 27: "an Integer", 28: "a UInteger", 29: "an Int32 enumeration",
             22: "an ExtensionObject"}
    return names.get(base) or ua.VariantType(base).name
