"""`gateway` command line: run a site, or one of the `nodeset`, `users`, `pki`, `facade` and `dashboards` commands.

Each command group lives in its own module and registers its sub-parser here through
`add_parser(subparsers)`; the handler it sets as `func` returns the process exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gateway import product
from gateway.datadir import DEFAULT_DATA_DIR
from gateway.datadir import HELP as DATA_DIR_HELP
from gateway.facade import cli as facade_cli
from gateway.influx.dashboards import cli as dashboards_cli
from gateway.nodeset import commands as nodeset_commands
from gateway.security import pki_cli, users_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="OPC UA gateway: serve a site described as NodeSet2 XML.",
    )
    parser.add_argument(
        "--nodeset", action="append", default=[], metavar="FILE",
        help="a NodeSet2 XML file of the site (repeat for several; loaded in RequiredModel order)",
    )
    parser.add_argument(
        "--endpoint", default="opc.tcp://0.0.0.0:4840",
        help="endpoint URL to listen on (default opc.tcp://0.0.0.0:4840)",
    )
    parser.add_argument("--version", action="version",
                        version=f"gateway ({product.DISTRIBUTION}) {product.version()}")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument(
        "--insecure", action="store_true",
        help="also offer SecurityPolicy None (lab use and tests only; logged as a warning)",
    )
    parser.add_argument(
        "--no-anonymous", action="store_true", help="refuse anonymous sessions (they are viewers otherwise)"
    )
    parser.add_argument(
        "--simulate", action="store_true",
        help="serve every field device from a built-in simulator on loopback (no hardware needed)",
    )
    parser.add_argument(
        "--influx", metavar="CONFIG",
        help="write every value change to InfluxDB as configured in this YAML file (off when not given)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    nodeset_commands.add_parser(sub)
    users_cli.add_parser(sub)
    pki_cli.add_parser(sub)
    facade_cli.add_parser(sub)
    dashboards_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # asyncua logs every base-nodeset quirk at INFO while the server initialises; only its
        # warnings concern an operator.
        logging.getLogger("asyncua").setLevel(logging.WARNING)
    if args.command:
        return int(args.func(args))
    if not args.nodeset:
        parser.error("give at least one --nodeset FILE (or a command; see --help)")
    from gateway.app import run_from_args

    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
