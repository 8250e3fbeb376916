"""The users file and the `gateway users` command."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.security.roles import GatewayUser, Role, role_of
from gateway.security.users import GatewayUserManager, UserFileError, UserStore


def test_passwords_are_salted_hashes_in_a_private_file(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.yaml")
    store.add("alice", "same-password", Role.operator)
    store.add("bob", "same-password", Role.viewer)
    text = store.path.read_text()
    assert "same-password" not in text
    hashes = [u.password_hash for u in store.list()]
    assert hashes[0] != hashes[1] and all(h.startswith("scrypt$") for h in hashes)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.verify("alice", "same-password") is Role.operator
    assert store.verify("alice", "wrong-password") is None
    assert store.verify("nobody", "same-password") is None


def test_add_remove_and_refusals(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.yaml")
    store.add("op", "password1", Role.operator)
    with pytest.raises(ValueError, match="exists"):
        store.add("op", "password2", Role.admin)
    store.add("op", "password2", Role.admin, replace=True)
    assert store.verify("op", "password2") is Role.admin
    with pytest.raises(ValueError, match="at least 8"):
        store.add("short", "1234", Role.viewer)
    with pytest.raises(ValueError, match="user name"):
        store.add("bad name", "password1", Role.viewer)
    store.remove("op")
    assert store.list() == []
    with pytest.raises(KeyError):
        store.remove("op")


def test_a_broken_users_file_names_the_file_and_logs_nobody_in(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  eve: {role: superuser, password: x}\n")
    with pytest.raises(UserFileError, match=r"users.yaml: user 'eve': unknown role 'superuser'"):
        UserStore(path).list()
    manager = GatewayUserManager(UserStore(path))
    assert manager.get_user(None, username="eve", password="x") is None


def test_user_manager_roles_and_anonymous(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.yaml")
    store.add("admin1", "admin-secret", Role.admin)
    manager = GatewayUserManager(store, allow_anonymous=True)
    anon = manager.get_user(None)
    assert isinstance(anon, GatewayUser) and role_of(anon) is Role.viewer
    assert role_of(manager.get_user(None, username="admin1", password="admin-secret")) is Role.admin
    # asyncua's permissive default made "admin" with any password an administrator.
    assert manager.get_user(None, username="admin", password="anything") is None
    assert manager.get_user(None, username="admin1", password="wrong") is None
    assert GatewayUserManager(store, allow_anonymous=False).get_user(None) is None
    assert role_of(None) is Role.viewer


def _gateway(*args: str, data: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--data-dir", str(data), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_users_command(tmp_path: Path) -> None:
    added = _gateway("users", "add", "carol", "--role", "operator", "--password-stdin", data=tmp_path,
                     stdin="carol-secret\n")
    assert added.returncode == 0, added.stderr
    assert UserStore(tmp_path / "users.yaml").verify("carol", "carol-secret") is Role.operator
    listed = _gateway("users", "list", data=tmp_path)
    assert listed.stdout.strip() == "carol\toperator"
    again = _gateway("users", "add", "carol", "--role", "admin", "--password-stdin", data=tmp_path,
                     stdin="carol-secret\n")
    assert again.returncode == 1 and "exists" in again.stderr
    assert _gateway("users", "remove", "carol", data=tmp_path).returncode == 0
    missing = _gateway("users", "remove", "carol", data=tmp_path)
    assert missing.returncode == 1 and "no user 'carol'" in missing.stderr
