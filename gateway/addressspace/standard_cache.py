"""Namespace 0 (the OPC UA standard address space) read from a cache file instead of built at every start.

asyncua's `Server.init()` builds namespace 0 by running generated code that adds its ~6,200 nodes one
AddNodes item at a time: 1.6 s of a 25,000-node site's start on a quiet machine. Unpickling the nodes
it built takes a fraction of that. The cache holds exactly what that generated code builds, taken
before `init()` does anything else, so every later step (asyncua's address space fixes, its
namespace and operation-limit writes, method callbacks the gateway binds) runs on the loaded nodes
as it does on built ones; the nodes themselves hold no callbacks at that point.

The file lives in a cache folder shared by every data dir of the user (tests start hundreds of
gateways in fresh data dirs), is named by a key of everything its content depends on (the cache
format, Python and asyncua versions, the generated code's files) and carries a SHA-256 of its
payload. A file that is missing, stale, truncated, corrupt, not the user's own or writable by others
is never used: namespace 0 is built as asyncua builds it, the reason is logged, and a fresh file is
written (atomically, so concurrent starts never read half a file).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncua
from asyncua import ua
from asyncua.server import address_space
from asyncua.server.address_space import AddressSpace, NodeData, NodeManagementService
from asyncua.server.internal_server import InternalServer
from asyncua.ua import uaprotocol_auto, uatypes

from gateway.addressspace.collector import collector_paused

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_DIR_ENV = "GATEWAY_CACHE_DIR"
_MAGIC = b"GWNS0\x00"
_DIGEST_LEN = 32
# Nodes every namespace 0 has: a payload without them is not one, whatever its digest says.
_SENTINELS = (ua.ObjectIds.RootFolder, ua.ObjectIds.Server, ua.ObjectIds.HasComponent,
              ua.ObjectIds.ConditionType_ConditionRefresh, ua.ObjectIds.Server_NamespaceArray)
# Cache files of other keys kept (other virtualenvs of the same user, each with its own asyncua, share
# the folder: removing every other key would make them rebuild in turn); the least recently used go.
_KEEP_FILES = 4


class CacheUnusable(Exception):
    """The cache file cannot be used; the message says why."""


def default_cache_dir() -> Path:
    """$GATEWAY_CACHE_DIR, else systemd's CacheDirectory= ($CACHE_DIRECTORY), else the XDG user cache."""
    for env in (CACHE_DIR_ENV, "CACHE_DIRECTORY"):
        value = os.environ.get(env)
        if value:
            return Path(value.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "opcua-gateway"


def cache_key() -> str:
    """A digest of everything the cached nodes depend on: a change to any of them names another file."""
    parts = [f"format={CACHE_FORMAT}", f"python={sys.implementation.name}-{sys.version}",
             f"asyncua={asyncua.__version__}"]
    # The generated code itself (a patched or reinstalled asyncua of the same version builds other nodes).
    # Found, not imported: importing it is the first step of building namespace 0.
    spec = importlib.util.find_spec("asyncua.server.standard_address_space")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                st = entry.stat()
                parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    # The classes the pickle names (NodeData, AttributeValue, the ua types): their fields are its layout.
    for module in (address_space, uatypes, uaprotocol_auto):
        st = os.stat(module.__file__ or "")
        parts.append(f"{module.__name__}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def cache_file(folder: Path, key: str) -> Path:
    return folder / f"ns0-{key}.pickle"


def _check_nodes(nodes: Any) -> dict[ua.NodeId, NodeData]:
    if not isinstance(nodes, dict) or len(nodes) < 1000:
        raise CacheUnusable("the payload is not a namespace 0")
    for identifier in _SENTINELS:
        node = nodes.get(ua.NodeId(identifier))
        if not isinstance(node, NodeData):
            raise CacheUnusable(f"the payload lacks node i={identifier}")
    return nodes


def _unpickle(payload: bytes | memoryview) -> dict[ua.NodeId, NodeData]:
    try:
        with collector_paused():  # ~300,000 objects, none of them garbage
            nodes = pickle.loads(payload)  # the user's own file: _read_file checked owner, mode, digest
    except Exception as exc:  # a payload from another asyncua can fail in any of pickle's ways
        raise CacheUnusable(f"the payload does not unpickle: {exc!r}") from exc
    return _check_nodes(nodes)


def _read_file(path: Path) -> memoryview:
    """The file's payload once its owner, mode and digest are checked."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise CacheUnusable("no cache file yet") from None
    except OSError as exc:
        raise CacheUnusable(f"cannot open it: {exc}") from exc
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise CacheUnusable(f"it belongs to uid {st.st_uid}, not to this user")
        if stat.S_IMODE(st.st_mode) & 0o022:
            raise CacheUnusable(f"others may write it (mode {stat.S_IMODE(st.st_mode):04o})")
        data = f.read()
        os.utime(f.fileno())  # recently used: kept when files of other keys are removed
    head = len(_MAGIC) + _DIGEST_LEN
    if len(data) <= head or not data.startswith(_MAGIC):
        raise CacheUnusable("it is not a cache file of this format")
    payload = memoryview(data)[head:]
    if hashlib.sha256(payload).digest() != data[len(_MAGIC):head]:
        raise CacheUnusable("its digest does not match (truncated or corrupt)")
    return payload


def _write_file(path: Path, payload: bytes) -> None:
    """Write atomically (a temporary file renamed over it), then remove files of other keys."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ns0-", dir=path.parent)
    try:
        with open(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).digest())
            f.write(payload)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    others = sorted((f for f in path.parent.glob("ns0-*.pickle") if f != path),
                    key=lambda f: f.stat().st_mtime, reverse=True)
    for old in others[_KEEP_FILES - 1:]:
        old.unlink(missing_ok=True)


def _build(node_mgt_service: NodeManagementService) -> None:
    from asyncua.server.standard_address_space import standard_address_space

    standard_address_space.fill_address_space(node_mgt_service)


def _load_or_build(aspace: AddressSpace, node_mgt_service: NodeManagementService, folder: Path) -> str:
    """Fill the (empty) address space with namespace 0; say where it came from."""
    path = cache_file(folder, cache_key())
    try:
        nodes = _unpickle(_read_file(path))
    except CacheUnusable as exc:
        (log.info if str(exc) == "no cache file yet" else log.warning)(
            "namespace 0 cache %s not used (%s); building namespace 0", path, exc)
    else:
        for nodeid, node in nodes.items():
            aspace[nodeid] = node
        return "file"
    with collector_paused():  # a build and a dump allocate much, free nothing
        _build(node_mgt_service)
        payload = pickle.dumps({nodeid: aspace[nodeid] for nodeid in aspace.keys()}, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        _write_file(path, payload)
    except OSError as exc:  # a read-only home, a full disk: the next start builds again
        log.warning("cannot write the namespace 0 cache %s (%s); every start builds namespace 0", path, exc)
        return "built"
    return "built, cached"


async def load_standard_nodes(aspace: AddressSpace, node_mgt_service: NodeManagementService,
                              folder: Path | None = None) -> str:
    """Namespace 0 into an empty address space, from the cache when it is usable (in a thread: it is
    CPU-bound). Returns where it came from: "file", "built" or "built, cached"."""
    return await asyncio.to_thread(_load_or_build, aspace, node_mgt_service, folder or default_cache_dir())


class StandardNodesFromCache:
    """InternalServer mixin: `init()` takes namespace 0 from the cache (`load_standard_nodes`).

    `standard_cache_dir` None means `default_cache_dir()`. An explicit shelf file (asyncua's own,
    lazily loaded variant) keeps asyncua's behaviour."""

    standard_cache_dir: Path | None = None
    standard_nodes_source: str = ""

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        if shelf_file is not None:
            await super().load_standard_address_space(shelf_file)  # type: ignore[misc]
            return
        self.standard_nodes_source = await load_standard_nodes(
            self.aspace, self.node_mgt_service, self.standard_cache_dir)  # type: ignore[attr-defined]
        log.debug("namespace 0 from %s", self.standard_nodes_source)


class CachedInternalServer(StandardNodesFromCache, InternalServer):
    """asyncua's InternalServer, namespace 0 from the cache (for a server that loads a site it does not serve)."""
