"""SCPI text both ways: an instrument's answer to a variable's value, a value into a write template, and the
entries of its error queue. Pure functions, so the decoding cases (tests/cases/scpi) run them directly."""

from __future__ import annotations

import math
import string
from typing import Any

from asyncua import ua

_S = ua.StatusCodes
# SCPI-99 7.2.1: 9.91E37 is "not a number", +-9.9E37 an overflow.
_NAN_CODE, _INFINITY_CODE = 9.91e37, 9.9e37
_TRUE, _FALSE = {"1", "ON", "TRUE"}, {"0", "OFF", "FALSE"}
_INTEGER_TYPES = {"xsd:byte", "xsd:unsignedByte", "xsd:short", "xsd:unsignedShort", "xsd:int", "xsd:unsignedInt",
                  "xsd:long", "xsd:unsignedLong"}


class AnswerError(ValueError):
    """An answer that is not what the binding expects; the message quotes it."""


def element(answer: str, index: int | None) -> str:
    """The answer, or its element `index` when it is a comma-separated list (`MEAS:ALL?` -> "24.0,1.5,36.0")."""
    text = answer.strip().replace("\x00", "")
    if index is None:
        return text
    parts = text.split(",")
    if index >= len(parts):
        raise AnswerError(f"{_quote(answer)} has {len(parts)} element(s), no element {index}")
    return parts[index].strip()


def decode(answer: str, field_type: str, index: int | None = None) -> Any:
    """The value of `answer` as `field_type` (xsd:*); AnswerError says why it is not one."""
    text = element(answer, index)
    if field_type == "xsd:string":
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    if field_type == "xsd:boolean":
        word = text.upper()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        number = _number(text, answer)
        return number != 0
    number = _number(text, answer)
    if field_type in _INTEGER_TYPES:
        if not math.isfinite(number) or not number.is_integer():
            raise AnswerError(f"{_quote(answer)} is not a whole number")
        return int(number)
    return number


def _number(text: str, answer: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise AnswerError(f"{_quote(answer)} is not a number") from None
    if number == _NAN_CODE:
        return math.nan
    if abs(number) == _INFINITY_CODE:
        return math.copysign(math.inf, number)
    return number


def _quote(answer: str) -> str:
    text = answer if len(answer) <= 60 else answer[:57] + "..."
    return repr(text)


def template_fields(template: str) -> list[str]:
    """The replacement fields a write template names; ValueError for a malformed one."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str) -> None:
    """ValueError unless `template` is a command with exactly `{value}` fields (`VOLT {value}`, `VOLT {value:.3f}`)."""
    try:
        names = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"write template '{template}' is malformed: {exc}") from None
    if not names or any(n != "value" for n in names):
        raise ValueError(f"write template '{template}' must contain {{value}} and no other field")
    if "\n" in template or "\r" in template:
        raise ValueError(f"write template '{template}' has a line break: one command line")
    try:
        render(template, 1.5)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"write template '{template}': {exc}") from None


def render(template: str, value: Any) -> str:
    """The command for `value`: Booleans as 1/0, numbers as Python writes them (12.5, 3)."""
    if isinstance(value, bool):
        value = int(value)
    return template.format(value=value)


def error_entry(answer: str) -> tuple[int, str]:
    """(code, message) of one error queue answer (`-222,"Data out of range"`); AnswerError if it is not one."""
    code_text, _, message = answer.strip().partition(",")
    try:
        code = int(code_text.strip())
    except ValueError:
        raise AnswerError(f"{_quote(answer)} is not an error queue entry (CODE,\"MESSAGE\")") from None
    return code, message.strip().strip('"')


def error_status(code: int) -> int:
    """The OPC UA status a write refused with SCPI error `code` gets (SCPI-99 21.8: classes by range)."""
    if code in (-222, -224, -223, -220):  # data out of range, illegal value, too much data, parameter error
        return _S.BadOutOfRange
    if code == -221:  # settings conflict: refused in the instrument's present state
        return _S.BadInvalidState
    if -199 <= code <= -100:  # command errors: the template does not fit the instrument
        return _S.BadConfigurationError
    if -299 <= code <= -200:
        return _S.BadInvalidState
    return _S.BadDeviceFailure
