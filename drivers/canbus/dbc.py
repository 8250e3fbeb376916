"""DBC files (cantools) and the addresses of CAN signals in them.

A variable's FieldAddress is `MESSAGE/SIGNAL`, MESSAGE being the message's name or its frame id as
written in the DBC (`0x100`, `256`); `id_offset` of the connection shifts every frame id of the
file, so one DBC serves several racks that differ only in their ids. A DBC is loaded once per
path and modification time (in a thread when the gateway runs, see CanDriver.start).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cantools
from cantools.database.can import Database, Message, Signal

SHIPPED = Path(__file__).resolve().parent / "dbc"  # the DBC files this driver ships (bms_rack.dbc)
_cache: dict[tuple[str, float], Database] = {}
_lock = threading.Lock()  # loaded from the event loop's thread at check time, from a worker when running


def resolve(name: str) -> Path:
    """A DBC named in a connection: a path (absolute, or relative to the working directory), else a file
    this driver ships. ValueError names where it looked."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    shipped = SHIPPED / name
    if not path.is_absolute() and shipped.is_file():
        return shipped
    also = f" nor {shipped}" if not path.is_absolute() else ""
    raise ValueError(f"DBC file '{name}' not found (not at {path.resolve()}{also})")


def load(path: Path) -> Database:
    """The database of a DBC file; ValueError naming the file and what cantools found wrong."""
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError as exc:
        raise ValueError(f"DBC file {path}: {exc.strerror}") from None
    with _lock:
        db = _cache.get(key)
        if db is None:
            try:
                # Not strict: DBC files from the field carry value tables of signals that no longer exist
                # (opendbc's tesla_can.dbc), which strict loading refuses outright; syntax errors still fail.
                loaded = cantools.database.load_file(str(path), database_format="dbc", strict=False)
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"DBC file {path}: cannot read it: {exc}") from None
            except Exception as exc:  # cantools raises its own ParseError and plain errors for bad files
                raise ValueError(f"DBC file {path}: {type(exc).__name__}: {exc}") from None
            if not isinstance(loaded, Database):
                raise ValueError(f"DBC file {path}: not a CAN database")
            db = _cache[key] = loaded
    return db


@dataclass(frozen=True, slots=True)
class SignalRef:
    """Where one variable's value lives: a signal of a message, at the device's frame id."""

    message: Message
    signal: Signal
    frame_id: int  # on the bus: the DBC's id plus the device's id_offset

    @property
    def multiplexer_value(self) -> int | None:
        """The multiplexer value under which this signal is sent (None: in every frame of the message)."""
        ids = self.signal.multiplexer_ids
        return ids[0] if ids else None


def parse_message_key(text: str) -> int | str:
    """A message as written in an address: its frame id (0x100, 256) or its name."""
    try:
        return int(text, 0)
    except ValueError:
        return text


def find_signal(db: Database, address: str, id_offset: int, source: str) -> SignalRef:
    """The signal an address names; ValueError naming what is missing, with the candidates."""
    message_text, sep, signal_name = address.partition("/")
    if not sep or not message_text or not signal_name or "/" in signal_name:
        raise ValueError(f"address '{address}' is not MESSAGE/SIGNAL (RackStatus/StateOfCharge, 0x100/Current)")
    key = parse_message_key(message_text)
    try:
        message = db.get_message_by_frame_id(key) if isinstance(key, int) else db.get_message_by_name(key)
    except KeyError:
        names = ", ".join(sorted(m.name for m in db.messages)) or "none"
        raise ValueError(f"{source} has no message '{message_text}' (messages: {names})") from None
    try:
        signal = message.get_signal_by_name(signal_name)
    except KeyError:
        names = ", ".join(s.name for s in message.signals)
        raise ValueError(f"message {message.name} has no signal '{signal_name}' (signals: {names})") from None
    return SignalRef(message, signal, message.frame_id + id_offset)
