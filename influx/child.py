"""The writer process: `python -m gateway.influx.child QUEUE_FILE`, started by the gateway's SeriesWriter.

It reads the gateway's messages on stdin (frames.py), spools them to the queue file and sends the queue
to the server (spooler.py), and reports its counters and the last committed frame on stdout, a JSON
line per spool. Its log goes to stderr, which it shares with the gateway.

One writer process per queue file: it takes an exclusive flock on `QUEUE_FILE.lock` and waits at most
`LOCK_WAIT_S` for a previous one (still spooling what a killed gateway sent it) to exit. EOF on stdin
without a stop message means the gateway is gone: what was read is spooled and the process exits at
once; the next gateway start sends the queue.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from gateway.influx import frames
from gateway.influx.diskqueue import DiskQueue
from gateway.influx.spooler import QueueWriter

log = logging.getLogger("gateway.influx")

LOCK_WAIT_S = 10.0
WRITER_NICENESS = 10
EXIT_LOCKED = 3  # another writer process holds the queue
EXIT_BAD_INPUT = 4


def lock_queue(queue_file: Path, within_s: float) -> int | None:
    """An exclusive flock on the queue's lock file (held until the process exits), or None after `within_s`."""
    queue_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(queue_file.with_name(queue_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + within_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


class Reporter:
    """The JSON lines on stdout (from the spooler thread, and the main thread's last one)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.gone = False  # the gateway closed its end
        self._lock = threading.Lock()

    def __call__(self, writer: QueueWriter) -> None:
        line = (json.dumps(writer.counters()) + "\n").encode()
        with self._lock:
            if self.gone:
                return
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.gone = True


def run(queue_file: Path, stdin: BinaryIO, stdout: BinaryIO) -> int:
    if lock_queue(queue_file, LOCK_WAIT_S) is None:
        log.error("influx: another writer process still holds %s after %.0f s", queue_file, LOCK_WAIT_S)
        return EXIT_LOCKED
    messages = frames.read_messages(stdin.read)
    first = next(messages, None)
    if first is None:
        return 0
    if first[0] != frames.CONFIG:
        log.error("influx: the writer process expected its configuration first, got %r", first[0])
        return EXIT_BAD_INPUT
    config = frames.parse_config(first[1])
    queue = DiskQueue(queue_file, config.queue_max_bytes, int(config.queue_max_age_s * 1e9))
    report = Reporter(stdout)
    writer = QueueWriter(config, queue, on_spooled=report)
    writer.start()
    within_s = 0.0  # EOF without a stop message: the gateway is gone, spool and exit
    try:
        for kind, payload in messages:
            if kind == frames.DATA:
                writer.take(frames.parse_data(payload))
            elif kind == frames.SERIES:
                writer.take_series(frames.parse_series(payload))
            elif kind == frames.STOP:
                within_s = frames.parse_stop(payload)
                break
    finally:
        writer.stop(within_s)
        report(writer)  # what the sender did after the last spool
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s influx-writer[%(process)d] %(message)s")
    # The event loop's thread is not here to hold the GIL; the spooler and the sender still share it, and a
    # shorter switch interval lets the one waiting for a socket or SQLite get it back sooner.
    sys.setswitchinterval(0.001)
    # Points wait in the queue at no cost, the gateway's event loop does not: when the cores are short, the
    # scheduler gives them to the gateway first (measured: event-loop stalls over 50 ms at 100,000 points/s
    # with both at the same priority). A sandbox that forbids it (systemd's ~@resources) leaves it as is.
    try:
        os.nice(WRITER_NICENESS)
    except OSError as exc:
        log.info("writer process keeps the gateway's priority: %s", exc)
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gateway.influx.child QUEUE_FILE")
    sys.exit(run(Path(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer))


if __name__ == "__main__":
    main()
