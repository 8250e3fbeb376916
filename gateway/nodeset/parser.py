"""Read UANodeSet2 XML into NodesetDocuments (no server needed).

lxml rather than xml.etree: every element keeps its source line, so a problem can name the
line the author has to fix.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

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
                forward = ref.get("IsForward", "true").strip().lower() != "false"
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
            node.definition = _parse_definition(child)
    return node


def _parse_definition(el: etree._Element) -> DefinitionSpec:
    fields = []
    for f in el:
        if _local(f.tag) != "Field":
            continue
        desc = next((_text(c) for c in f if _local(c.tag) == "Description"), None)
        dname = next((_text(c) for c in f if _local(c.tag) == "DisplayName"), None)
        value = f.get("Value")
        fields.append(
            FieldSpec(
                name=f.get("Name", ""),
                datatype=f.get("DataType", "i=24"),
                value_rank=int(f.get("ValueRank", "-1")),
                array_dimensions=f.get("ArrayDimensions"),
                value=int(value) if value is not None else None,
                is_optional=f.get("IsOptional", "false").lower() == "true",
                description=desc,
                display_name=dname,
                max_string_length=int(f.get("MaxStringLength", "0")),
            )
        )
    return DefinitionSpec(
        name=el.get("Name", ""),
        fields=fields,
        is_union=el.get("IsUnion", "false").lower() == "true",
        is_option_set=el.get("IsOptionSet", "false").lower() == "true",
    )
