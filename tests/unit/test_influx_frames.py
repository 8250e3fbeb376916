"""The messages between the gateway and its writer process: what the gateway encodes is what the writer
process decodes and spools, including the values the gateway rendered itself and alarm states."""

from __future__ import annotations

import io
from array import array
from pathlib import Path

from gateway.influx import frames
from gateway.influx.config import config_from_dict
from gateway.influx.diskqueue import DiskQueue
from gateway.influx.lineproto import fields
from gateway.influx.spooler import QueueWriter

CONFIG = config_from_dict({"server": {"version": 2, "url": "http://127.0.0.1:1", "org": "o", "token_env": "T"},
                           "targets": {"LowSpeed": {"bucket": "ls", "retention": "7d"}},
                           "queue": {"max_size": "2MB"}}, "test.yaml", {"T": "secret"})


def _data(number: int) -> bytes:
    return frames.data_message(number, array("I", [0, 1, 0]), array("I", [0, 2147483648, 0]),
                               array("q", [10, 20, 30]), array("d", [1.5, 0.0, -2.25]),
                               [(0, "ls", "Pump1,variable=V0"), (1, "ls", "Pump1,variable=V1")],
                               {1: fields("say \"hi\"", 2147483648)},
                               [("ls", "alarms,source=Pump1", 40, "active=true")])


def test_config_survives_the_pipe_with_its_secret() -> None:
    kind, payload = next(frames.read_messages(io.BytesIO(frames.config_message(CONFIG)).read))
    assert kind == frames.CONFIG
    assert frames.parse_config(payload) == CONFIG


def test_a_frame_round_trips_and_spools_as_lines(tmp_path: Path) -> None:
    kind, payload = next(frames.read_messages(io.BytesIO(_data(7)).read))
    frame = frames.parse_data(payload)
    assert (kind, frame.number, len(frame), list(frame.ts_ns)) == (frames.DATA, 7, 3, [10, 20, 30])
    queue = DiskQueue(tmp_path / "q.sqlite3")
    queue.open()
    writer = QueueWriter(CONFIG, queue)
    writer.take(frame)
    writer._spool_once()
    assert writer.committed == 7
    assert [p[2] for p in queue.head(10)] == [
        "Pump1,variable=V0 value=1.5,quality=0i 10",
        'Pump1,variable=V1 text="say \\"hi\\"",quality=2147483648i 20',
        "Pump1,variable=V0 value=-2.25,quality=0i 30",
        "alarms,source=Pump1 active=true 40"]
    writer.endpoint.close()


def test_a_message_cut_short_by_eof_is_not_returned() -> None:
    stream = frames.series_message([(0, "ls", "k")]) + _data(1) + _data(2)[:-5]
    kinds = [kind for kind, _ in frames.read_messages(io.BytesIO(stream).read)]
    assert kinds == [frames.SERIES, frames.DATA]

