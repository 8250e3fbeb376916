"""The SunSpec Common model (1) with the gateway's identity, so SunSpec-aware masters recognise the device.

Layout (SunSpec Information Model, model 1): at holding/40000 the marker "SunS", then model id 1 and
its length 66: manufacturer (Mn, 32 characters), model (Md, 32), options (Opt, 16), version (Vr, 16),
serial number (SN, 32), device address (DA) and a pad register (0x8000); then the end model
(id 0xFFFF, length 0). Strings are the codec's xsd:string (NUL-padded, big-endian byte pairs).
"""

from __future__ import annotations

from gateway.drivers.modbus import codec
from gateway.facade.model import SUNSPEC_COMMON_LENGTH, SUNSPEC_REGISTERS

_FIELDS = (("manufacturer", 32), ("model", 32), ("options", 16), ("version", 16), ("serial", 32))
_NOT_IMPLEMENTED = 0x8000


def _text(value: str, length: int) -> list[int]:
    data = value.encode("latin-1", "replace")[:length].decode("latin-1")
    return codec.encode(data, "xsd:string", length=length)


def common_model(identity: dict[str, str], unit: int = 1) -> list[int]:
    """The 72 registers from holding/40000: `identity` has manufacturer, model, options, version, serial."""
    words = [*codec.encode("SunS", "xsd:string", length=4), 1, SUNSPEC_COMMON_LENGTH]
    for key, length in _FIELDS:
        words += _text(identity.get(key, ""), length)
    words += [unit, _NOT_IMPLEMENTED, 0xFFFF, 0]
    assert len(words) == SUNSPEC_REGISTERS
    return words
