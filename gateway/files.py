"""Files the gateway writes whole or not at all: the users file, the parameters, certificates and keys,
compiled sites.

One implementation for all of them, because each shortcut in one (a fixed temporary name, no fsync,
a temporary file whose mode differs from the result's) is a bug the others do not have.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomically(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `target` so a reader (or a crash) sees the old file or the new one, never half.

    A fresh temporary file beside the target (O_EXCL and O_NOFOLLOW: never an existing file or a planted
    link), fsync, rename over the target, fsync of the folder. `mode` is exact whatever the umask (0600
    for secrets); None gives what a plain open() would (0666 less the umask), for files other users read.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    tmp = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)  # the rename itself survives a power cut
    finally:
        os.close(folder_fd)
