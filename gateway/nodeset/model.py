"""What a NodeSet2 file says, before it is resolved against a server's namespace table.

Identifiers stay as the strings written in the file (aliases and file-local namespace indexes
unresolved) so that parsing needs no server, and so that every problem can be reported with the
exact text, file and line the author wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UA_NAMESPACE = "http://opcfoundation.org/UA/"

NODE_TAGS = (
    "UAObject",
    "UAVariable",
    "UAMethod",
    "UAView",
    "UAObjectType",
    "UAVariableType",
    "UADataType",
    "UAReferenceType",
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a site cannot be served, pointing at where the author can fix it."""

    file: str
    line: int | None
    node: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.node}: {self.message}" if self.node else f"{where}: {self.message}"


class NodesetError(Exception):
    """A site that must not be served; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(slots=True)
class RefSpec:
    reftype: str
    target: str
    forward: bool
    line: int


@dataclass(slots=True)
class FieldSpec:
    """One field of a DataType <Definition>."""

    name: str
    datatype: str = "i=24"
    value_rank: int = -1
    array_dimensions: str | None = None
    value: int | None = None
    is_optional: bool = False
    description: str | None = None
    display_name: str | None = None
    max_string_length: int = 0


@dataclass(slots=True)
class DefinitionSpec:
    name: str
    fields: list[FieldSpec]
    is_union: bool = False
    is_option_set: bool = False


@dataclass(slots=True)
class LocalText:
    text: str
    locale: str | None = None


@dataclass(slots=True)
class NodeSpec:
    tag: str
    nodeid: str
    browsename: str
    line: int
    displayname: LocalText | None = None
    description: LocalText | None = None
    inverse_name: LocalText | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    refs: list[RefSpec] = field(default_factory=list)
    value: Any = None  # the <Value> element (lxml), decoded once types are known
    definition: DefinitionSpec | None = None


@dataclass(slots=True)
class ModelSpec:
    uri: str
    version: str | None
    publication_date: str | None
    required: list[tuple[str, str | None, str | None]]  # (uri, version, publication date)


@dataclass(slots=True)
class NodesetDocument:
    path: str
    namespace_uris: list[str]  # file index i (>=1) is namespace_uris[i - 1]
    aliases: dict[str, str]
    models: list[ModelSpec]
    nodes: list[NodeSpec]
