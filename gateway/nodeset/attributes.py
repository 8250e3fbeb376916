"""The typed XML attributes of a NodeSet2 node (AccessLevel, ValueRank, Historizing, ...), checked.

UANodeSet.xsd types each of them (xsd:unsignedByte, xsd:int, xsd:boolean, a list of UInt32, ...);
a value outside its type is a problem of the site, named with the attribute and the text as
written, never an exception at insert time or a silent default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_DIMENSIONS = re.compile(r"^\s*[0-9]+(\s*,\s*[0-9]+)*\s*$")
UINT32_MAX = 2**32 - 1

Parser = Callable[[str], Any]


def integer(kind: str, low: int, high: int, meaning: str = "") -> Parser:
    def parse(text: str) -> int:
        if not _INTEGER.match(text):
            raise ValueError(f"is not an integer ({kind}{meaning})")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"is out of range {low}..{high} ({kind}{meaning})")
        return value

    return parse


def parse_boolean(text: str) -> bool:
    """xsd:boolean (true, false, 1, 0), case-insensitively as authoring tools write it."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise ValueError("is not a boolean (true or false)")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("is not a number of milliseconds (a Duration)") from None
    if not math.isfinite(value) or value < -1:
        raise ValueError("must be a finite number of milliseconds: -1 (indeterminate), 0 (continuous) or more")
    return value


def _dimensions(text: str) -> list[int]:
    if not text.strip():
        return []
    if not _DIMENSIONS.match(text):
        raise ValueError("is not a comma-separated list of UInt32 lengths (0 = any)")
    dims = [int(d) for d in text.split(",")]
    if any(d > UINT32_MAX for d in dims):
        raise ValueError(f"has a length beyond {UINT32_MAX} (UInt32)")
    return dims


_BYTE = integer("Byte", 0, 255)
_UINT32 = integer("UInt32", 0, UINT32_MAX)
ATTRIBUTES: dict[str, Parser] = {
    "WriteMask": _UINT32, "UserWriteMask": _UINT32, "AccessLevelEx": _UINT32,
    "EventNotifier": _BYTE, "AccessLevel": _BYTE, "UserAccessLevel": _BYTE,
    "ValueRank": integer("Int32", -3, 2**31 - 1, ": -3 scalar or one dimension, -2 any, -1 scalar, "
                                                   "0 one or more dimensions, N > 0 dimensions"),
    "ArrayDimensions": _dimensions,
    "MinimumSamplingInterval": _duration,
    "Historizing": parse_boolean, "IsAbstract": parse_boolean, "Symmetric": parse_boolean,
    "Executable": parse_boolean, "UserExecutable": parse_boolean, "ContainsNoLoops": parse_boolean,
}


def parse_attributes(attrs: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The typed attributes a node states, and a message per attribute whose text does not fit its type."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, parse in ATTRIBUTES.items():
        text = attrs.get(name)
        if text is None:
            continue
        try:
            values[name] = parse(text)
        except ValueError as exc:
            problems.append(f"{name}=\"{text}\" {exc}")
    rank, dims = values.get("ValueRank"), values.get("ArrayDimensions")
    if rank is not None and rank > 0 and dims and len(dims) != rank:
        problems.append(f"ArrayDimensions=\"{attrs['ArrayDimensions']}\" names {len(dims)} dimension(s), "
                        f"but ValueRank is {rank}")
    return values, problems
