"""Options a driver declares: query keys of its Connection URI and binding properties of its variables.

Each driver lists its options once (`Driver.connection_options`, `Driver.point_options`); the same
declaration parses and checks them (here), names them in the YAML site format (`key`) and in a nodeset
(`prop`, a property in the gateway namespace), and writes the driver's tables in docs/bindings.md
(`gateway.drivers.reference`), so the documentation cannot drift from what the driver accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl

# The OPC UA DataType a nodeset gives each kind of property (the YAML compiler writes these).
DATATYPES = ("String", "Boolean", "Byte", "UInt16", "UInt32", "Double")


@dataclass(frozen=True, slots=True)
class Option:
    """One option. `kind`: text, choice (one of `choices`, case-insensitive), int or number (within
    `low`..`high`), bool. `default` None means not set (the driver decides; `default_text` says what)."""

    key: str  # snake_case: the query key, and the key in a YAML site
    kind: str
    doc: str
    default: Any = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    datatype: str = "String"  # of the property in a nodeset
    default_text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("text", "choice", "int", "number", "bool"):
            raise ValueError(f"option {self.key}: unknown kind {self.kind!r}")
        if self.datatype not in DATATYPES:
            raise ValueError(f"option {self.key}: DataType {self.datatype!r} is not one of {DATATYPES}")

    @property
    def prop(self) -> str:
        """The property name in a nodeset: byte_order -> ByteOrder."""
        return "".join(part[:1].upper() + part[1:] for part in self.key.split("_"))

    def describe_default(self) -> str:
        if self.default_text:
            return self.default_text
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return _num(self.default) if isinstance(self.default, float) else str(self.default)

    def describe_values(self) -> str:
        if self.kind == "choice":
            return " \\| ".join(f"`{c}`" for c in self.choices)
        if self.kind in ("int", "number"):
            word = "integer" if self.kind == "int" else "number"
            bounds = self._bounds()
            return f"{word} {bounds}" if bounds else word
        return "`true` \\| `false`" if self.kind == "bool" else "text"

    def _bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{_num(self.low)}..{_num(self.high)}"
        if self.low is not None:
            return f">= {_num(self.low)}"
        return f"<= {_num(self.high)}" if self.high is not None else ""

    def parse(self, raw: Any) -> Any:
        """The typed value of `raw` (text from a URI, or a typed value from YAML or a nodeset property);
        ValueError says what is wrong without naming the option (the caller knows how it was written)."""
        if self.kind == "text":
            if not isinstance(raw, str) or not raw:
                raise ValueError(f"must be text, not {raw!r}")
            return raw
        if self.kind == "choice":
            text = str(raw).strip().lower() if isinstance(raw, str) else None
            if text not in self.choices:
                raise ValueError(f"must be {_or(self.choices)}, not {raw!r}")
            return text
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0"):
                return raw.strip().lower() in ("true", "1")
            raise ValueError(f"must be true or false, not {raw!r}")
        number = _number(raw, whole=self.kind == "int")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            bounds = self._bounds()
            raise ValueError(f"must be {'in ' if '..' in bounds else ''}{bounds}, not {_num(number)}")
        return number


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _or(choices: Sequence[str]) -> str:
    return " or ".join(choices) if len(choices) < 3 else ", ".join(choices[:-1]) + " or " + choices[-1]


def _number(raw: Any, whole: bool) -> int | float:
    if isinstance(raw, bool):
        raise ValueError(f"must be a number, not {raw!r}")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip()) if whole else float(raw.strip())
        except ValueError:
            raise ValueError(f"must be {'a whole number' if whole else 'a number'}, not {raw!r}") from None
    if not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"must be a finite number, not {raw!r}")
    if whole:
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"must be a whole number, not {raw!r}")
        return int(raw)
    return float(raw)


def parse_point_options(options: Sequence[Option], props: Mapping[str, Any]) -> dict[str, Any]:
    """A variable's driver options from its binding properties (by `prop` name); unset ones are left out."""
    out: dict[str, Any] = {}
    for option in options:
        raw = props.get(option.prop)
        if raw is None or raw == "":
            continue
        try:
            out[option.key] = option.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{option.prop} {exc}") from None
    return out


def parse_query(url: SplitResult, options: Sequence[Option], what: str) -> dict[str, Any]:
    """The connection options in `url`'s query, defaults filled in; ValueError names an unknown, repeated or
    bad option (`what` names the driver in the message: "unknown CAN option 'x'")."""
    by_key = {o.key: o for o in options}
    out = {o.key: o.default for o in options}
    seen: set[str] = set()
    for key, raw in parse_qsl(url.query, keep_blank_values=True):
        option = by_key.get(key)
        if option is None:
            known = ", ".join(by_key) or "none"
            raise ValueError(f"unknown {what} option '{key}' (known: {known})")
        if key in seen:
            raise ValueError(f"option '{key}' is given twice")
        seen.add(key)
        try:
            out[key] = option.parse(raw)
        except ValueError as exc:
            raise ValueError(f"option {key}={raw!r} {exc}") from None
    return out
