"""Fuzzing the site checks: whatever the input, a list of named problems or success, never another exception.

Real sites (nodesets/, tests/fixtures, tests/cases) are mutated (attributes set to random text,
elements dropped or retyped, files truncated or bytes changed) and run through the same pipeline as
`gateway nodeset check`: parse, order, resolve, check, insert, decode values, resolve bindings. YAML
sites are mutated as structures and as text and run through `gateway nodeset build`; what builds is
then checked as a nodeset too. Derandomized, so a run finds the same examples every time.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.bindings import resolve_bindings
from gateway.nodeset.loader import load_documents, parse_files
from gateway.nodeset.model import NodesetError, Problem
from gateway.nodeset.parser import parse_nodeset
from gateway.nodeset.yaml_build import compile_text
from gateway.nodesets import GATEWAY_NAMESPACE, GATEWAY_TYPES

ROOT = Path(__file__).resolve().parents[2]
# The normal suite runs the same 200 examples each time; GATEWAY_FUZZ_EXAMPLES=5000 explores new ones
# (and the largest site too, which costs a third of a second an example).
DEEP = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "0"))
XML_SOURCES = sorted(
    [ROOT / "tests/fixtures/sim_site.xml", ROOT / "tests/fixtures/write_model_site.xml",
     ROOT / "nodesets/examples/sim-site.xml", ROOT / "nodesets/demo/demo-site.xml"]
    + ([ROOT / "nodesets/examples/profiles-site.xml"] if DEEP else [])
    + [p for p in (ROOT / "tests/cases/nodeset").glob("*/*.xml") if p.parent.name != "malformed-xml"]
)
YAML_SOURCES = sorted([*(ROOT / "nodesets").glob("*/*-site.yaml"), *(ROOT / "tests/cases/yaml").glob("*/site.yaml")])
SETTINGS = settings(max_examples=DEEP or 200, deadline=None, derandomize=not DEEP, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NODE_ATTRIBUTES = (
    "NodeId", "BrowseName", "ParentNodeId", "DataType", "ValueRank", "ArrayDimensions", "AccessLevel",
    "UserAccessLevel", "WriteMask", "UserWriteMask", "EventNotifier", "MinimumSamplingInterval", "Historizing",
    "IsAbstract", "Symmetric", "Executable", "UserExecutable", "ContainsNoLoops",
)
REFERENCE_ATTRIBUTES = ("ReferenceType", "IsForward")
AWKWARD_TEXT = (
    "", " ", "abc", "-1", "-3", "0", "1", "2", "255", "256", "-129", "1e400", "nan", "inf", "-inf", "0x10", "1.5",
    "99999999999999999999", "1,2,x", "1,,2", "4294967296", "ns=99;i=1", "ns=1;i=-1", "i=4294967296", "s=",
    "g=zzz", "b=!!", "ns=1;x=1", "ns=1;s=Nowhere", "i=24", "i=11", "i=12", "i=1", "i=884", "true", "false", "yes",
    "True", "1:Name", "99:Name", ":", "1:", "²:Name", "HasComponent", "HasProperty", "Organizes", "i=40",
)
AWKWARD_VALUES = (
    "<Double>abc</Double>", "<Boolean>maybe</Boolean>", "<Int32>99999999999</Int32>", "<String>x</String>",
    "<ListOfDouble><Double>1</Double><Double>x</Double></ListOfDouble>", "<NodeId><Identifier>bad</Identifier>"
    "</NodeId>", "<ExtensionObject><TypeId><Identifier>i=885</Identifier></TypeId><Body><Range><Low>x</Low>"
    "</Range></Body></ExtensionObject>", "<ExtensionObject><Body/></ExtensionObject>",
    "<LocalizedText><Text>t</Text></LocalizedText>", "<QualifiedName><NamespaceIndex>9</NamespaceIndex>"
    "<Name>n</Name></QualifiedName>", "<Guid><String>nope</String></Guid>", "<ByteString>!!</ByteString>",
    "<DateTime>yesterday</DateTime>", "<Variant><Value><Int32>1</Int32></Value></Variant>", "<Foo>1</Foo>",
    "<ListOfInt32><Int32>1</Int32></ListOfInt32>", "<StatusCode><Code>x</Code></StatusCode>",
)
TYPES_XMLNS = "http://opcfoundation.org/UA/2008/02/Types.xsd"


class ScratchServer:
    """One initialised server (with the gateway's types) whose address space is reset after each example.

    A fresh asyncua server takes about 2 s to initialise; the loader only adds nodes, appends
    references to existing ones and extends the namespace array, so those are what is undone.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = Server()
        self.loop.run_until_complete(self._init())

    async def _init(self) -> None:
        await self.server.init()
        docs, problems = parse_files([GATEWAY_TYPES])
        assert not problems
        await load_documents(self.server, docs)
        aspace = self.server.iserver.aspace
        self.nodes = dict(aspace._nodes)
        self.ref_counts = {nid: len(nd.references) for nid, nd in self.nodes.items()}
        self.namespaces = list(await self.server.get_namespace_array())
        self.gw_ns = self.namespaces.index(GATEWAY_NAMESPACE)

    def reset(self) -> None:
        aspace = self.server.iserver.aspace
        aspace._nodes.clear()
        aspace._nodes.update(self.nodes)
        for nid, nd in self.nodes.items():
            del nd.references[self.ref_counts[nid]:]
        array = aspace[ua.NodeId(ua.ObjectIds.Server_NamespaceArray)].attributes[ua.AttributeIds.Value]
        array.value = ua.DataValue(ua.Variant(list(self.namespaces), ua.VariantType.String))

    def check(self, data: bytes, name: str = "fuzz.xml") -> list[Problem]:
        """The checks of `gateway nodeset check` on one file; returns its problems (empty: the site is fine)."""
        doc, problems = parse_nodeset(name, data)
        if doc is None or problems:
            return problems
        try:
            site = self.loop.run_until_complete(load_documents(self.server, [doc]))
            _, problems = resolve_bindings(self.server.iserver.aspace, site, self.gw_ns)
            return problems
        except NodesetError as exc:
            return exc.problems
        finally:
            self.reset()

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def scratch() -> Iterator[ScratchServer]:
    s = ScratchServer()
    yield s
    s.close()


def assert_named(problems: list[Problem], name: str = "fuzz.xml") -> None:
    for p in problems:
        assert isinstance(p, Problem) and p.file == name and p.message, p


# -- XML mutations ----------------------------------------------------------------------------
_TREES = {p: etree.parse(str(p)) for p in XML_SOURCES}

awkward_text = st.one_of(st.sampled_from(AWKWARD_TEXT), st.text(max_size=12),
                         st.from_regex(r"-?[0-9]{1,25}(,-?[0-9]{0,12}){0,3}", fullmatch=True))
node_attribute = st.tuples(st.just("node-attr"), st.integers(0, 10**6), st.sampled_from(NODE_ATTRIBUTES),
                           awkward_text)
reference_attribute = st.tuples(st.just("ref-attr"), st.integers(0, 10**6), st.sampled_from(REFERENCE_ATTRIBUTES),
                                awkward_text)
reference_text = st.tuples(st.just("ref-text"), st.integers(0, 10**6), st.just(""), awkward_text)
value = st.tuples(st.just("value"), st.integers(0, 10**6), st.just(""), st.sampled_from(AWKWARD_VALUES))
drop = st.tuples(st.just("drop"), st.integers(0, 10**6), st.just(""), st.just(""))
mutation = st.one_of(node_attribute, node_attribute, reference_attribute, reference_text, value, drop)


def _mutate(tree: etree._ElementTree, op: str, index: int, attr: str, text: str) -> None:
    root = tree.getroot()
    nodes = [el for el in root if isinstance(el.tag, str) and el.tag.rpartition("}")[2].startswith("UA")]
    refs = [el for el in root.iter() if isinstance(el.tag, str) and el.tag.endswith("}Reference")]
    text = "".join(ch for ch in text if ch.isprintable())  # XML cannot carry control characters
    if op == "node-attr" and nodes:
        nodes[index % len(nodes)].set(attr, text)
    elif op in ("ref-attr", "ref-text") and refs:
        ref = refs[index % len(refs)]
        if op == "ref-attr":
            ref.set(attr, text)
        else:
            ref.text = text
    elif op == "value" and nodes:
        node = nodes[index % len(nodes)]
        for old in [c for c in node if c.tag.endswith("}Value")]:
            node.remove(old)
        node.append(etree.fromstring(f'<Value xmlns="{root.nsmap.get(None)}"><X xmlns="{TYPES_XMLNS}"/></Value>'))
        body = etree.fromstring(f'<W xmlns="{TYPES_XMLNS}">{text}</W>')[0]
        node[-1][0] = body
    elif op == "drop":
        elements = [el for el in root.iter() if isinstance(el.tag, str) and el is not root]
        el = elements[index % len(elements)]
        el.getparent().remove(el)


@SETTINGS
@given(source=st.sampled_from(XML_SOURCES), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_nodesets_give_named_problems_or_load(scratch: ScratchServer, source: Path,
                                                      mutations: list[tuple[str, int, str, str]]) -> None:
    tree = copy.deepcopy(_TREES[source])
    for m in mutations:
        _mutate(tree, *m)
    assert_named(scratch.check(etree.tostring(tree)))


@SETTINGS
@given(source=st.sampled_from(XML_SOURCES), cut=st.floats(0, 1), flips=st.lists(
    st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=3)), max_size=3))
def test_truncated_or_garbled_nodesets_give_named_problems(scratch: ScratchServer, source: Path, cut: float,
                                                           flips: list[tuple[float, bytes]]) -> None:
    data = bytearray(source.read_bytes())
    for where, junk in flips:
        at = int(where * (len(data) - 1))
        data[at:at + len(junk)] = junk
    data = data[: max(1, int(cut * len(data)))] if cut < 0.95 else data
    assert_named(scratch.check(bytes(data)))


# -- YAML -------------------------------------------------------------------------------------
YAML_KEYS = ("site", "namespace", "name", "devices", "variables", "connection", "address", "datatype", "unit",
             "range", "scan", "scan_classes", "profile", "profiles", "writable", "historize", "initial", "bit",
             "length", "scale", "offset", "deadband", "field_type", "byte_order", "word_order", "simulator")
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10), st.sampled_from(("Double", "Boolean", "String", "Int16", "kW", "HighSpeed", "sim://a",
                                           "modbus+tcp://h/1", "modbus+tpc://h/1", "holding/0", "40001",
                                           "constant?value=1", "xsd:float", "big", "Dev1", "urn:x")),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(YAML_KEYS), scalars), inner, max_size=5)),
    max_leaves=25,
)
_YAML_DOCS = {p: yaml.safe_load(p.read_text(encoding="utf-8")) for p in YAML_SOURCES if p.parent.name != "bad-yaml"}


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    obj[path[0]] = _replace(obj[path[0]], path[1:], new)
    return obj


def _compile(text: str, scratch: ScratchServer) -> None:
    try:
        xml = compile_text(text, "site.yaml")
    except NodesetError as exc:
        assert exc.problems
        assert_named(exc.problems, "site.yaml")
        return
    assert_named(scratch.check(xml, "site.xml"), "site.xml")


@SETTINGS
@given(source=st.sampled_from(sorted(_YAML_DOCS)), picks=st.lists(st.tuples(st.integers(0, 10**6), yaml_values),
                                                              min_size=1, max_size=3))
def test_mutated_yaml_sites_give_named_problems_or_build(scratch: ScratchServer, source: Path,
                                                         picks: list[tuple[int, Any]]) -> None:
    doc = copy.deepcopy(_YAML_DOCS[source])
    for index, new in picks:
        paths = _paths(doc)
        doc = _replace(doc, paths[index % len(paths)], new)
    _compile(yaml.safe_dump(doc, allow_unicode=True), scratch)


@SETTINGS
@given(doc=yaml_values)
def test_random_yaml_structures_give_named_problems(scratch: ScratchServer, doc: Any) -> None:
    _compile(yaml.safe_dump(doc, allow_unicode=True), scratch)


@SETTINGS
@given(source=st.sampled_from(YAML_SOURCES), cut=st.floats(0, 1), junk=st.text(max_size=6))
def test_truncated_yaml_text_gives_named_problems(scratch: ScratchServer, source: Path, cut: float,
                                                  junk: str) -> None:
    text = source.read_text(encoding="utf-8")
    at = int(cut * len(text))
    _compile(text[:at] + junk + text[at + len(junk):], scratch)
