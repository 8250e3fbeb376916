"""`gateway facade map SITE.xml [--format markdown|csv]`: the site's facade register map as a table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.nodeset.model import NodesetError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("facade", help="the Modbus TCP facade for SCADA")
    actions = p.add_subparsers(dest="facade_command", metavar="ACTION", required=True)
    show = actions.add_parser("map", help="print the facade's register map (Markdown or CSV) for the SCADA integrator")
    show.add_argument("files", nargs="+", metavar="FILE", help="the site's NodeSet2 XML files")
    show.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    show.set_defaults(func=_map)


async def _load(files: list[Path]) -> object:
    from asyncua import Server

    from gateway.site import load_site

    server = Server()
    await server.init()
    _, bindings = await load_site(server, files)
    return bindings.facade


def _map(args: argparse.Namespace) -> int:
    from gateway.facade.maptable import csv_text, markdown

    try:
        facade = asyncio.run(_load([Path(f) for f in args.files]))
    except NodesetError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    if facade is None:
        print("the site declares no facade (an Object with a FacadeEndpoint property)", file=sys.stderr)
        return 1
    sys.stdout.write(csv_text(facade) if args.format == "csv" else markdown(facade))  # type: ignore[arg-type]
    return 0
