"""Values in MQTT payloads: a topic's whole payload, or one member of a JSON document (RFC 6901 pointer)."""

from __future__ import annotations

import json
from typing import Any


class PayloadError(ValueError):
    """A payload that does not hold the value the binding names."""


def split_address(address: str) -> tuple[str, str]:
    """'Relay/Data/PSU1#/voltage' -> ('Relay/Data/PSU1', '/voltage'); ValueError names what is wrong."""
    topic, _, pointer = address.partition("#")
    if not topic:
        raise ValueError(f"address '{address}' names no topic (TOPIC or TOPIC#/json/pointer)")
    if "+" in topic:
        raise ValueError(f"topic '{topic}' has a wildcard: a variable binds one topic")
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"JSON pointer '{pointer}' must start with / (RFC 6901): {topic}#/{pointer}")
    return topic, pointer


def resolve(document: Any, pointer: str) -> Any:
    """RFC 6901: the member of `document` that `pointer` names (json.loads output)."""
    node = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if token not in node:
                raise PayloadError(f"no member '{token}'")
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                raise PayloadError(f"no element '{token}' in an array of {len(node)}")
            node = node[int(token)]
        else:
            raise PayloadError(f"'{token}' goes into a {type(node).__name__}")
    return node


def decode(payload: bytes, pointer: str) -> Any:
    """The value a payload carries: with a pointer, that member of its JSON document; without, the JSON
    scalar it is (`21.5`, `true`, `"on"`), else its text."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None
    if pointer:
        try:
            document = json.loads(text)
        except ValueError:
            raise PayloadError("payload is not JSON") from None
        value = resolve(document, pointer)
    else:
        try:
            value = json.loads(text)
        except ValueError:
            return text.strip()
    if isinstance(value, dict | list) or value is None:
        raise PayloadError(f"{'member' if pointer else 'payload'} is {json.dumps(value)[:40]}, not a value")
    return value


def encode(value: Any, key: str | None) -> bytes:
    """A written value as a payload: `{"key": value}` with a key, else the JSON scalar."""
    return json.dumps({key: value} if key else value).encode("utf-8")
