"""Modbus FieldAddress syntax and connection URI options."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from urllib.parse import urlsplit

import pytest

from gateway.drivers.modbus.address import DeviceOptions, ModbusAddress, parse_address, parse_connection


@pytest.mark.parametrize(
    ("text", "addressing", "expected"),
    [
        ("holding/100", 0, ("holding", 100)),
        ("holding/100", 1, ("holding", 99)),
        ("input/7", 0, ("input", 7)),
        ("coil/0", 0, ("coil", 0)),
        ("discrete/12", 0, ("discrete", 12)),
        ("hr/5", 0, ("holding", 5)),
        ("ir/5", 0, ("input", 5)),
        ("co/5", 0, ("coil", 5)),
        ("di/5", 0, ("discrete", 5)),
        ("HoldingRegister/3", 0, ("holding", 3)),
        ("InputRegister/3", 0, ("input", 3)),
        ("Coil/3", 0, ("coil", 3)),
        ("DiscreteInput/3", 0, ("discrete", 3)),
        ("HRegister/8192", 0, ("holding", 8192)),
        (" Holding / 0x1F ", 0, ("holding", 31)),
        ("holding/65535", 0, ("holding", 65535)),
        ("holding/65536", 1, ("holding", 65535)),
        ("holding/1", 1, ("holding", 0)),
        # Modicon: one-based by definition, whatever the device's addressing
        ("40001", 0, ("holding", 0)),
        ("40001", 1, ("holding", 0)),
        ("49999", 0, ("holding", 9998)),
        ("30001", 0, ("input", 0)),
        ("30010", 0, ("input", 9)),
        ("10001", 0, ("discrete", 0)),
        ("00001", 0, ("coil", 0)),
        ("400001", 0, ("holding", 0)),
        ("465536", 0, ("holding", 65535)),
        ("300100", 0, ("input", 99)),
        ("100001", 0, ("discrete", 0)),
        ("000002", 0, ("coil", 1)),
    ],
)
def test_address_forms(text: str, addressing: int, expected: tuple[str, int]) -> None:
    got = parse_address(text, addressing)
    assert got == expected
    assert isinstance(got, ModbusAddress) and got.table == expected[0] and got.offset == expected[1]


@pytest.mark.parametrize(
    ("text", "addressing", "message"),
    [
        ("40000", 0, "address 40000 is not a Modicon register (4xxxx starts at 40001)"),
        ("30000", 0, "address 30000 is not a Modicon register (3xxxx starts at 30001)"),
        ("10000", 0, "address 10000 is not a Modicon discrete input (1xxxx starts at 10001)"),
        ("00000", 0, "address 00000 is not a Modicon coil (0xxxx starts at 00001)"),
        ("0", 0, "address 0 is ambiguous"),
        ("17", 0, "address 17 is ambiguous: write TABLE/N (holding/17) or a 5- or 6-digit Modicon number "
                 "(00017 for coil 17, 40017 for holding register 17)"),
        ("400000", 0, "address 400000 is not a Modicon register (4xxxxx starts at 400001)"),
        ("465537", 0, "address 465537 is beyond the last Modicon holding address 465536"),
        ("20001", 0, "address 20001 is not a Modicon address (the first digit names the table"),
        ("500001", 0, "is not a Modicon address"),
        ("4000001", 0, "address 4000001 has more than 6 digits"),
        ("holding/0", 1, "address 'holding/0': 0 is outside 1..65536, the one-based (addressing=1) range"),
        ("holding/65536", 0, "65536 is outside 0..65535, the zero-based (addressing=0) range"),
        ("holding/-1", 0, "'-1' is not a register number"),
        ("holding/12a", 0, "'12a' is not a register number"),
        ("holding/1_000", 0, "'1_000' is not a register number"),
        ("register/1", 0, "unknown Modbus table 'register' (known: holding, input, coil, discrete)"),
        ("", 0, "empty Modbus address"),
        ("holding", 0, "address 'holding' is not a Modbus address"),
        ("4x0001", 0, "is not a Modbus address"),
        ("holding/1", 2, "addressing must be 0 or 1"),
    ],
)
def test_bad_addresses_are_named(text: str, addressing: int, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_address(text, addressing)
    assert message in str(err.value)


def test_defaults_need_no_query() -> None:
    opts = parse_connection("modbus+tcp://10.0.0.5")
    assert opts == DeviceOptions(scheme="modbus+tcp", host="10.0.0.5", port=502, unit=1)
    assert (opts.byte_order, opts.word_order, opts.addressing) == ("big", "big", 0)
    assert (opts.max_read_registers, opts.max_write_registers, opts.max_read_bits, opts.max_write_bits) == (
        125, 123, 2000, 1968)
    assert (opts.gap, opts.timeout_ms, opts.min_interval_ms, opts.write_function) == (0, 1000, 0, 6)
    assert opts.transport == "tcp"
    with pytest.raises(FrozenInstanceError):
        opts.unit = 2  # type: ignore[misc]


def test_tcp_with_every_option() -> None:
    opts = parse_connection(
        "modbus+tcp://host.example:1502/7?byte_order=big&word_order=little&addressing=1&max_read_registers=100"
        "&max_write_registers=60&max_read_bits=800&max_write_bits=400&gap=4&timeout_ms=250&min_interval_ms=20"
        "&write_function=16"
    )
    assert opts == DeviceOptions(
        scheme="modbus+tcp", host="host.example", port=1502, unit=7, byte_order="big", word_order="little",
        addressing=1, max_read_registers=100, max_write_registers=60, max_read_bits=800, max_write_bits=400, gap=4,
        timeout_ms=250, min_interval_ms=20, write_function=16,
    )


def test_split_result_is_accepted_as_the_driver_gets_it() -> None:
    assert parse_connection(urlsplit("modbus+tcp://127.0.0.1:5020/3")).unit == 3


def test_rtu_over_tcp() -> None:
    opts = parse_connection("modbus+rtutcp://192.168.1.50:4001/12")
    assert (opts.scheme, opts.transport, opts.host, opts.port, opts.unit) == ("modbus+rtutcp", "rtutcp",
                                                                            "192.168.1.50", 4001, 12)


def test_rtu_serial_port_and_line_settings() -> None:
    opts = parse_connection("modbus+rtu:///dev/ttyUSB0/3?baud=9600&parity=N&stopbits=2&bytesize=8")
    assert (opts.serial_port, opts.unit, opts.baud, opts.parity, opts.stopbits, opts.bytesize) == (
        "/dev/ttyUSB0", 3, 9600, "N", 2, 8)
    assert opts.transport == "rtu"
    # Modbus over Serial Line defaults: 19200 baud, even parity, one stop bit.
    d = parse_connection("modbus+rtu:///dev/serial/by-id/usb-FTDI-if00/247")
    assert (d.serial_port, d.unit, d.baud, d.parity, d.stopbits) == ("/dev/serial/by-id/usb-FTDI-if00", 247, 19200,
                                                                    "E", 1)
    assert parse_connection("modbus+rtu:///dev/ttyUSB0?parity=even").serial_port == "/dev/ttyUSB0"
    assert parse_connection("modbus+rtu:///dev/ttyUSB0").unit == 1
    assert parse_connection("modbus+rtu://COM3/2").serial_port == "COM3"


def test_link_key_groups_units_sharing_one_connection() -> None:
    a = parse_connection("modbus+tcp://ComBox:502/10")
    b = parse_connection("modbus+tcp://combox:502/11")
    c = parse_connection("modbus+tcp://combox:503/10")
    assert a.link_key == b.link_key != c.link_key
    s1 = parse_connection("modbus+rtu:///dev/ttyUSB0/1?baud=9600")
    s2 = parse_connection("modbus+rtu:///dev/ttyUSB0/2?baud=9600")
    assert s1.link_key == s2.link_key == ("rtu", "/dev/ttyUSB0", 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("opc.tcp://host:4840", "connection scheme 'opc.tcp' is not Modbus"),
        ("modbus+tcp:///1", "names no host"),
        ("modbus+tcp://host:0/1", "port 0 is not a TCP port"),
        ("modbus+tcp://host:99999/1", "the port is not a number"),
        ("modbus+tcp://host/1/2", "the path must be just the unit id"),
        ("modbus+tcp://host/256", "unit id '256' is not in 0..255"),
        ("modbus+tcp://host/x", "unit id 'x' is not in 0..255"),
        ("modbus+rtu:///dev/ttyUSB0/248", "unit id '248' is not in 0..247"),
        ("modbus+rtu:///?baud=9600", "names no serial port"),
        ("modbus+tcp://h/1?byte_order=middle", "option byte_order='middle' must be big or little"),
        ("modbus+tcp://h/1?word_order=", "option word_order='' must be big or little"),
        ("modbus+tcp://h/1?addressing=2", "option addressing=2 is out of range 0..1"),
        ("modbus+tcp://h/1?max_read_registers=126", "option max_read_registers=126 is out of range 1..125"),
        ("modbus+tcp://h/1?max_read_registers=0", "option max_read_registers=0 is out of range 1..125"),
        ("modbus+tcp://h/1?max_write_registers=124", "option max_write_registers=124 is out of range 1..123"),
        ("modbus+tcp://h/1?max_read_bits=2001", "option max_read_bits=2001 is out of range 1..2000"),
        ("modbus+tcp://h/1?max_write_bits=1969", "option max_write_bits=1969 is out of range 1..1968"),
        ("modbus+tcp://h/1?gap=-1", "option gap=-1 is out of range"),
        ("modbus+tcp://h/1?timeout_ms=0", "option timeout_ms=0 is out of range"),
        ("modbus+tcp://h/1?timeout_ms=1s", "option timeout_ms='1s' is not an integer"),
        ("modbus+tcp://h/1?min_interval_ms=-5", "option min_interval_ms=-5 is out of range"),
        ("modbus+tcp://h/1?write_function=5", "option write_function='5' must be 6"),
        ("modbus+tcp://h/1?baud=9600", "option 'baud' applies only to modbus+rtu"),
        ("modbus+rtutcp://h/1?parity=E", "option 'parity' applies only to modbus+rtu"),
        ("modbus+rtu:///dev/ttyS0/1?parity=X", "option parity='X' must be N, E or O"),
        ("modbus+rtu:///dev/ttyS0/1?stopbits=3", "option stopbits='3' must be 1 or 2"),
        ("modbus+rtu:///dev/ttyS0/1?bytesize=6", "option bytesize=6 is out of range 7..8"),
        ("modbus+rtu:///dev/ttyS0/1?baud=fast", "option baud='fast' is not an integer"),
        ("modbus+tcp://h/1?unit=2", "unknown Modbus option 'unit'"),
        ("modbus+tcp://h/1?retries=3", "unknown Modbus option 'retries' (known: byte_order"),
        ("modbus+tcp://h/1?gap=1&gap=2", "option 'gap' is given twice"),
    ],
)
def test_bad_connections_name_the_bad_part(url: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_connection(url)
    assert message in str(err.value)
