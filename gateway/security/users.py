"""Users of the gateway: a YAML file of names, roles and salted scrypt password hashes.

hashlib.scrypt is in the standard library; a password-hashing library would add a dependency
for the same primitive. A login costs one scrypt run whether or not the name exists, and runs in
a thread of its own (`GatewayUserManager.login`), never on the event loop. The file is written
atomically with mode 0600 so a crash mid-write never leaves a half file and other local users
cannot read the hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from asyncua.server.user_managers import UserManager

from gateway.files import write_atomically
from gateway.security.roles import GatewayUser, Role, asyncua_role

log = logging.getLogger(__name__)

# scrypt cost: n=2**14, r=8, p=1 is the OWASP minimum; about 50 ms per login on this class of machine.
_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Verified in place of an unknown user's hash, so a wrong name costs what a wrong password costs (one scrypt
# run with the same parameters). Its digest is of no password: nothing verifies against it.
_DUMMY_HASH = f"scrypt${_N}${_R}${_P}${'A' * 22}==${'A' * 43}="


class UserFileError(ValueError):
    pass


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: Role
    password_hash: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class UserStore:
    """The users file. Reads it on every change check, so `gateway users add` takes effect on a
    running gateway without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._users: dict[str, UserRecord] = {}

    def _load(self) -> dict[str, UserRecord]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._users = None, {}
            return self._users
        if mtime == self._mtime:
            return self._users
        try:
            doc = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserFileError(f"{self.path}: not valid YAML: {exc}") from exc
        users: dict[str, UserRecord] = {}
        entries = doc.get("users", {}) if isinstance(doc, dict) else None
        if not isinstance(entries, dict):
            raise UserFileError(f"{self.path}: expected a mapping 'users: {{name: {{role, password}}}}'")
        for name, entry in entries.items():
            if not isinstance(entry, dict) or "role" not in entry or "password" not in entry:
                raise UserFileError(f"{self.path}: user '{name}': needs 'role' and 'password'")
            try:
                role = Role.parse(str(entry["role"]))
            except ValueError as exc:
                raise UserFileError(f"{self.path}: user '{name}': {exc}") from None
            users[str(name)] = UserRecord(str(name), role, str(entry["password"]))
        self._mtime, self._users = mtime, users
        return users

    def _save(self, users: dict[str, UserRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "users": {u.name: {"role": u.role.name, "password": u.password_hash} for u in users.values()}
        }
        text = ("# Gateway users: managed by `gateway users add/remove/list`. Passwords are scrypt hashes.\n"
                + yaml.safe_dump(doc, sort_keys=True))
        write_atomically(self.path, text.encode(), 0o600)
        self._mtime = None

    def add(self, name: str, password: str, role: Role, replace: bool = False) -> None:
        if not _NAME.match(name):
            raise ValueError(f"user name '{name}' must be 1-64 letters, digits or _ . @ -")
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        users = dict(self._load())
        if name in users and not replace:
            raise ValueError(f"user '{name}' exists (use --replace to change its role or password)")
        users[name] = UserRecord(name, role, hash_password(password))
        self._save(users)

    def remove(self, name: str) -> None:
        users = dict(self._load())
        if name not in users:
            raise KeyError(f"no user '{name}'")
        del users[name]
        self._save(users)

    def list(self) -> list[UserRecord]:
        return sorted(self._load().values(), key=lambda u: u.name)

    def verify(self, name: str, password: str) -> Role | None:
        """The user's role if the password is right, else None."""
        record = self._load().get(name)
        if record is None:
            verify_password(password, _DUMMY_HASH)
            return None
        return record.role if verify_password(password, record.password_hash) else None


class GatewayUserManager(UserManager):
    """Username/password from the users file; anonymous sessions are viewers when allowed.
    Replaces asyncua's PermissiveUserManager, which makes 'admin' with any password an admin."""

    def __init__(self, store: UserStore, allow_anonymous: bool = True, login_threads: int = 2) -> None:
        self.store = store
        self.allow_anonymous = allow_anonymous
        # Its own threads: a burst of logins neither blocks the event loop nor takes the default pool's
        # threads from other work; two match the cores a small gateway has.
        self._login_threads = ThreadPoolExecutor(max_workers=login_threads, thread_name_prefix="login")

    async def login(self, username: str | None, password: str | None, certificate: Any = None) -> GatewayUser | None:
        """get_user in a login thread: the scrypt run (~50 ms) stays off the event loop."""
        if username is None:
            return self.get_user(None, certificate=certificate)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._login_threads, lambda: self.get_user(None, username, password))

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> GatewayUser | None:
        # `certificate` is the secure channel's client certificate, present for anonymous sessions
        # too; X509 identity tokens are not offered (configure_security), so no username = anonymous.
        if username is None:
            if not self.allow_anonymous:
                return None
            return GatewayUser(role=asyncua_role(Role.viewer), name=None, gateway_role=Role.viewer)
        if password is None:
            return None
        try:
            role = self.store.verify(username, password)
        except UserFileError as exc:
            log.error("users file unreadable, refusing login of '%s': %s", username, exc)
            return None
        if role is None:
            return None  # the transport logs the refusal once, with the client's address
        return GatewayUser(role=asyncua_role(role), name=username, gateway_role=role)
