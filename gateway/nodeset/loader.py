"""Load NodeSet2 documents straight into an asyncua address space.

asyncua's `import_xml` goes through AddNodes/AddReferences item by item and then scans reference
lists linearly to add the missing reverse references, which is quadratic (23k nodes: 112 s).
This loader validates everything first, then builds NodeData objects directly with a hash set
per node for reference de-duplication, so loading is linear in nodes plus references.

Every problem found (bad ids, duplicates, dangling references, unknown data types, values that
don't parse as their type) is collected with its file, line and node; if there is any, nothing
may be served (the caller never starts a server whose load raised).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.structures104 import load_custom_struct_xml_import, load_enum_xml_import
from asyncua.server.address_space import AddressSpace, NodeData
from lxml import etree

from gateway.addressspace.collector import collector_paused
from gateway.nodeset.attributes import parse_attributes
from gateway.nodeset.memory import release_freed_memory
from gateway.nodeset.model import UA_NAMESPACE, NodesetDocument, NodesetError, NodeSpec, Problem
from gateway.nodeset.nodedata import CompactAttributes, CompactNodeData, Layout, attribute_value
from gateway.nodeset.nodedata import CompactAttributeValue as AttributeValue
from gateway.nodeset.order import order_documents
from gateway.nodeset.parser import parse_nodeset
from gateway.nodeset.resolve import Resolver
from gateway.nodeset.typecheck import TypeIndex, check_value_type
from gateway.nodeset.values import ValueDecodeError, ValueDecoder

log = logging.getLogger(__name__)

_NODECLASS = {
    "UAObject": ua.NodeClass.Object,
    "UAVariable": ua.NodeClass.Variable,
    "UAMethod": ua.NodeClass.Method,
    "UAView": ua.NodeClass.View,
    "UAObjectType": ua.NodeClass.ObjectType,
    "UAVariableType": ua.NodeClass.VariableType,
    "UADataType": ua.NodeClass.DataType,
    "UAReferenceType": ua.NodeClass.ReferenceType,
}
_HAS_TYPEDEF = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_HAS_ENCODING = ua.NodeId(ua.ObjectIds.HasEncoding)
_HAS_MODELLING_RULE = ua.NodeId(ua.ObjectIds.HasModellingRule)
# Reverse references that would pile up by the thousand on a few shared ns0 nodes (every
# instance points at its type and at ModellingRule Mandatory); browsing those inverse is not
# needed by clients, and OPC UA does not require servers to expose them.
_NO_REVERSE = {_HAS_TYPEDEF, _HAS_MODELLING_RULE}
_STRUCTURE = ua.NodeId(ua.ObjectIds.Structure)
_NULL_ID = ua.NodeId()
_NULL_VALUE = ua.DataValue(ua.Variant())
_NODECLASS_OF = {int(c): c for c in ua.NodeClass}
_SCAN_REFERENCES = 16  # a node with fewer references is checked for a duplicate by looking through them
_ENUMERATION = ua.NodeId(ua.ObjectIds.Enumeration)
_OPTION_SET = ua.NodeId(ua.ObjectIds.OptionSet)


@dataclass
class LoadedSite:
    files: list[str]  # the documents' paths, in load order (the parsed documents are not kept: ~7 KB a node)
    new_nodes: list[ua.NodeId]
    namespaces: dict[str, int]  # namespace URI -> server index
    origins: dict[ua.NodeId, tuple[str, int, str]] = field(default_factory=dict)  # file, line, id as written
    seconds: float = 0.0


@dataclass(slots=True)
class _Resolved:
    spec: NodeSpec
    doc: NodesetDocument
    resolver: Resolver
    nodeid: ua.NodeId
    nodeclass: ua.NodeClass
    browsename: ua.QualifiedName
    refs: list[tuple[ua.NodeId, ua.NodeId, bool, int]]  # reftype, target, forward, line
    datatype: ua.NodeId | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # typed XML attributes (attributes.py)

    def problem(self, message: str, line: int | None = None) -> Problem:
        return Problem(self.doc.path, line or self.spec.line, self.spec.nodeid, message)


def parse_files(paths: Iterable[str | Path]) -> tuple[list[NodesetDocument], list[Problem]]:
    docs: list[NodesetDocument] = []
    problems: list[Problem] = []
    for p in paths:
        doc, probs = parse_nodeset(p)
        problems.extend(probs)
        if doc is not None:
            docs.append(doc)
    return docs, problems


async def load_nodesets(server: Server, paths: Iterable[str | Path]) -> LoadedSite:
    """Parse, order, validate and insert; raises NodesetError listing every problem."""
    started = datetime.now(UTC)
    with collector_paused():
        docs, problems = parse_files(paths)
        if problems:
            raise NodesetError(problems)
        loaded = await load_documents(server, docs)
    del docs
    release_freed_memory()
    loaded.seconds = (datetime.now(UTC) - started).total_seconds()
    return loaded


async def load_documents(server: Server, docs: list[NodesetDocument]) -> LoadedSite:
    aspace: AddressSpace = server.iserver.aspace
    ns_array: list[str] = await server.get_namespace_array()
    ordered, problems = order_documents(docs, known_models=set(ns_array))
    if problems:
        raise NodesetError(problems)

    namespaces: dict[str, int] = {uri: i for i, uri in enumerate(ns_array)}
    resolvers: list[Resolver] = []
    for doc in ordered:
        ns_map = [0]
        for uri in doc.namespace_uris:
            if uri not in namespaces:
                namespaces[uri] = await server.register_namespace(uri)
            ns_map.append(namespaces[uri])
        resolvers.append(Resolver(doc, ns_map))

    nodes, problems = _resolve_all(ordered, resolvers, aspace)
    if problems:
        raise NodesetError(problems)
    types = TypeIndex(aspace, nodes)
    problems = _check_references(nodes, aspace, types)
    if problems:
        raise NodesetError(problems)

    _insert(nodes, aspace)
    problems = await _register_datatypes(nodes, aspace)
    problems += _set_values(nodes, aspace, types)
    if problems:
        raise NodesetError(problems)
    log.info("loaded %d nodes from %d nodeset(s)", len(nodes), len(ordered))
    origins = {nid: (r.doc.path, r.spec.line, r.spec.nodeid) for nid, r in nodes.items()}
    return LoadedSite([doc.path for doc in ordered], list(nodes), namespaces, origins)


def _resolve_all(
    docs: list[NodesetDocument], resolvers: list[Resolver], aspace: AddressSpace
) -> tuple[dict[ua.NodeId, _Resolved], list[Problem]]:
    problems: list[Problem] = []
    nodes: dict[ua.NodeId, _Resolved] = {}
    for doc, res in zip(docs, resolvers, strict=True):
        for spec in doc.nodes:
            try:
                nid = res.nodeid(spec.nodeid)
                bname = res.qname(spec.browsename)
            except ValueError as exc:
                problems.append(Problem(doc.path, spec.line, spec.nodeid, str(exc)))
                continue
            r = _Resolved(spec, doc, res, nid, _NODECLASS[spec.tag], bname, [])
            r.attributes, wrong = parse_attributes(spec.attrs)
            problems.extend(r.problem(message) for message in wrong)
            if nid in nodes:
                first = nodes[nid]
                problems.append(
                    r.problem(f"duplicate NodeId: also defined at {first.doc.path}:{first.spec.line}")
                )
                continue
            if nid in aspace:
                problems.append(r.problem("duplicate NodeId: already defined by the server or an earlier model"))
                continue
            for ref in spec.refs:
                try:
                    r.refs.append((res.nodeid(ref.reftype), res.nodeid(ref.target), ref.forward, ref.line))
                except ValueError as exc:
                    problems.append(r.problem(f"reference: {exc}", ref.line))
            if spec.tag in ("UAVariable", "UAVariableType"):
                try:
                    r.datatype = res.nodeid(spec.attrs.get("DataType", "i=24"))
                except ValueError as exc:
                    problems.append(r.problem(f"DataType: {exc}"))
            nodes[nid] = r
    return nodes, problems


def _check_references(
    nodes: dict[ua.NodeId, _Resolved], aspace: AddressSpace, types: TypeIndex
) -> list[Problem]:
    problems: list[Problem] = []
    for r in nodes.values():
        for reftype, target, _fwd, line in r.refs:
            if types.nodeclass(reftype) != ua.NodeClass.ReferenceType:
                problems.append(r.problem(f"unknown reference type {reftype.to_string()}", line))
            if target not in nodes and target not in aspace:
                problems.append(r.problem(f"dangling reference: target {target.to_string()} does not exist", line))
        if r.datatype is not None and types.nodeclass(r.datatype) != ua.NodeClass.DataType:
            problems.append(r.problem(f"unknown data type '{r.spec.attrs.get('DataType')}'"))
        parent = r.spec.attrs.get("ParentNodeId")
        if parent:
            try:
                pid = r.resolver.nodeid(parent)
            except ValueError as exc:
                problems.append(r.problem(f"ParentNodeId: {exc}"))
            else:
                if pid not in nodes and pid not in aspace:
                    problems.append(r.problem(f"ParentNodeId {parent} does not exist"))
    return problems


_SHARED: dict[tuple[object, ua.VariantType], ua.DataValue] = {}


def _scalar_variant(value: object, vtype: ua.VariantType) -> ua.Variant:
    """A scalar Variant of a known type without Variant.__post_init__, which guesses types and
    checks shapes: a third of the insert time for values whose type is already exact."""
    v = object.__new__(ua.Variant)
    v.Value, v.VariantType, v.Dimensions, v.is_array = value, vtype, None, False
    return v


def _data_value(value: object, vtype: ua.VariantType) -> ua.DataValue:
    dv = object.__new__(ua.DataValue)  # DataValue.__post_init__ only wraps non-Variants
    dv.Value, dv.StatusCode, dv.SourceTimestamp, dv.ServerTimestamp = _scalar_variant(value, vtype), _GOOD, None, None
    dv.SourcePicoseconds = dv.ServerPicoseconds = None
    dv.Encoding = 0
    return dv


def _dv(value: object, vtype: ua.VariantType) -> AttributeValue:
    """An attribute value unique to its node (NodeId, lists)."""
    return AttributeValue(_data_value(value, vtype))


class _Names:
    """One BrowseName, DisplayName or Description DataValue per distinct name, shared by every node that has
    it: a site repeats its names (every bound variable has an EURange and a FieldAddress, every device a V0).
    Shared as the common attributes are: a write replaces a node's DataValue, never mutates it."""

    def __init__(self) -> None:
        self._values: dict[tuple[ua.VariantType, object, object], ua.DataValue] = {}

    def browse(self, qname: ua.QualifiedName) -> ua.DataValue:
        key = (ua.VariantType.QualifiedName, qname.Name, qname.NamespaceIndex)
        dv = self._values.get(key)
        if dv is None:
            dv = self._values[key] = _data_value(qname, ua.VariantType.QualifiedName)
        return dv

    def text(self, text: str | None, locale: str | None) -> ua.DataValue:
        key = (ua.VariantType.LocalizedText, text, locale)
        dv = self._values.get(key)
        if dv is None:
            dv = self._values[key] = _data_value(ua.LocalizedText(Text=text, Locale=locale),
                                                 ua.VariantType.LocalizedText)
        return dv


_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_NO_DIMENSIONS = ua.DataValue(ua.Variant(None, ua.VariantType.UInt32, is_array=True))


def _shared(value: bool | int | float | str | ua.NodeId, vtype: ua.VariantType) -> AttributeValue:
    """An attribute value that repeats across nodes (WriteMask 0, ValueRank -1, a DataType...).

    asyncua replaces a DataValue on write rather than mutating it, so equal ones can be shared;
    building Variants is most of the cost of loading.
    """
    key = (value, vtype)
    dv = _SHARED.get(key)
    if dv is None:
        dv = _SHARED[key] = ua.DataValue(ua.Variant(value, vtype))
    return AttributeValue(dv)


_EMPTY_DESCRIPTION = ua.DataValue(ua.Variant(ua.LocalizedText(), ua.VariantType.LocalizedText))


def _lt(text: object) -> ua.LocalizedText:
    return ua.LocalizedText(Text=getattr(text, "text", None), Locale=getattr(text, "locale", None))


_GROUP_ATTRS = ("WriteMask", "UserWriteMask", "EventNotifier", "ContainsNoLoops", "ValueRank", "AccessLevel",
                 "UserAccessLevel", "MinimumSamplingInterval", "Historizing", "IsAbstract", "Symmetric",
                 "Executable", "UserExecutable")


def _common_attributes(nc: ua.NodeClass, datatype: ua.NodeId | None,
                       attrs: dict[str, Any]) -> list[tuple[ua.AttributeIds, ua.DataValue]]:
    """The attributes a node shares with every node of the same class and settings (all but its
    identity, names and value). A site has few distinct combinations, so they are built once.
    `attrs` are the node's typed attributes (parse_attributes), defaults as Part 3 gives them."""
    out = [(ua.AttributeIds.NodeClass, _shared(int(nc), ua.VariantType.Int32)),
           (ua.AttributeIds.WriteMask, _shared(attrs.get("WriteMask", 0), ua.VariantType.UInt32)),
           (ua.AttributeIds.UserWriteMask, _shared(attrs.get("UserWriteMask", 0), ua.VariantType.UInt32))]
    if nc in (ua.NodeClass.Object, ua.NodeClass.View):
        out.append((ua.AttributeIds.EventNotifier, _shared(attrs.get("EventNotifier", 0), ua.VariantType.Byte)))
    if nc == ua.NodeClass.View:
        out.append((ua.AttributeIds.ContainsNoLoops,
                    _shared(attrs.get("ContainsNoLoops", False), ua.VariantType.Boolean)))
    if nc in (ua.NodeClass.Variable, ua.NodeClass.VariableType):
        out.append((ua.AttributeIds.DataType, _shared(datatype, ua.VariantType.NodeId)))
        out.append((ua.AttributeIds.ValueRank, _shared(attrs.get("ValueRank", -1), ua.VariantType.Int32)))
    if nc == ua.NodeClass.Variable:
        access = attrs.get("AccessLevel", 1)
        out.append((ua.AttributeIds.AccessLevel, _shared(access, ua.VariantType.Byte)))
        # Per-user rights are decided by the gateway's write path from the session's role;
        # the attribute shows what the node allows at all.
        out.append((ua.AttributeIds.UserAccessLevel,
                    _shared(attrs.get("UserAccessLevel", access), ua.VariantType.Byte)))
        out.append((ua.AttributeIds.MinimumSamplingInterval,
                    _shared(attrs.get("MinimumSamplingInterval", 0.0), ua.VariantType.Double)))
        out.append((ua.AttributeIds.Historizing, _shared(attrs.get("Historizing", False), ua.VariantType.Boolean)))
    if nc in (ua.NodeClass.ObjectType, ua.NodeClass.VariableType, ua.NodeClass.DataType,
              ua.NodeClass.ReferenceType):
        out.append((ua.AttributeIds.IsAbstract, _shared(attrs.get("IsAbstract", False), ua.VariantType.Boolean)))
    if nc == ua.NodeClass.ReferenceType:
        out.append((ua.AttributeIds.Symmetric, _shared(attrs.get("Symmetric", False), ua.VariantType.Boolean)))
    if nc == ua.NodeClass.Method:
        out.append((ua.AttributeIds.Executable, _shared(attrs.get("Executable", True), ua.VariantType.Boolean)))
        out.append((ua.AttributeIds.UserExecutable,
                    _shared(attrs.get("UserExecutable", True), ua.VariantType.Boolean)))
    return [(aid, av.value) for aid, av in out]


def _insert(nodes: dict[ua.NodeId, _Resolved], aspace: AddressSpace) -> None:
    groups: dict[tuple, tuple[Layout, list[ua.DataValue]]] = {}
    names = _Names()
    for r in nodes.values():
        spec = r.spec
        nc = r.nodeclass
        typed = r.attributes
        dims = typed.get("ArrayDimensions")
        inverse = nc == ua.NodeClass.ReferenceType and spec.inverse_name is not None
        key = (nc, r.datatype, inverse, *map(typed.get, _GROUP_ATTRS))
        group = groups.get(key)
        if group is None:
            common = _common_attributes(nc, r.datatype, typed)
            aids = [aid for aid, _ in common] + [ua.AttributeIds.NodeId, ua.AttributeIds.BrowseName,
                                                  ua.AttributeIds.DisplayName, ua.AttributeIds.Description]
            if nc in (ua.NodeClass.Variable, ua.NodeClass.VariableType):
                aids += [ua.AttributeIds.Value, ua.AttributeIds.ArrayDimensions]
            if inverse:
                aids.append(ua.AttributeIds.InverseName)
            group = groups[key] = ({aid: i for i, aid in enumerate(aids)}, [dv for _, dv in common])
        layout, common_values = group
        values = [*common_values, _data_value(r.nodeid, ua.VariantType.NodeId), names.browse(r.browsename),
                  names.text(spec.displayname.text, spec.displayname.locale) if spec.displayname
                  else names.text(r.browsename.Name, None),
                  names.text(spec.description.text, spec.description.locale) if spec.description
                  else _EMPTY_DESCRIPTION]
        if nc in (ua.NodeClass.Variable, ua.NodeClass.VariableType):
            values.append(_NULL_VALUE)
            values.append(ua.DataValue(ua.Variant(dims, ua.VariantType.UInt32, is_array=True)) if dims
                          else _NO_DIMENSIONS)
        if inverse:
            values.append(_data_value(_lt(spec.inverse_name), ua.VariantType.LocalizedText))
        aspace[r.nodeid] = CompactNodeData(r.nodeid, CompactAttributes(layout, values))

    # References go in once all nodes exist: a ReferenceDescription carries its target's names,
    # class and type definition.
    typedefs: dict[ua.NodeId, ua.NodeId] = {}
    for r in nodes.values():
        for reftype, target, fwd, _ in r.refs:
            if fwd and reftype == _HAS_TYPEDEF:
                typedefs[r.nodeid] = target
                break
    seen: dict[ua.NodeId, set[tuple[ua.NodeId, ua.NodeId, bool]]] = {}
    shared_refs: dict[tuple[ua.NodeId, ua.NodeId, bool], ua.ReferenceDescription] = {}

    def typedef_of(target: ua.NodeId, tnd: NodeData | CompactNodeData) -> ua.NodeId:
        td = typedefs.get(target)
        if td is None:  # an existing node: look once, remember (a null id when it has none)
            td = next((x.NodeId for x in tnd.references if x.IsForward and x.ReferenceTypeId == _HAS_TYPEDEF),
                      _NULL_ID)
            typedefs[target] = td
        return td

    def add(source: ua.NodeId, snd: NodeData | CompactNodeData, reftype: ua.NodeId, target: ua.NodeId,
            tnd: NodeData | CompactNodeData, forward: bool) -> None:
        refs = snd.references
        key = (reftype, target, forward)
        # Most nodes have a handful of references: looked through, they need no set of keys, which lived
        # until the end of the load between the nodes' objects and left holes in the heap (~20 MB at 50,000
        # nodes) that kept the gateway's resident size up after the load.
        if len(refs) < _SCAN_REFERENCES:
            for ref in refs:
                if ref.NodeId == target and ref.ReferenceTypeId == reftype and ref.IsForward == forward:
                    return
        else:
            keys = seen.get(source)
            if keys is None:
                keys = seen[source] = {(ref.ReferenceTypeId, ref.NodeId, ref.IsForward) for ref in refs}
            if key in keys:
                return
            keys.add(key)
        # A ReferenceDescription says only what its type, direction and target are (the rest is the target's
        # names, class and type definition), so every node referring alike shares one: every property's
        # HasTypeDefinition to PropertyType, a device's variables' inverse HasComponent. asyncua mutates one
        # only to follow a rename of its target, which is then right for all who share it.
        ref = shared_refs.get(key)
        if ref is None:
            ref = shared_refs[key] = ua.ReferenceDescription(
                ReferenceTypeId=reftype, IsForward=forward, NodeId=target,
                BrowseName=attribute_value(tnd, ua.AttributeIds.BrowseName).Value.Value,
                DisplayName=attribute_value(tnd, ua.AttributeIds.DisplayName).Value.Value,
                NodeClass=_NODECLASS_OF[attribute_value(tnd, ua.AttributeIds.NodeClass).Value.Value],
                TypeDefinition=typedef_of(target, tnd),
            )
        snd.references.append(ref)

    for r in nodes.values():
        snd = aspace[r.nodeid]
        for reftype, target, fwd, _ in r.refs:
            tnd = aspace[target]
            add(r.nodeid, snd, reftype, target, tnd, fwd)
            if reftype not in _NO_REVERSE:
                add(target, tnd, reftype, r.nodeid, snd, not fwd)


async def _register_datatypes(nodes: dict[ua.NodeId, _Resolved], aspace: AddressSpace) -> list[Problem]:
    """Set DataTypeDefinition attributes and generate the Python classes of new structures and enums."""
    problems: list[Problem] = []
    pending = [r for r in nodes.values() if r.nodeclass == ua.NodeClass.DataType and r.spec.definition]
    supertypes = {r.nodeid: _supertype(r, aspace) for r in pending}
    structs: list[tuple[_Resolved, ua.DataTypeAttributes]] = []
    for r in pending:
        kind = _datatype_kind(r.nodeid, supertypes, aspace)
        d = r.spec.definition
        assert d is not None
        try:
            if kind == "enum" or kind == "optionset":
                definition: ua.DataTypeDefinition = ua.EnumDefinition(
                    Fields=[
                        ua.EnumField(
                            Value=f.value if f.value is not None else i,
                            DisplayName=ua.LocalizedText(f.display_name or f.name),
                            Description=ua.LocalizedText(f.description or ""),
                            Name=f.name,
                        )
                        for i, f in enumerate(d.fields)
                    ]
                )
            elif kind == "struct":
                optional = any(f.is_optional for f in d.fields)
                definition = ua.StructureDefinition(
                    DefaultEncodingId=_binary_encoding(r, nodes) or ua.NodeId(),
                    BaseDataType=supertypes[r.nodeid] or _STRUCTURE,
                    StructureType=ua.StructureType.Union if d.is_union else (
                        ua.StructureType.StructureWithOptionalFields if optional else ua.StructureType.Structure),
                    Fields=[
                        ua.StructureField(
                            Name=f.name,
                            Description=ua.LocalizedText(f.description or ""),
                            DataType=r.resolver.nodeid(f.datatype),
                            ValueRank=f.value_rank,
                            ArrayDimensions=[int(x) for x in f.array_dimensions.split(",")]
                            if f.array_dimensions else [],
                            MaxStringLength=f.max_string_length,
                            IsOptional=f.is_optional,
                        )
                        for f in d.fields
                    ],
                )
            else:
                continue
        except ValueError as exc:
            problems.append(r.problem(f"Definition: {exc}"))
            continue
        aspace[r.nodeid].attributes[ua.AttributeIds.DataTypeDefinition] = _dv(
            definition, ua.VariantType.ExtensionObject
        )
        attrs = ua.DataTypeAttributes(
            DisplayName=ua.LocalizedText(r.browsename.Name), DataTypeDefinition=definition
        )
        if kind == "struct":
            structs.append((r, attrs))
        else:
            try:
                await load_enum_xml_import(r.nodeid, attrs, kind == "optionset")
            except Exception as exc:
                problems.append(r.problem(f"cannot build enumeration type: {exc}"))
    # A structure can only be generated once the structures its fields use exist: depth-first
    # over field types so each one follows its dependencies.
    by_id = {r.nodeid: (r, attrs) for r, attrs in structs}
    done: set[ua.NodeId] = set()

    async def build(nid: ua.NodeId, depth: int = 0) -> None:
        if nid in done or depth > 64:
            return
        done.add(nid)
        r, attrs = by_id[nid]
        for f in attrs.DataTypeDefinition.Fields:
            if f.DataType in by_id:
                await build(f.DataType, depth + 1)
        try:
            await load_custom_struct_xml_import(r.nodeid, attrs)
        except Exception as exc:
            problems.append(r.problem(f"cannot build structure type: {exc}"))

    for nid in by_id:
        await build(nid)
    # `build` calls itself through its closure: a cycle that held every node's parsed spec (the whole
    # document) until a full collection, which the gateway does not run while it loads and freezes.
    build = None  # type: ignore[assignment]
    return problems


def _supertype(r: _Resolved, aspace: AddressSpace) -> ua.NodeId | None:
    for reftype, target, fwd, _ in r.refs:
        if reftype == _HAS_SUBTYPE and not fwd:
            return target
    for ref in aspace[r.nodeid].references:
        if ref.ReferenceTypeId == _HAS_SUBTYPE and not ref.IsForward:
            return ref.NodeId
    return None


def _datatype_kind(nid: ua.NodeId, supertypes: dict[ua.NodeId, ua.NodeId | None], aspace: AddressSpace) -> str:
    cur: ua.NodeId | None = nid
    for _ in range(64):
        if cur is None:
            return "other"
        if cur == _OPTION_SET:
            return "optionset"
        if cur == _ENUMERATION:
            return "enum"
        if cur == _STRUCTURE:
            return "struct"
        nxt = supertypes.get(cur)
        if nxt is None and cur in aspace:
            nxt = next((ref.NodeId for ref in aspace[cur].references
                        if ref.ReferenceTypeId == _HAS_SUBTYPE and not ref.IsForward), None)
        cur = nxt
    return "other"


def _binary_encoding(r: _Resolved, nodes: dict[ua.NodeId, _Resolved]) -> ua.NodeId | None:
    first = None
    for reftype, target, fwd, _ in r.refs:
        if reftype == _HAS_ENCODING and fwd:
            enc = nodes.get(target)
            if enc is not None and enc.browsename.Name == "Default Binary":
                return target
            first = first or target
    return first


def _ext_class_lookup(aspace: AddressSpace):  # type: ignore[no-untyped-def]
    def lookup(typeid: ua.NodeId | None, body_name: str) -> type | None:
        if typeid is not None:
            cls = ua.extension_objects_by_typeid.get(typeid)
            if cls is not None:
                return cls
            # XML values name their Default XML encoding; find its DataType (inverse HasEncoding).
            nd = aspace.get(typeid)
            if nd is not None:
                for ref in nd.references:
                    if ref.ReferenceTypeId == _HAS_ENCODING and not ref.IsForward:
                        cls = ua.extension_objects_by_datatype.get(ref.NodeId)
                        if cls is not None:
                            return cls
        cls = getattr(ua, body_name, None)
        return cls if isinstance(cls, type) and hasattr(cls, "__dataclass_fields__") else None

    return lookup


def _set_values(nodes: dict[ua.NodeId, _Resolved], aspace: AddressSpace, types: TypeIndex) -> list[Problem]:
    problems: list[Problem] = []
    lookup = _ext_class_lookup(aspace)
    decoders: dict[int, ValueDecoder] = {}
    # Nodes whose values are written alike share one DataValue (every bound variable's EURange,
    # EngineeringUnits and ScanClass): a write replaces a node's DataValue and never mutates it in place.
    # Arrays are left out, so no code that edits a list can reach another node's.
    shared: dict[tuple[int, ua.NodeId | None, bytes], ua.DataValue] = {}
    now = datetime.now(UTC)
    for r in nodes.values():
        if r.spec.value is None:
            continue
        key = (id(r.resolver), r.datatype, etree.tostring(r.spec.value, with_tail=False))
        dv = shared.get(key)
        if dv is not None:
            aspace[r.nodeid].attributes.set_initial(ua.AttributeIds.Value, dv)
            continue
        dec = decoders.get(id(r.resolver))
        if dec is None:
            dec = ValueDecoder(r.resolver.nodeid, r.resolver.qname_of, lookup)
            decoders[id(r.resolver)] = dec
        try:
            variant = dec.decode(r.spec.value)
        except ValueDecodeError as exc:
            problems.append(r.problem(f"value does not parse: {exc}", exc.line))
            continue
        except ValueError as exc:
            problems.append(r.problem(f"value does not parse: {exc}"))
            continue
        if r.datatype is not None:
            mismatch = check_value_type(variant, r.datatype, types)
            if mismatch:
                problems.append(r.problem(mismatch, r.spec.value.sourceline))
                continue
        dv = ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
        if not variant.is_array:
            shared[key] = dv
        aspace[r.nodeid].attributes.set_initial(ua.AttributeIds.Value, dv)
    return problems


__all__ = ["UA_NAMESPACE", "LoadedSite", "load_documents", "load_nodesets", "parse_files"]
