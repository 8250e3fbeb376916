"""Turn the identifiers a NodeSet2 file writes into the server's NodeIds and QualifiedNames."""

from __future__ import annotations

from asyncua import ua

from gateway.nodeset.model import NodesetDocument


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
        local = parsed.NamespaceIndex
        if local >= len(self.ns_map):
            raise ValueError(f"'{text}' uses namespace index {local}, but the file declares {len(self.ns_map) - 1}")
        result = ua.NodeId(parsed.Identifier, self.ns_map[local], parsed.NodeIdType)
        self._cache[text] = result
        return result

    def qname(self, text: str) -> ua.QualifiedName:
        prefix, sep, name = text.partition(":")
        if sep and prefix.isdigit():
            return self.qname_of(int(prefix), name)
        return ua.QualifiedName(text, 0)

    def qname_of(self, local_index: int, name: str) -> ua.QualifiedName:
        if local_index >= len(self.ns_map):
            raise ValueError(f"QualifiedName '{local_index}:{name}' uses an undeclared namespace index")
        return ua.QualifiedName(name, self.ns_map[local_index])
