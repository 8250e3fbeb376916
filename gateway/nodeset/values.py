"""Decode the <Value> of a NodeSet2 node into a typed ua.Variant.

Written here rather than taken from asyncua's XmlImporter because that one logs and skips what
it cannot parse; `gateway nodeset check` must instead name each value that does not parse as
its type, with its line.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any, get_type_hints

from asyncua import ua
from asyncua.ua.uatypes import type_from_list, type_from_optional, type_is_list, type_is_optional
from lxml import etree

NodeIdResolver = Callable[[str], ua.NodeId]
QualifiedNameResolver = Callable[[int, str], ua.QualifiedName]
# Finds the class of an ExtensionObject from its encoding NodeId and its body element name.
ExtClassLookup = Callable[[ua.NodeId | None, str], type | None]

# The one table of integer ranges: by type name here, by VariantType in INT_RANGE_OF.
INT_RANGES = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
INT_RANGE_OF = {ua.VariantType[name]: limits for name, limits in INT_RANGES.items()}
_INT_TYPES = set(INT_RANGES)
_ENUM_TEXT = re.compile(r"^.*_(-?\d+)$")


class ValueDecodeError(ValueError):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _child(el: etree._Element, name: str) -> etree._Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _child_text(el: etree._Element, name: str) -> str | None:
    c = _child(el, name)
    return None if c is None else (c.text or "")


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise ValueError(f"'{text}' is not a Boolean (true/false)")


def parse_datetime(text: str) -> datetime:
    t = text.strip()
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 DateTime") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_int(text: str, tname: str) -> int:
    try:
        v = int(text.strip(), 0) if text.strip().lower().startswith("0x") else int(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an integer ({tname})") from None
    lo, hi = INT_RANGES[tname]
    if not lo <= v <= hi:
        raise ValueError(f"{v} is out of range for {tname} [{lo}, {hi}]")
    return v


def parse_float(text: str, tname: str) -> float:
    t = text.strip()
    special = {"INF": "inf", "-INF": "-inf", "NAN": "nan"}
    try:
        return float(special.get(t.upper(), t))
    except ValueError:
        raise ValueError(f"'{text}' is not a number ({tname})") from None


class ValueDecoder:
    """Decodes value elements for one document (its namespace mapping and aliases)."""

    def __init__(self, nodeid: NodeIdResolver, qname: QualifiedNameResolver, ext_class: ExtClassLookup) -> None:
        self._nodeid = nodeid
        self._qname = qname
        self._ext_class = ext_class

    def decode(self, value_el: etree._Element) -> ua.Variant:
        """Decode a <Value> element (its single child is the typed value)."""
        kids = _children(value_el)
        if not kids:
            return ua.Variant(None, ua.VariantType.Null)
        el = kids[0]
        try:
            return self._variant(el)
        except ValueDecodeError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueDecodeError(str(exc), el.sourceline) from None

    def _variant(self, el: etree._Element) -> ua.Variant:
        tag = _local(el.tag)
        if tag.startswith("ListOf"):
            item = tag[6:]
            vtype = self._vtype(item, el)
            values = [self._scalar(item, c) for c in _children(el)]
            return ua.Variant(values, vtype, is_array=True)
        return ua.Variant(self._scalar(tag, el), self._vtype(tag, el))

    @staticmethod
    def _vtype(tag: str, el: etree._Element) -> ua.VariantType:
        try:
            return ua.VariantType[tag]
        except KeyError:
            raise ValueDecodeError(f"unknown value type <{tag}>", el.sourceline) from None

    def _scalar(self, tag: str, el: etree._Element) -> Any:
        text = el.text or ""
        try:
            if tag == "Boolean":
                return parse_bool(text)
            if tag in _INT_TYPES:
                return parse_int(text, tag)
            if tag in ("Float", "Double"):
                return parse_float(text, tag)
            if tag in ("String", "XmlElement"):
                return text if tag == "String" else ua.XmlElement(text)
            if tag == "DateTime":
                return parse_datetime(text)
            if tag == "ByteString":
                return base64.b64decode("".join(text.split()), validate=True)
            if tag == "Guid":
                return uuid.UUID((_child_text(el, "String") or text).strip())
            if tag == "NodeId":
                return self._nodeid((_child_text(el, "Identifier") or "").strip())
            if tag == "ExpandedNodeId":
                n = self._nodeid((_child_text(el, "Identifier") or "").strip())
                return ua.ExpandedNodeId(n.Identifier, n.NamespaceIndex, n.NodeIdType)
            if tag == "StatusCode":
                return ua.StatusCode(parse_int(_child_text(el, "Code") or "0", "UInt32"))
            if tag == "QualifiedName":
                return self._qname(
                    parse_int(_child_text(el, "NamespaceIndex") or "0", "UInt16"), _child_text(el, "Name") or ""
                )
            if tag == "LocalizedText":
                return ua.LocalizedText(Text=_child_text(el, "Text"), Locale=_child_text(el, "Locale"))
            if tag == "ExtensionObject":
                return self._extension_object(el)
            if tag == "Variant":
                inner = _child(el, "Value")
                return self.decode(inner).Value if inner is not None else None
        except ValueDecodeError:
            raise
        except (ValueError, TypeError, base64.binascii.Error) as exc:
            raise ValueDecodeError(f"<{tag}>: {exc}", el.sourceline) from None
        raise ValueDecodeError(f"value type <{tag}> is not supported", el.sourceline)

    def _extension_object(self, el: etree._Element) -> Any:
        type_el = _child(el, "TypeId")
        body = _child(el, "Body")
        if body is None or not _children(body):
            raise ValueDecodeError("<ExtensionObject> has no <Body>", el.sourceline)
        struct_el = _children(body)[0]
        typeid = None
        if type_el is not None:
            ident = _child_text(type_el, "Identifier")
            if ident:
                typeid = self._nodeid(ident.strip())
        cls = self._ext_class(typeid, _local(struct_el.tag))
        if cls is None:
            raise ValueDecodeError(
                f"no structure type known for ExtensionObject <{_local(struct_el.tag)}> (TypeId {typeid})",
                struct_el.sourceline,
            )
        return self._struct(cls, struct_el)

    def _struct(self, cls: type, el: etree._Element) -> Any:
        hints = _hints(cls)
        obj = cls()
        for child in _children(el):
            name = _local(child.tag)
            if name == "EncodingMask":
                continue
            if name not in hints:
                raise ValueDecodeError(f"{cls.__name__} has no field '{name}'", child.sourceline)
            setattr(obj, name, self._field(hints[name], child))
        return obj

    def _field(self, ftype: Any, el: etree._Element) -> Any:
        if type_is_optional(ftype):
            ftype = type_from_optional(ftype)
        if type_is_list(ftype):
            item = type_from_list(ftype)
            return [self._field(item, c) for c in _children(el)]
        if isinstance(ftype, type):
            if ftype is ua.Variant:
                inner = _child(el, "Value")
                return self.decode(inner) if inner is not None else ua.Variant()
            if issubclass(ftype, ua.NodeId):
                n = self._nodeid((_child_text(el, "Identifier") or "").strip())
                if issubclass(ftype, ua.ExpandedNodeId):
                    return ua.ExpandedNodeId(n.Identifier, n.NamespaceIndex, n.NodeIdType)
                return n
            if issubclass(ftype, ua.LocalizedText):
                return ua.LocalizedText(Text=_child_text(el, "Text"), Locale=_child_text(el, "Locale"))
            if issubclass(ftype, ua.QualifiedName):
                return self._scalar("QualifiedName", el)
            if issubclass(ftype, ua.StatusCode):
                return self._scalar("StatusCode", el)
            if issubclass(ftype, Enum):
                text = (el.text or "").strip()
                m = _ENUM_TEXT.match(text)
                return ftype(int(m.group(1)) if m else int(text))
            if issubclass(ftype, bool):
                return parse_bool(el.text or "")
            if issubclass(ftype, int):
                name = ftype.__name__
                return parse_int(el.text or "0", name if name in INT_RANGES else "Int64")
            if issubclass(ftype, float):
                return parse_float(el.text or "0", ftype.__name__)
            if issubclass(ftype, bytes):
                return base64.b64decode("".join((el.text or "").split()))
            if issubclass(ftype, str):
                return el.text or ""
            if issubclass(ftype, datetime):
                return parse_datetime(el.text or "")
            if issubclass(ftype, uuid.UUID):
                return uuid.UUID((_child_text(el, "String") or el.text or "").strip())
            if hasattr(ftype, "__dataclass_fields__"):
                return self._struct(ftype, el)
        raise ValueDecodeError(f"cannot decode a field of type {ftype}", el.sourceline)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, {"ua": ua})


# Builtin DataType ids (Part 6) to the value element name each one is written with.
BUILTIN_TYPE_NAMES = {int(v): v.name for v in ua.VariantType if 1 <= int(v) <= 25}
