"""Namespace 0 from the cache file: the same address space as asyncua builds, rebuilt whenever the file
is stale or cannot be trusted, and a gateway started from it serves clients as one started without it."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.server.address_space import AddressSpace, NodeManagementService
from asyncua.server.internal_server import InternalServer

from gateway.addressspace import standard_cache
from gateway.addressspace.standard_cache import (
    CachedInternalServer,
    CacheUnusable,
    cache_file,
    cache_key,
    load_standard_nodes,
)
from gateway.server import Gateway, GatewayConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sim_site.xml"


@pytest.fixture(scope="module")
def written_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the file a first start writes (namespace 0 built once for the module)."""
    folder = tmp_path_factory.mktemp("ns0-cache")
    aspace = AddressSpace()
    source = standard_cache._load_or_build(aspace, NodeManagementService(aspace), folder)
    assert source == "built, cached"
    assert cache_file(folder, cache_key()).is_file()
    return folder


def _copy(written: Path, to: Path) -> Path:
    shutil.copytree(written, to)
    return cache_file(to, cache_key())


async def _fresh(folder: Path) -> tuple[AddressSpace, str]:
    aspace = AddressSpace()
    return aspace, await load_standard_nodes(aspace, NodeManagementService(aspace), folder)


def _value(dv: ua.DataValue) -> object:
    return dv.Value, dv.StatusCode  # timestamps differ between two inits


def _assert_same(built: AddressSpace, cached: AddressSpace) -> None:
    assert set(built.keys()) == set(cached.keys())
    for nodeid in built.keys():
        a, b = built[nodeid], cached[nodeid]
        assert set(a.attributes) == set(b.attributes), nodeid
        for aid, av in a.attributes.items():
            assert _value(av.value) == _value(b.attributes[aid].value), (nodeid, aid)
        assert a.references == b.references, nodeid
        assert (a.call is None) == (b.call is None), nodeid


async def test_every_server_reads_its_own_copy_from_the_file(written_cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _copy(written_cache, folder)
    first, source = await _fresh(folder)
    assert source == "file" and len(list(first.keys())) > 6000
    second, source = await _fresh(folder)
    assert source == "file"
    assert first[ua.NodeId(ua.ObjectIds.Server)] is not second[ua.NodeId(ua.ObjectIds.Server)]


async def test_init_from_the_cache_equals_init_by_building(written_cache: Path, tmp_path: Path) -> None:
    """All of asyncua's init (fixes, namespace and limits written, condition methods bound) on both."""
    built, cached = InternalServer(), CachedInternalServer()
    cached.standard_cache_dir = tmp_path / "cache"
    _copy(written_cache, cached.standard_cache_dir)
    for server in (built, cached):
        server.bind_condition_methods = True  # asyncua binds ConditionRefresh(2) in init
        await server.init()
    assert cached.standard_nodes_source == "file"
    _assert_same(built.aspace, cached.aspace)
    refresh = cached.aspace[ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh)]
    assert refresh.call == cached.subscription_service.condition_refresh


async def test_a_stale_key_builds_and_replaces_the_file(written_cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = _copy(written_cache, tmp_path / "cache")
    monkeypatch.setattr(standard_cache, "CACHE_FORMAT", standard_cache.CACHE_FORMAT + 1)
    assert cache_file(tmp_path / "cache", cache_key()) != old
    aspace, source = await _fresh(tmp_path / "cache")
    assert source == "built, cached"
    assert cache_file(tmp_path / "cache", cache_key()).is_file()
    assert old.exists()  # another virtualenv's asyncua may still use it
    assert ua.NodeId(ua.ObjectIds.Server) in aspace


async def test_a_corrupt_file_is_built_again_with_a_log_line(written_cache: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = _copy(written_cache, tmp_path / "cache")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=standard_cache.__name__):
        aspace, source = await _fresh(tmp_path / "cache")
    assert source == "built, cached"
    assert any("digest does not match" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert standard_cache._unpickle(standard_cache._read_file(path))  # written anew, whole
    assert ua.NodeId(ua.ObjectIds.Server) in aspace


def _with_digest(payload: bytes) -> bytes:
    import hashlib

    return standard_cache._MAGIC + hashlib.sha256(payload).digest() + payload


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda good: good[: len(good) - 1000], "digest does not match"),
    (lambda good: b"", "not a cache file of this format"),
    (lambda good: b"\x80\x05garbage" * 100, "not a cache file of this format"),
    (lambda good: _with_digest(b"\x80\x05not a pickle"), "does not unpickle"),
    (lambda good: _with_digest(pickle.dumps({"a": 1})), "not a namespace 0"),
])
def test_a_file_that_cannot_be_trusted_is_refused(written_cache: Path, tmp_path: Path, damage, reason: str) -> None:
    good = cache_file(written_cache, cache_key()).read_bytes()
    path = tmp_path / "ns0.pickle"
    path.write_bytes(damage(good))
    path.chmod(0o600)
    with pytest.raises(CacheUnusable, match=reason):
        standard_cache._unpickle(standard_cache._read_file(path))


def test_a_file_others_may_write_is_refused(written_cache: Path, tmp_path: Path) -> None:
    path = _copy(written_cache, tmp_path / "cache")
    path.chmod(0o666)
    with pytest.raises(CacheUnusable, match="others may write"):
        standard_cache._read_file(path)
    path.chmod(0o600)
    assert standard_cache._read_file(path)


async def test_an_unwritable_cache_folder_still_serves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be\n")
    with caplog.at_level(logging.WARNING, logger=standard_cache.__name__):
        aspace, source = await _fresh(blocker / "cache")
    assert source == "built"
    assert any("cannot write the namespace 0 cache" in r.getMessage() for r in caplog.records)
    assert ua.NodeId(ua.ObjectIds.Server) in aspace


def test_the_default_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for env in ("GATEWAY_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert standard_cache.default_cache_dir() == tmp_path / ".cache" / "opcua-gateway"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert standard_cache.default_cache_dir() == tmp_path / "xdg" / "opcua-gateway"
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/gateway")  # systemd's CacheDirectory=gateway
    assert standard_cache.default_cache_dir() == Path("/var/cache/gateway")
    monkeypatch.setenv("GATEWAY_CACHE_DIR", str(tmp_path / "own"))
    assert standard_cache.default_cache_dir() == tmp_path / "own"


@pytest.mark.integration
async def test_a_gateway_started_from_the_file_serves_clients(written_cache: Path, tmp_path: Path, free_port: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _copy(written_cache, tmp_path / "cache")
    monkeypatch.setenv("GATEWAY_CACHE_DIR", str(tmp_path / "cache"))
    gw = Gateway(GatewayConfig(nodesets=[FIXTURE], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        assert gw.server.iserver.standard_nodes_source == "file"
        async with Client(gw.config.endpoint) as client:
            server = client.get_node(ua.ObjectIds.Server)
            names = {(await child.read_browse_name()).Name for child in await server.get_children()}
            assert {"ServerStatus", "NamespaceArray", "ServerCapabilities", "GetMonitoredItems"} <= names
            state = await client.get_node(ua.ObjectIds.Server_ServerStatus_State).read_value()
            assert state == ua.ServerState.Running
            assert "urn:test:sim-site" in await client.get_namespace_array()

            class Handler:
                def event_notification(self, event: object) -> None:
                    pass

            subscription = await client.create_subscription(100, Handler())
            await subscription.subscribe_events(server)
            # A method on a namespace-0 node, bound by the gateway after the load, called by a client.
            condition_type = client.get_node(ua.ObjectIds.ConditionType)
            await condition_type.call_method(ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                                             ua.Variant(subscription.subscription_id, ua.VariantType.UInt32))
            with pytest.raises(ua.UaStatusCodeError):  # not this session's subscription: refused, as when built
                await condition_type.call_method(ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                                                 ua.Variant(subscription.subscription_id + 1000,
                                                            ua.VariantType.UInt32))
    finally:
        await gw.stop()
    assert os.stat(cache_file(tmp_path / "cache", cache_key())).st_mode & 0o077 == 0


def test_files_of_other_keys_least_recently_used_go(tmp_path: Path) -> None:
    others = [tmp_path / f"ns0-other{i}.pickle" for i in range(5)]
    for age, path in enumerate(others):  # other0 the most recently used
        path.write_bytes(b"another asyncua's namespace 0")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    standard_cache._write_file(tmp_path / "ns0-mine.pickle", b"payload")
    kept = {p.name for p in tmp_path.glob("ns0-*.pickle")}
    assert kept == {"ns0-mine.pickle", "ns0-other0.pickle", "ns0-other1.pickle", "ns0-other2.pickle"}
    assert standard_cache._read_file(tmp_path / "ns0-mine.pickle") == b"payload"
