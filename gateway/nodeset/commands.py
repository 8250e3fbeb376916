"""`gateway nodeset check FILE...` and `gateway nodeset build SITE.yaml -o SITE.xml`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.nodeset.model import NodesetError, Problem


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nodeset", help="validate or author site nodesets")
    ns = p.add_subparsers(dest="nodeset_command", metavar="ACTION", required=True)
    check = ns.add_parser("check", help="validate a site without starting it (same checks as at start-up)")
    check.add_argument("files", nargs="+", metavar="FILE", help="the site's NodeSet2 XML files")
    check.set_defaults(func=_check)
    build = ns.add_parser("build", help="compile a YAML site into NodeSet2 XML")
    build.add_argument("source", metavar="SITE.yaml")
    build.add_argument("-o", "--output", required=True, metavar="SITE.xml")
    build.set_defaults(func=_build)
    imp = ns.add_parser("import-instruments", help="turn instrument JSON files (EquipmentTags + Channels; Modbus, "
                                                   "SCPI, Opto, MQTT and Ping instruments) into a site")
    imp.add_argument("files", nargs="+", metavar="FILE.json")
    imp.add_argument("-o", "--output", required=True, metavar="SITE.xml")
    imp.add_argument("--yaml", metavar="SITE.yaml", help="also write the site as YAML, for editing and `build`")
    imp.add_argument("--namespace", default="urn:opcua-gateway:imported-site", help="the site's namespace URI")
    imp.add_argument("--name", default="ImportedSite", help="the site's root object name")
    imp.add_argument("--mqtt-broker", metavar="HOST[:PORT]",
                     help="the broker of MQTT instruments whose files name none (EquipmentTags.Connection.IP)")
    imp.set_defaults(func=_import_instruments)


def _report(exc: NodesetError) -> int:
    for p in exc.problems:
        print(p, file=sys.stderr)
    print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
    return 1


async def check_site(files: list[Path]) -> tuple[str, list[Problem]]:
    """Run the start-up pipeline short of serving; returns a summary and the warnings, or raises NodesetError."""
    from asyncua import Server

    from gateway.addressspace.standard_cache import CachedInternalServer
    from gateway.site import load_site

    server = Server(iserver=CachedInternalServer())
    await server.init()
    site, bindings = await load_site(server, files)
    n_vars = sum(len(d.variables) for d in bindings.devices)
    classes = ", ".join(f"{k}={v:g}ms" for k, v in bindings.scan_classes.items())
    warned = f", {len(bindings.warnings)} warning(s)" if bindings.warnings else ""
    facade = bindings.facade
    if facade is not None:
        warned = f", a Modbus facade of {len(facade.mappings)} mapping(s) on port {facade.port}" + warned
    return (f"ok: {len(site.new_nodes)} nodes in {len(site.files)} nodeset(s), {len(bindings.devices)} devices, "
            f"{n_vars} bound variables, scan classes {classes}{warned}"), bindings.warnings


async def check_files(files: list[Path]) -> str:
    """check_site's summary."""
    return (await check_site(files))[0]


def _check(args: argparse.Namespace) -> int:
    try:
        summary, warnings = asyncio.run(check_site([Path(f) for f in args.files]))
    except NodesetError as exc:
        return _report(exc)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(summary)
    return 0


def _build(args: argparse.Namespace) -> int:
    from gateway.nodeset.yaml_build import build_file

    try:
        build_file(Path(args.source), Path(args.output))
    except NodesetError as exc:
        return _report(exc)
    print(f"wrote {args.output}")
    return 0


def _import_instruments(args: argparse.Namespace) -> int:
    import yaml

    from gateway.files import write_atomically
    from gateway.nodeset.instruments import instruments_to_site
    from gateway.nodeset.yaml_build import build

    try:
        result = instruments_to_site([Path(f) for f in args.files], args.namespace, args.name, args.mqtt_broker)
        xml = build(result.site, ", ".join(args.files))
    except NodesetError as exc:
        return _report(exc)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    write_atomically(Path(args.output), xml)
    if args.yaml:
        write_atomically(Path(args.yaml), yaml.safe_dump(result.site, sort_keys=False, allow_unicode=True).encode())
    n_vars = sum(len(d["variables"]) for d in result.site["devices"])
    print(f"wrote {args.output}: {len(result.site['devices'])} devices, {n_vars} variables")
    return 0
