"""What the gateway sends to its writer process on the process's stdin, and what comes back on stdout.

Gateway -> writer, messages of `<type byte><payload length, 4 bytes>` then the payload:
- `C` the configuration (JSON of InfluxConfig, secrets included: a pipe, never the command line);
- `T` series definitions (JSON `[[number, target, key], ...]`): sent before a number is first used, and
  all of them again to a restarted writer;
- `D` a frame: `<frame number 8, points 4, side length 4>`, the side part (JSON: series defined in this
  frame, fields rendered by the gateway for values that are not finite floats, alarm-state rows), then
  four arrays of the points in native byte order: series number `I`, status `I`, timestamp ns `q`,
  value `d` (the value of a point whose fields came in the side part is not read);
- `S` stop (JSON `{"within_s": s}`): spool what came, send what `within_s` allows, exit. EOF without it
  (the gateway was killed): spool what came and exit at once.

Writer -> gateway: one JSON object a line, after every spool (every `SPOOL_EVERY_S`): the counters of
Gateway/Diagnostics/Influx and `committed`, the last frame number whose points are in the queue on disk.

Arrays, not a tuple per point: the gateway's listener appends four numbers to four `array.array`s,
which allocates nothing the garbage collector tracks, and a frame is their bytes, copied once.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.influx.config import InfluxConfig, Target

HEADER = struct.Struct("<cI")
FRAME_HEADER = struct.Struct("<QII")
CONFIG, SERIES, DATA, STOP = b"C", b"T", b"D", b"S"


@dataclass
class Frame:
    number: int
    series: array  # 'I'
    status: array  # 'I'
    ts_ns: array  # 'q'
    values: array  # 'd'
    series_defs: list[tuple[int, str, str]] = field(default_factory=list)  # number, target, key
    rendered: dict[int, str] = field(default_factory=dict)  # index in the frame -> fields
    alarms: list[tuple[str, str, int, str]] = field(default_factory=list)  # target, key, ts ns, fields

    def __len__(self) -> int:
        return len(self.series)


def message(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def config_message(config: InfluxConfig) -> bytes:
    raw = dataclasses.asdict(config)
    raw["ca_file"] = str(config.ca_file) if config.ca_file is not None else None
    return message(CONFIG, json.dumps(raw).encode())


def parse_config(payload: bytes) -> InfluxConfig:
    raw = json.loads(payload)
    raw["targets"] = {k: Target(**v) for k, v in raw["targets"].items()}
    raw["ca_file"] = Path(raw["ca_file"]) if raw["ca_file"] else None
    return InfluxConfig(**raw)


def series_message(defs: list[tuple[int, str, str]]) -> bytes:
    return message(SERIES, json.dumps(defs).encode())


def parse_series(payload: bytes) -> list[tuple[int, str, str]]:
    return _series_defs(json.loads(payload))


def _series_defs(raw: list[list[Any]]) -> list[tuple[int, str, str]]:
    return [(int(n), str(target), str(key)) for n, target, key in raw]


def stop_message(within_s: float) -> bytes:
    return message(STOP, json.dumps({"within_s": within_s}).encode())


def parse_stop(payload: bytes) -> float:
    """The stop message's `within_s`."""
    return float(json.loads(payload)["within_s"])


def data_message(number: int, series: array, status: array, ts_ns: array, values: array,
                 series_defs: list[tuple[int, str, str]], rendered: dict[int, str],
                 alarms: list[tuple[str, str, int, str]]) -> bytes:
    side = b""
    if series_defs or rendered or alarms:
        side = json.dumps({"series": series_defs, "rendered": list(rendered.items()), "alarms": alarms}).encode()
    parts = [FRAME_HEADER.pack(number, len(series), len(side)), side, series.tobytes(), status.tobytes(),
             ts_ns.tobytes(), values.tobytes()]
    return message(DATA, b"".join(parts))


def parse_data(payload: bytes) -> Frame:
    number, n, side_len = FRAME_HEADER.unpack_from(payload)
    at = FRAME_HEADER.size
    side: dict[str, Any] = json.loads(payload[at:at + side_len]) if side_len else {}
    at += side_len
    arrays = []
    for code, size in (("I", 4), ("I", 4), ("q", 8), ("d", 8)):
        a = array(code)
        a.frombytes(payload[at:at + n * size])
        at += n * size
        arrays.append(a)
    if at != len(payload):
        raise ValueError(f"frame {number}: {len(payload)} bytes, expected {at}")
    return Frame(number, *arrays, series_defs=_series_defs(side.get("series", [])),
                 rendered={int(i): f for i, f in side.get("rendered", ())},
                 alarms=[tuple(a) for a in side.get("alarms", ())])  # type: ignore[misc]


def read_messages(read: Callable[[int], bytes]) -> Any:
    """(kind, payload) of each message from a blocking `read(n)` (a file's read), until EOF; a message cut
    short by EOF (the gateway killed while writing it) is not returned."""
    while True:
        head = _read_exactly(read, HEADER.size)
        if head is None:
            return
        kind, length = HEADER.unpack(head)
        payload = _read_exactly(read, length)
        if payload is None:
            return
        yield kind, payload


def _read_exactly(read: Callable[[int], bytes], n: int) -> bytes | None:
    if n == 0:
        return b""
    chunks = []
    left = n
    while left:
        chunk = read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
