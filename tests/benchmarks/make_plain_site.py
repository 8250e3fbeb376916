"""A plain NodeSet2 site of N devices x M variables (optionally a property under each variable) that uses
only namespace-0 types, so that asyncua's import_xml and node-opcua can load it alone.
`python tests/benchmarks/make_plain_site.py OUT.xml [devices] [vars] [--properties]`"""

from __future__ import annotations

import sys
from pathlib import Path

NAMESPACE = "urn:bench:plain-site"
_VALUES = (("i=11", "Double", "{:.1f}"), ("i=6", "Int32", "{}"), ("i=1", "Boolean", "{}"))


def make_site(devices: int = 250, vars_per_device: int = 99, properties: bool = False) -> tuple[bytes, int, str]:
    """Returns (xml, node count, NodeId of the last node written). With `properties` each variable has
    a String property `Unit` (a PropertyType variable under HasProperty)."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<UANodeSet xmlns="http://opcfoundation.org/UA/2011/03/UANodeSet.xsd">',
           f"  <NamespaceUris><Uri>{NAMESPACE}</Uri></NamespaceUris>",
           f'  <Models><Model ModelUri="{NAMESPACE}" Version="1.0.0" PublicationDate="2026-01-01T00:00:00Z">'
           '<RequiredModel ModelUri="http://opcfoundation.org/UA/" Version="1.04" '
           'PublicationDate="2020-01-01T00:00:00Z" /></Model></Models>',
           '  <Aliases><Alias Alias="Organizes">i=35</Alias><Alias Alias="HasComponent">i=47</Alias>'
           '<Alias Alias="HasTypeDefinition">i=40</Alias><Alias Alias="HasProperty">i=46</Alias></Aliases>',
           '  <UAObject NodeId="ns=1;s=Site" BrowseName="1:Site"><DisplayName>Site</DisplayName><References>'
           '<Reference ReferenceType="HasTypeDefinition">i=61</Reference>'
           '<Reference ReferenceType="Organizes" IsForward="false">i=85</Reference></References></UAObject>']
    count = 1
    last = "ns=1;s=Site"
    for d in range(devices):
        dev = f"ns=1;s=Dev{d:03d}"
        out.append(f'  <UAObject NodeId="{dev}" BrowseName="1:Dev{d:03d}" ParentNodeId="ns=1;s=Site">'
                   f"<DisplayName>Dev{d:03d}</DisplayName><References>"
                   '<Reference ReferenceType="HasTypeDefinition">i=58</Reference>'
                   '<Reference ReferenceType="Organizes" IsForward="false">ns=1;s=Site</Reference>'
                   "</References></UAObject>")
        count += 1
        for v in range(vars_per_device):
            dtype, tag, fmt = _VALUES[v % 3]
            value = fmt.format(v * 1.5 if tag == "Double" else v if tag == "Int32" else str(v % 2 == 0).lower())
            last = f"{dev}.V{v:02d}"
            out.append(f'  <UAVariable NodeId="{last}" BrowseName="1:V{v:02d}" ParentNodeId="{dev}" DataType="{dtype}">'
                       f"<DisplayName>V{v:02d}</DisplayName><References>"
                       '<Reference ReferenceType="HasTypeDefinition">i=63</Reference>'
                       f'<Reference ReferenceType="HasComponent" IsForward="false">{dev}</Reference></References>'
                       f'<Value><{tag} xmlns="http://opcfoundation.org/UA/2008/02/Types.xsd">{value}</{tag}></Value>'
                       "</UAVariable>")
            count += 1
            if properties:
                var, last = last, f"{last}.Unit"
                out.append(f'  <UAVariable NodeId="{last}" BrowseName="1:Unit" ParentNodeId="{var}" DataType="i=12">'
                           "<DisplayName>Unit</DisplayName><References>"
                           '<Reference ReferenceType="HasTypeDefinition">i=68</Reference>'
                           f'<Reference ReferenceType="HasProperty" IsForward="false">{var}</Reference></References>'
                           f'<Value><String xmlns="http://opcfoundation.org/UA/2008/02/Types.xsd">unit{v}</String>'
                           "</Value></UAVariable>")
                count += 1
    out.append("</UANodeSet>")
    return "\n".join(out).encode(), count, last


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--properties"]
    path = Path(args[0])
    devices = int(args[1]) if len(args) > 1 else 250
    per = int(args[2]) if len(args) > 2 else 99
    data, n, _ = make_site(devices, per, "--properties" in sys.argv)
    path.write_bytes(data)
    print(f"{path}: {n} nodes")
