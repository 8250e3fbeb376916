"""Engineering units by the symbols site authors write, as OPC UA EUInformation (UNECE Rec. 20 codes).

OPC UA Part 8 names UNECE Recommendation 20 as the unit catalogue; its UnitId is the common
code's ASCII bytes read as one integer (Part 8, 5.6.3).
"""

from __future__ import annotations

from asyncua import ua

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

# symbol -> (UNECE common code, description)
UNITS: dict[str, tuple[str, str]] = {
    "W": ("WTT", "watt"), "kW": ("KWT", "kilowatt"), "MW": ("MAW", "megawatt"),
    "Wh": ("WHR", "watt hour"), "kWh": ("KWH", "kilowatt hour"), "MWh": ("MWH", "megawatt hour"),
    "VA": ("D46", "volt - ampere"), "kVA": ("KVA", "kilovolt - ampere"),
    "var": ("D44", "var"), "kvar": ("KVR", "kilovar"),
    "V": ("VLT", "volt"), "kV": ("KVT", "kilovolt"), "mV": ("2Z", "millivolt"),
    "A": ("AMP", "ampere"), "mA": ("4K", "milliampere"), "Ah": ("AMH", "ampere hour"),
    "Hz": ("HTZ", "hertz"), "%": ("P1", "percent"), "Ω": ("OHM", "ohm"), "ohm": ("OHM", "ohm"),
    "°C": ("CEL", "degree Celsius"), "degC": ("CEL", "degree Celsius"), "K": ("KEL", "kelvin"),
    "bar": ("BAR", "bar"), "mbar": ("MBR", "millibar"), "Pa": ("PAL", "pascal"), "kPa": ("KPA", "kilopascal"),
    "l/min": ("L2", "litre per minute"), "m³/h": ("MQH", "cubic metre per hour"),
    "m3/h": ("MQH", "cubic metre per hour"), "kg/h": ("E93", "kilogram per hour"), "kg": ("KGM", "kilogram"),
    "g/s": ("F29", "gram per second"), "Nm³/h": ("MQH", "cubic metre per hour"),
    "s": ("SEC", "second"), "ms": ("C26", "millisecond"), "min": ("MIN", "minute"), "h": ("HUR", "hour"),
    "rpm": ("RPM", "revolutions per minute"), "W/m²": ("D54", "watt per square metre"),
    "W/m2": ("D54", "watt per square metre"), "m/s": ("MTS", "metre per second"),
}


def unit_id(code: str) -> int:
    return int.from_bytes(code.encode("ascii"), "big")


def eu_information(symbol: str) -> ua.EUInformation:
    """Raise KeyError for a symbol not in the table."""
    code, description = UNITS[symbol]
    return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=unit_id(code),
                            DisplayName=ua.LocalizedText(symbol, "en"), Description=ua.LocalizedText(description, "en"))
