"""The OPC Foundation DI, IA and Machinery nodesets load as asyncua's own importer loads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.nodeset.loader import load_nodesets

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "nodesets"
FILES = [SHARED / f"Opc.Ua.{n}.NodeSet2.xml" for n in ("Machinery", "IA", "Di")]  # deliberately out of order
SKIP_REVERSE = {ua.ObjectIds.HasTypeDefinition, ua.ObjectIds.HasModellingRule}
ATTRS = [
    ua.AttributeIds.NodeClass, ua.AttributeIds.BrowseName, ua.AttributeIds.DisplayName, ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank, ua.AttributeIds.IsAbstract, ua.AttributeIds.Value,
]


def _key(nid: ua.NodeId, ns: list[str]) -> tuple[str, object]:
    return ns[nid.NamespaceIndex], nid.Identifier


def _norm(value: object, ns: list[str]) -> object:
    if isinstance(value, ua.NodeId):
        return _key(value, ns)
    if isinstance(value, ua.QualifiedName):
        return ns[value.NamespaceIndex], value.Name
    if isinstance(value, list):
        return [_norm(v, ns) for v in value]
    return value


async def _snapshot(server: Server, new_ns: set[str]) -> dict:
    ns = await server.get_namespace_array()
    aspace = server.iserver.aspace
    snap = {}
    for nid in list(aspace.keys()):
        if ns[nid.NamespaceIndex] not in new_ns:
            continue
        nd = aspace[nid]
        attrs = {}
        for a in ATTRS:
            av = nd.attributes.get(a)
            v = av.value.Value.Value if av is not None and av.value is not None and av.value.Value else None
            if a == ua.AttributeIds.Value and hasattr(v, "__dataclass_fields__"):
                v = repr(v)  # generated classes differ per import; compare their content
            attrs[a.name] = _norm(v, ns)
        refs = {
            (_key(r.ReferenceTypeId, ns), _key(r.NodeId, ns), r.IsForward)
            for r in nd.references
            if r.IsForward or r.ReferenceTypeId.Identifier not in SKIP_REVERSE
        }
        snap[_key(nid, ns)] = (attrs, refs)
    return snap


@pytest.mark.integration
async def test_foundation_nodesets_match_asyncua_import() -> None:
    ours = Server()
    await ours.init()
    site = await load_nodesets(ours, FILES)
    new_ns = {u for u in site.namespaces if u.startswith("http://opcfoundation.org/UA/") and u.count("/") > 4}
    assert new_ns == {f"http://opcfoundation.org/UA/{m}/" for m in ("DI", "IA", "Machinery")}

    ref = Server()
    await ref.init()
    for f in (FILES[2], FILES[0], FILES[1]):
        await ref.import_xml(f)

    a = await _snapshot(ours, new_ns)
    b = await _snapshot(ref, new_ns)
    assert set(a) == set(b), "node sets differ"
    diffs = []
    for k in a:
        ours_attrs, ref_attrs = _comparable(a[k][0]), _comparable(b[k][0])
        if ours_attrs != ref_attrs:
            diffs.append((k, {n: (ours_attrs[n], ref_attrs[n]) for n in ours_attrs if ours_attrs[n] != ref_attrs[n]}))
        missing = b[k][1] - a[k][1]
        if missing:
            diffs.append((k, "missing references", missing))
        # Every extra reference of ours must be the inverse of one the XML states on the other node.
        for reftype, target, forward in a[k][1] - b[k][1]:
            assert not forward and (reftype, k, True) in a[target][1], (k, reftype, target)
    assert not diffs, f"{len(diffs)} nodes differ, first: {diffs[:5]}"

    # Where asyncua's importer is wrong, say what is right: QualifiedName values are remapped to
    # the server's namespace index (asyncua keeps the file-local index, pointing at another model).
    ns = await ours.get_namespace_array()
    lock = ours.get_node(ua.NodeId(15890, ns.index("http://opcfoundation.org/UA/DI/")))
    assert (await lock.read_value()) == ua.QualifiedName("Lock", ns.index("http://opcfoundation.org/UA/DI/"))
    # A variable without a DataType attribute has the schema default BaseDataType, not a null id.
    no_type = ours.get_node(ua.NodeId(6017, ns.index("http://opcfoundation.org/UA/DI/")))
    assert (await no_type.read_data_type()) == ua.NodeId(ua.ObjectIds.BaseDataType)


def _comparable(attrs: dict) -> dict:
    """Fold the places where asyncua's importer loses information, so the rest compares exactly."""
    out = dict(attrs)
    value = out["Value"]
    if value == "" or value == "LocalizedText(Locale=None, Text=None)":
        out["Value"] = None  # asyncua reads an empty <String/> as null
    if isinstance(value, str) and value.startswith("QualifiedName("):
        out["Value"] = value.split("Name=")[1]  # asyncua does not remap the namespace index
    if out["DataType"] == ("http://opcfoundation.org/UA/", 0):
        out["DataType"] = ("http://opcfoundation.org/UA/", 24)
    out["DisplayName"] = getattr(out["DisplayName"], "Text", out["DisplayName"])  # asyncua drops the locale
    return out


@pytest.mark.integration
async def test_minified_nodesets_load_the_same(tmp_path: Path) -> None:
    from lxml import etree

    minified = []
    for f in FILES:
        tree = etree.parse(str(f), etree.XMLParser(remove_blank_text=True, remove_comments=True))
        out = tmp_path / f.name
        out.write_bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))
        assert b">\n " not in out.read_bytes() and b">  <" not in out.read_bytes()  # no indentation left
        minified.append(out)
    pretty, small = Server(), Server()
    await pretty.init()
    await small.init()
    a = await load_nodesets(pretty, FILES)
    b = await load_nodesets(small, minified)
    assert sorted(map(str, a.new_nodes)) == sorted(map(str, b.new_nodes))
    models = {f"http://opcfoundation.org/UA/{m}/" for m in ("DI", "IA", "Machinery")}
    assert await _snapshot(pretty, models) == await _snapshot(small, models)
