"""Read UANodeSet2 XML into NodesetDocuments (no server needed).

lxml rather than xml.etree: every element keeps its source line, so a problem can name the
line the author has to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from gateway.nodeset.attributes import ATTRIBUTES, UINT32_MAX, integer, parse_boolean
from gateway.nodeset.model import (
    NODE_TAGS,
    DefinitionSpec,
    FieldSpec,
    LocalText,
    ModelSpec,
    NodesetDocument,
    NodeSpec,
    Problem,
    RefSpec,
)

_PARSER = etree.XMLParser(remove_comments=True, huge_tree=True, resolve_entities=False, no_network=True)


def _local(tag: object) -> str:
    # lxml gives "{namespace}Name"; comments and processing instructions have non-str tags.
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _local_text(el: etree._Element) -> LocalText:
    return LocalText(text=el.text or "", locale=el.get("Locale") or None)


def parse_nodeset(path: str | Path, data: bytes | None = None) -> tuple[NodesetDocument | None, list[Problem]]:
    """Parse one file; returns the document, or None with the problems that stopped parsing."""
    name = str(path)
    try:
        root = etree.fromstring(data, _PARSER) if data is not None else etree.parse(name, _PARSER).getroot()
    except etree.XMLSyntaxError as exc:
        return None, [Problem(name, exc.lineno, None, f"malformed XML: {exc.msg}")]
    except OSError as exc:
        return None, [Problem(name, None, None, f"cannot read file: {exc}")]
    if _local(root.tag) != "UANodeSet":
        return None, [Problem(name, root.sourceline, None, f"root element is <{_local(root.tag)}>, not <UANodeSet>")]

    problems: list[Problem] = []
    doc = NodesetDocument(path=name, namespace_uris=[], aliases={}, models=[], nodes=[])
    for child in root:
        tag = _local(child.tag)
        if tag in NODE_TAGS:
            node = _parse_node(name, tag, child, problems)
            if node is not None:
                doc.nodes.append(node)
        elif tag == "NamespaceUris":
            doc.namespace_uris = [_text(u) for u in child if _local(u.tag) == "Uri"]
        elif tag == "Aliases":
            for alias in child:
                if _local(alias.tag) == "Alias":
                    doc.aliases[alias.get("Alias", "")] = _text(alias)
        elif tag == "Models":
            doc.models = [_parse_model(m) for m in child if _local(m.tag) == "Model"]
    return doc, problems


def _parse_model(el: etree._Element) -> ModelSpec:
    required = [
        (r.get("ModelUri", ""), r.get("Version"), r.get("PublicationDate"))
        for r in el
        if _local(r.tag) == "RequiredModel"
    ]
    return ModelSpec(el.get("ModelUri", ""), el.get("Version"), el.get("PublicationDate"), required)


def _parse_node(path: str, tag: str, el: etree._Element, problems: list[Problem]) -> NodeSpec | None:
    attrs = dict(el.attrib)
    nodeid = attrs.pop("NodeId", None)
    browsename = attrs.pop("BrowseName", None)
    if not nodeid or not browsename:
        missing = "NodeId" if not nodeid else "BrowseName"
        problems.append(Problem(path, el.sourceline, nodeid, f"<{tag}> has no {missing} attribute"))
        return None
    node = NodeSpec(tag=tag, nodeid=nodeid, browsename=browsename, line=el.sourceline or 0, attrs=attrs)
    for child in el:
        ctag = _local(child.tag)
        if ctag == "References":
            for ref in child:
                if _local(ref.tag) != "Reference":
                    continue
                try:
                    forward = parse_boolean(ref.get("IsForward", "true"))
                except ValueError as exc:
                    problems.append(Problem(path, ref.sourceline, nodeid,
                                            f"reference IsForward=\"{ref.get('IsForward')}\" {exc}"))
                    continue
                node.refs.append(RefSpec(ref.get("ReferenceType", ""), _text(ref), forward, ref.sourceline or 0))
        elif ctag == "DisplayName":
            if node.displayname is None:  # the first one is the default locale
                node.displayname = _local_text(child)
        elif ctag == "Description":
            if node.description is None:
                node.description = _local_text(child)
        elif ctag == "InverseName":
            if node.inverse_name is None:
                node.inverse_name = _local_text(child)
        elif ctag == "Value":
            node.value = child
        elif ctag == "Definition":
            node.definition = _parse_definition(child, lambda line, message: problems.append(
                Problem(path, line, nodeid, f"Definition: {message}")))
    return node


_FIELD_NUMBERS = {  # Field attribute -> (parser, default)
    "ValueRank": (ATTRIBUTES["ValueRank"], -1),
    "Value": (integer("Int64", -(2**63), 2**63 - 1), None),
    "MaxStringLength": (integer("UInt32", 0, UINT32_MAX), 0),
    "ArrayDimensions": (ATTRIBUTES["ArrayDimensions"], None),
}


def _parse_definition(el: etree._Element, problem: Callable[[int | None, str], None]) -> DefinitionSpec:
    def flag(e: etree._Element, name: str) -> bool:
        try:
            return parse_boolean(e.get(name, "false"))
        except ValueError as exc:
            problem(e.sourceline, f"{name}=\"{e.get(name)}\" {exc}")
            return False

    fields = []
    for f in el:
        if _local(f.tag) != "Field":
            continue
        desc = next((_text(c) for c in f if _local(c.tag) == "Description"), None)
        dname = next((_text(c) for c in f if _local(c.tag) == "DisplayName"), None)
        numbers: dict[str, Any] = {}
        for name, (parse, default) in _FIELD_NUMBERS.items():
            text = f.get(name)
            try:
                numbers[name] = default if text is None else parse(text)
            except ValueError as exc:
                problem(f.sourceline, f"field '{f.get('Name', '')}' {name}=\"{text}\" {exc}")
                numbers[name] = default
        dims = numbers["ArrayDimensions"]
        fields.append(
            FieldSpec(
                name=f.get("Name", ""),
                datatype=f.get("DataType", "i=24"),
                value_rank=numbers["ValueRank"],
                array_dimensions=",".join(str(d) for d in dims) if dims else None,
                value=numbers["Value"],
                is_optional=flag(f, "IsOptional"),
                description=desc,
                display_name=dname,
                max_string_length=numbers["MaxStringLength"],
            )
        )
    return DefinitionSpec(
        name=el.get("Name", ""),
        fields=fields,
        is_union=flag(el, "IsUnion"),
        is_option_set=flag(el, "IsOptionSet"),
    )
