"""Turn the identifiers a NodeSet2 file writes into the server's NodeIds and QualifiedNames."""

from __future__ import annotations

import base64
import binascii

from asyncua import ua

from gateway.nodeset.model import NodesetDocument

_MAX_STRING_ID = 4096  # Part 3, 8.2.4: a String identifier is at most 4096 characters


class Resolver:
    """Resolves one document's aliases and file-local namespace indexes; caches every string."""

    def __init__(self, doc: NodesetDocument, ns_map: list[int]) -> None:
        # ns_map[i] is the server index of the file's namespace index i (index 0 is always 0).
        self.doc = doc
        self.ns_map = ns_map
        self._cache: dict[str, ua.NodeId] = {}

    def nodeid(self, text: str) -> ua.NodeId:
        """Raises ValueError with a readable message for a malformed or unmapped id."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        raw = self.doc.aliases.get(text, text).strip()
        if not raw:
            raise ValueError("empty NodeId")
        try:
            parsed = ua.NodeId.from_string(raw)
        except Exception:
            raise ValueError(f"'{text}' is not a NodeId or a known alias") from None
        problem = _identifier_problem(raw, parsed)
        if problem:
            raise ValueError(f"'{text}' is not a valid NodeId: {problem}")
        local = parsed.NamespaceIndex
        if local >= len(self.ns_map):
            raise ValueError(f"'{text}' uses namespace index {local}, but the file declares {len(self.ns_map) - 1}")
        result = ua.NodeId(parsed.Identifier, self.ns_map[local], parsed.NodeIdType)
        self._cache[text] = result
        return result

    def qname(self, text: str) -> ua.QualifiedName:
        """A BrowseName as written (`2:Name`, or `Name` in namespace 0)."""
        prefix, sep, name = text.partition(":")
        if sep and prefix.isascii() and prefix.isdigit():
            if not name:
                raise ValueError(f"BrowseName '{text}' has no name after the namespace index")
            return self.qname_of(int(prefix), name)
        return ua.QualifiedName(text, 0)

    def qname_of(self, local_index: int, name: str) -> ua.QualifiedName:
        if local_index >= len(self.ns_map):
            raise ValueError(f"QualifiedName '{local_index}:{name}' uses an undeclared namespace index")
        return ua.QualifiedName(name, self.ns_map[local_index])


def _identifier_problem(raw: str, parsed: ua.NodeId) -> str | None:
    """What asyncua's parser lets through but no server may hold (Part 3, 8.2 and Part 6, 5.2.2.9)."""
    if isinstance(parsed, ua.ExpandedNodeId) and (parsed.NamespaceUri or parsed.ServerIndex):
        return "a NodeSet2 file names namespaces by index (ns=N), not by nsu= or svr="
    if not 0 <= parsed.NamespaceIndex <= 0xFFFF:
        return f"namespace index {parsed.NamespaceIndex} is not in 0..65535"
    ident, kind = parsed.Identifier, parsed.NodeIdType
    if kind in (ua.NodeIdType.Numeric, ua.NodeIdType.TwoByte, ua.NodeIdType.FourByte):
        if not 0 <= ident <= 0xFFFFFFFF:
            return f"numeric identifier {ident} is not in 0..4294967295"
    elif kind == ua.NodeIdType.String:
        if not ident:
            return "empty string identifier"
        if len(ident) > _MAX_STRING_ID:
            return f"string identifier longer than {_MAX_STRING_ID} characters"
    elif kind == ua.NodeIdType.ByteString:
        encoded = raw.partition("b=")[2]
        try:
            ok = bool(ident) and base64.b64decode(encoded, validate=True) == ident
        except binascii.Error:
            ok = False
        if not ok:
            return "b= needs non-empty base64"
    return None
