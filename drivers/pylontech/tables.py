"""The `pwr` and `bat` tables of a Pylontech console answer, as text in and typed values out (pure).

An answer is the command's echo, a line `@`, the table (a header line, one row per module or cell),
`Command completed successfully`, `$$` and the prompt. Line ends vary between firmware versions
(`\\r\\n`, `\\n\\r`, `\\r\\r\\n`), so any run of CR and LF ends a line. Columns are found by the header's
names, not by position, as firmware versions add columns (`MosTempr`, `Tlow.Id`, `SOC`, `BAL`) or
drop them; a row's cells are its whitespace-separated tokens, with the few values the console
prints as two tokens joined again (`2019-12-28 09:24:42`, `49560 mAH`, `100 %`).

Field names, shared by both tables (the console's header spellings on the right):
Volt, Curr, Tempr, Tlow, Thigh, Vlow, Vhigh, TlowId, ThighId, VlowId, VhighId, MosTempr (numbers);
BaseState (Base.St, Base State), VoltState, CurrState, TempState, BVState (B.V.St), BTState, MTState,
SysAlarmState, Time (text); SOC (the pwr table's `Coulomb` percentage, the bat table's `SOC`);
Coulomb (the bat table's remaining charge in mAh); BAL (cell balancing, Y/N); Present (whether the
pwr table lists the module, rather than `Absent`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

COMPLETED = "Command completed successfully"
END = "$$"
ABSENT = "Absent"
MISSING = "-"

# Header name (after "Volt. State" -> "Volt.St") -> field name.
_HEADER_FIELDS = {
    "Volt": "Volt", "Curr": "Curr", "Tempr": "Tempr", "Tlow": "Tlow", "Thigh": "Thigh", "Vlow": "Vlow",
    "Vhigh": "Vhigh", "Tlow.Id": "TlowId", "Thigh.Id": "ThighId", "Vlow.Id": "VlowId", "Vhigh.Id": "VhighId",
    "Base.St": "BaseState", "Volt.St": "VoltState", "Curr.St": "CurrState", "Temp.St": "TempState",
    "Coulomb": "Coulomb", "SOC": "SOC", "Time": "Time", "B.V.St": "BVState", "B.T.St": "BTState",
    "MosTempr": "MosTempr", "M.T.St": "MTState", "SysAlarm.St": "SysAlarmState", "BAL": "BAL",
}
# Field -> (kind, divisor from the console's unit to the gateway's): mV -> V, mA -> A, m°C -> °C, mAh -> Ah.
FIELDS: dict[str, tuple[str, int]] = {
    "Volt": ("number", 1000), "Curr": ("number", 1000), "Tempr": ("number", 1000), "Tlow": ("number", 1000),
    "Thigh": ("number", 1000), "Vlow": ("number", 1000), "Vhigh": ("number", 1000), "MosTempr": ("number", 1000),
    "TlowId": ("number", 1), "ThighId": ("number", 1), "VlowId": ("number", 1), "VhighId": ("number", 1),
    "SOC": ("number", 1), "Coulomb": ("number", 1000),
    "BaseState": ("text", 1), "VoltState": ("text", 1), "CurrState": ("text", 1), "TempState": ("text", 1),
    "BVState": ("text", 1), "BTState": ("text", 1), "MTState": ("text", 1), "SysAlarmState": ("text", 1),
    "Time": ("text", 1), "BAL": ("bool", 1), "Present": ("bool", 1),
}
PWR_FIELDS = ("Volt", "Curr", "Tempr", "Tlow", "Thigh", "Vlow", "Vhigh", "TlowId", "ThighId", "VlowId", "VhighId",
              "BaseState", "VoltState", "CurrState", "TempState", "SOC", "Time", "BVState", "BTState", "MosTempr",
              "MTState", "SysAlarmState", "Present")
BAT_FIELDS = ("Volt", "Curr", "Tempr", "BaseState", "VoltState", "CurrState", "TempState", "SOC", "Coulomb", "BAL")

_LINE_ENDS = re.compile(r"[\r\n]+")
_STATE = re.compile(r"\b(\w+)\.? State\b")  # "Base State", "Volt. State" (bat) -> "Base.St", "Volt.St" (pwr)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}$")
_UNIT = re.compile(r"^(mAH|mAh|AH|Ah|WH|Wh)$")
_INT = re.compile(r"^-?\d+$")


class FieldError(ValueError):
    """A cell that does not read as its field (garbage in the line)."""


@dataclass
class Table:
    """One answer: `rows` by the number the console gives a module (pwr) or cell (bat), each its cells by field
    name, as text; `broken` rows by number with why they could not be read; `complete` whether the answer
    ended as the console ends one (otherwise it was cut off); `message` the answer's text where it has no
    table (`Unknown command`)."""

    kind: str  # "pwr" or "bat"
    columns: list[str] = field(default_factory=list)  # field names of the header, in order
    rows: dict[int, dict[str, str]] = field(default_factory=dict)
    broken: dict[int, str] = field(default_factory=dict)
    short: set[int] = field(default_factory=set)  # rows with fewer cells than the header has columns
    skipped: list[str] = field(default_factory=list)  # lines that are neither header nor row (noise)
    complete: bool = False
    has_header: bool = False
    message: str = ""


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in _LINE_ENDS.split(text) if line.strip()]


def answer_lines(text: str, prompt: str) -> tuple[list[str], bool]:
    """The lines between the `@` line and the end marker, and whether the end marker came. Text before the
    last `@` (the echo, a stale prompt, noise) is dropped."""
    lines = lines_of(text)
    starts = [i for i, line in enumerate(lines) if line.strip() == "@"]
    if not starts:
        return [], False
    out: list[str] = []
    for line in lines[starts[-1] + 1:]:
        stripped = line.strip()
        if stripped.startswith(COMPLETED) or stripped == END:
            return out, True
        if stripped.startswith(prompt):
            return out, False  # a prompt without the end marker: the console cut its answer short
        out.append(line)
    return out, False


def _header_fields(line: str) -> list[str]:
    names = _STATE.sub(r"\1.St", line).split()
    return [_HEADER_FIELDS.get(n, n) for n in names[1:]]  # the first names the row number (Power, Battery)


def _tokens(line: str) -> list[str]:
    out: list[str] = []
    for token in line.split():
        if out and (token == "%" or _UNIT.match(token)):
            out[-1] = f"{out[-1]}{token}" if token == "%" else f"{out[-1]} {token}"
        elif out and _TIME.match(token) and _DATE.match(out[-1]):
            out[-1] = f"{out[-1]} {token}"
        else:
            out.append(token)
    return out


def _row(fields: list[str], tokens: list[str]) -> dict[str, str]:
    """Cells by field name. A percentage under `Coulomb` is the state of charge (the pwr table, and the bat table
    of firmware that prints no SOC column); cells beyond the header are named by their form."""
    out: dict[str, str] = {}
    for i, token in enumerate(tokens):
        name = fields[i] if i < len(fields) else None
        if token.endswith("%") and name in ("Coulomb", None):
            name = "SOC"
        elif token.endswith(("mAH", "mAh", "AH", "Ah")):
            name = "Coulomb"
        elif name is None and token in ("Y", "N"):
            name = "BAL"
        if name is not None and name not in out:
            out[name] = token
    return out


def parse(text: str, kind: str, prompt: str = "pylon>") -> Table:
    """The `pwr` or `bat` table in a console answer."""
    table = Table(kind)
    lines, table.complete = answer_lines(text, prompt)
    first = "Power" if kind == "pwr" else "Battery"
    fields: list[str] | None = None
    for line in lines:
        tokens = _tokens(line)
        if fields is None:
            if tokens and tokens[0] == first and len(tokens) > 3:
                fields = table.columns = _header_fields(line)
                table.has_header = True
            elif not table.message:
                table.message = line.strip()
            continue
        if not tokens or not tokens[0].isdigit():
            table.skipped.append(line)
            continue
        number = int(tokens[0])
        if kind == "pwr" and ABSENT in tokens and all(t in (MISSING, ABSENT) for t in tokens[1:]):
            # Absent sits under Base.St by position; firmware with more columns before it prints fewer dashes
            table.rows[number] = {"BaseState": ABSENT}
            continue
        cells = _row(fields, tokens[1:])
        if len(tokens) - 1 < min(len(fields), 8):  # the leading values and states are printed for every row
            table.broken[number] = f"row {number} has {len(tokens) - 1} of {len(fields)} columns: {line.strip()!r}"
        else:
            table.rows[number] = cells
            if len(tokens) - 1 < len(fields):
                table.short.add(number)
    return table


def convert(field_name: str, text: str, console_units: bool = False) -> Any:
    """A cell's value: numbers in V, A, °C, %, Ah (or as printed with `console_units`), text as printed, Y/N as
    a Boolean. FieldError for a cell that does not read as its field."""
    kind, divisor = FIELDS[field_name]
    if kind == "text":
        if not text.isprintable() or not text:
            raise FieldError(f"{field_name} {text!r} is not text")
        return text
    if kind == "bool":
        if text not in ("Y", "N"):
            raise FieldError(f"{field_name} {text!r} is not Y or N")
        return text == "Y"
    number = text.removesuffix("%").strip().split(" ")[0]
    if not _INT.match(number):
        raise FieldError(f"{field_name} {text!r} is not a whole number")
    value = int(number)
    if console_units or divisor == 1:
        return value
    return value / divisor
