"""The data dir (PKI, users, history, parameters): its default, its `--data-dir` option, its mode."""

from __future__ import annotations

import argparse
import logging
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "./gateway-data"
HELP = f"the data dir: PKI, users, history, parameters (default {DEFAULT_DATA_DIR})"


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """`--data-dir` on a sub-command's parser. SUPPRESS: given nowhere else, it keeps the value given
    before the sub-command (or the default), so `gateway --data-dir D users add ...`,
    `gateway users --data-dir D add ...` and `gateway users add ... --data-dir D` all agree."""
    parser.add_argument("--data-dir", default=argparse.SUPPRESS, metavar="DIR", help=HELP)


def ensure_data_dir(path: Path) -> None:
    """Create the data dir 0700, or make an existing one 0700: it holds the private key and the
    password hashes (an existing one may come from `mkdir`, or from systemd's StateDirectory=)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)
        log.info("data dir %s was accessible by group or others (mode %04o); now %04o", path, mode, mode & 0o700)
