"""`DATA_DIR/parameters.json`: the last written value of every parameter the gateway holds.

A parameter is a writable variable bound to no device (a site's ExportLimit, later control
settings): the gateway is its only home, so its value must outlive a restart. The file maps a
node (namespace URI + identifier, so the order nodesets load in does not matter) to its value:

    {"format": 1, "parameters": {"nsu=urn:site;s=Site.ExportLimit": {"type": "Double", "value": 250.0}}}

Numbers, booleans and strings (and arrays of them) are stored as JSON, readable and diffable;
any other type as its OPC UA binary encoding in base64 (`"binary"`).

Each save rewrites the whole (small) file atomically: a temporary file, fsync, rename, fsync of
the directory, so a crash leaves the old or the new file, never half of one. Saves run one at a
time on a thread of the store's own, never on the event loop; a save that has started completes
and is kept even if the writer stops waiting for it.

A file that cannot be parsed is reported once (WARNING naming the file and the problem), moved
aside as `parameters.json.corrupt`, and the nodeset defaults are used; an entry that cannot be
decoded is skipped with a warning and kept in the file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary

from gateway.files import write_atomically
from gateway.history.store import namespace_key
from gateway.nodeset.values import INT_RANGE_OF

log = logging.getLogger(__name__)

FORMAT = 1
_INT_RANGE = INT_RANGE_OF
_FLOATS = {ua.VariantType.Float, ua.VariantType.Double}
_JSON_TYPES = {ua.VariantType.Boolean, ua.VariantType.String, *_INT_RANGE, *_FLOATS}

Entry = dict[str, Any]


class ParameterStore:
    def __init__(self, path: Path, namespaces: Sequence[str]) -> None:
        self.path = path
        self.namespaces = list(namespaces)
        self._key = namespace_key(self.namespaces)
        # Owned by the store's thread once the gateway serves: every save reads and replaces it there.
        self._entries: dict[str, Entry] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parameters")

    def load(self) -> dict[ua.NodeId, ua.Variant]:
        """Read the file (at start, before anything is served); the values by NodeId of this site."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(f"cannot be read: {exc}")
            return {}
        try:
            document = json.loads(text)
            entries = document["parameters"] if isinstance(document, dict) else None
            if not isinstance(entries, dict) or document.get("format") != FORMAT:
                raise ValueError(f'not a parameter file of format {FORMAT} ({{"format": 1, "parameters": {{...}}}})')
        except (ValueError, KeyError) as exc:
            problem = "no \"parameters\"" if isinstance(exc, KeyError) else str(exc)
            self._set_aside(f"is not valid: {problem}")
            return {}
        self._entries = {str(k): v for k, v in entries.items()}
        values: dict[ua.NodeId, ua.Variant] = {}
        for key, entry in self._entries.items():
            nodeid = self._nodeid(key)
            if nodeid is None:
                log.info("parameters: %s: %s belongs to no namespace of this site; kept, not restored", self.path, key)
                continue
            try:
                values[nodeid] = decode(entry)
            except ValueError as exc:
                log.warning("parameters: %s: %s: %s; skipped, the nodeset default is used", self.path, key, exc)
        return values

    async def save(self, nodeid: ua.NodeId, variant: ua.Variant) -> None:
        """Store one value durably; returns when it is on disk (OSError if it could not be)."""
        key, entry = self._key(nodeid), encode(variant)
        await asyncio.get_running_loop().run_in_executor(self._thread, self._save, key, entry)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _save(self, key: str, entry: Entry) -> None:
        entries = {**self._entries, key: entry}
        text = json.dumps({"format": FORMAT, "parameters": entries}, indent=1, sort_keys=True, allow_nan=False)
        write_atomically(self.path, (text + "\n").encode(), 0o600)
        self._entries = entries

    def _nodeid(self, key: str) -> ua.NodeId | None:
        if not key.startswith("nsu="):
            return None  # namespace 0 holds no parameters
        for index, uri in sorted(enumerate(self.namespaces), key=lambda iu: -len(iu[1])):
            if index and key.startswith(f"nsu={uri};"):
                try:
                    return ua.NodeId.from_string(f"ns={index};{key[len(uri) + 5:]}")
                except Exception:  # asyncua raises several kinds for a malformed identifier
                    return None
        return None

    def _set_aside(self, problem: str) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
            kept = f"kept as {aside.name}"
        except OSError as exc:
            kept = f"could not be moved aside ({exc.strerror or exc})"
        log.warning("parameters: %s %s; %s, the nodeset defaults are used", self.path, problem, kept)


def encode(variant: ua.Variant) -> Entry:
    vt = variant.VariantType
    if vt in _JSON_TYPES:
        return {"type": vt.name, "value": variant.Value}
    return {"type": vt.name, "binary": base64.b64encode(ua_binary.variant_to_binary(variant)).decode("ascii")}


def decode(entry: Any) -> ua.Variant:
    """A stored entry back to a Variant; ValueError naming the problem."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ValueError('an entry needs a "type" and a "value" or "binary"')
    try:
        vt = ua.VariantType[entry["type"]]
    except KeyError:
        raise ValueError(f"unknown type {entry['type']!r}") from None
    if "binary" in entry:
        try:
            variant = ua_binary.variant_from_binary(Buffer(base64.b64decode(entry["binary"], validate=True)))
        except (binascii.Error, TypeError, ValueError, ua.UaError, IndexError) as exc:
            raise ValueError(f"undecodable binary value ({exc})") from None
        if variant.VariantType != vt:
            raise ValueError(f"binary value is a {variant.VariantType.name}, not a {vt.name}")
        return variant
    if vt not in _JSON_TYPES or "value" not in entry:
        raise ValueError(f"a {vt.name} needs a \"binary\" value" if vt not in _JSON_TYPES else 'no "value"')
    value = entry["value"]
    if isinstance(value, list):
        for item in value:
            _check(vt, item)
        return ua.Variant([float(v) if vt in _FLOATS else v for v in value], vt, is_array=True)
    _check(vt, value)
    return ua.Variant(float(value) if vt in _FLOATS else value, vt)


def _check(vt: ua.VariantType, value: Any) -> None:
    if vt == ua.VariantType.Boolean:
        ok = isinstance(value, bool)
    elif vt == ua.VariantType.String:
        ok = value is None or isinstance(value, str)  # None: the null string
    elif vt in _FLOATS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        lo, hi = _INT_RANGE[vt]
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    if not ok:
        raise ValueError(f"{value!r} is not a {vt.name}")
