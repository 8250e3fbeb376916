"""Order nodeset documents so that every model comes after the models it requires."""

from __future__ import annotations

from gateway.nodeset.model import UA_NAMESPACE, NodesetDocument, Problem


def _version(v: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (v or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def order_documents(
    docs: list[NodesetDocument], known_models: set[str]
) -> tuple[list[NodesetDocument], list[Problem]]:
    """Topological order by RequiredModel; `known_models` are URIs the server already has."""
    problems: list[Problem] = []
    provider: dict[str, NodesetDocument] = {}
    for doc in docs:
        for m in doc.models:
            if m.uri in provider:
                problems.append(
                    Problem(doc.path, None, None, f"model {m.uri} is also defined by {provider[m.uri].path}")
                )
            provider[m.uri] = doc
    known = known_models | {UA_NAMESPACE}
    deps: dict[int, list[NodesetDocument]] = {}
    for doc in docs:
        needed = []
        for m in doc.models:
            for uri, version, _date in m.required:
                if uri in provider:
                    have = next(x for x in provider[uri].models if x.uri == uri)
                    if version and have.version and _version(have.version) < _version(version):
                        problems.append(Problem(
                            doc.path, None, None,
                            f"requires model {uri} version {version}, "
                            f"but {provider[uri].path} is version {have.version}",
                        ))
                    if provider[uri] is not doc:
                        needed.append(provider[uri])
                elif uri not in known:
                    problems.append(Problem(
                        doc.path, None, None,
                        f"requires model {uri}{' ' + version if version else ''}, which no given nodeset provides",
                    ))
        deps[id(doc)] = needed
    if problems:
        return docs, problems

    ordered: list[NodesetDocument] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    for doc in docs:
        _visit(doc, [], deps, state, ordered, problems)
    return ordered, problems


def _visit(doc: NodesetDocument, chain: list[str], deps: dict[int, list[NodesetDocument]], state: dict[int, int],
           ordered: list[NodesetDocument], problems: list[Problem]) -> None:
    """Depth-first: `doc` after the documents it requires. A function of its own, not a closure calling
    itself: that is a reference cycle, which held every document (a whole site's parsed nodes) until a full
    collection, and the gateway runs none while it loads, then freezes what is there."""
    s = state.get(id(doc))
    if s == 2:
        return
    if s == 1:
        problems.append(Problem(doc.path, None, None, "circular RequiredModel: " + " -> ".join([*chain, doc.path])))
        return
    state[id(doc)] = 1
    for dep in deps[id(doc)]:
        _visit(dep, [*chain, doc.path], deps, state, ordered, problems)
    state[id(doc)] = 2
    ordered.append(doc)

