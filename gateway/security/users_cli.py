"""`gateway users add/remove/list`: manage the users file under the data dir."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.datadir import add_data_dir_option, ensure_data_dir
from gateway.security.roles import Role
from gateway.security.users import UserFileError, UserStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage users (viewer, operator, admin)")
    add_data_dir_option(users)
    cmds = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = cmds.add_parser("add", help="add a user (password prompted, or read from stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.name for r in Role])
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    add.add_argument("--replace", action="store_true", help="change an existing user's role and password")
    add.set_defaults(func=_add)
    remove = cmds.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)
    lst = cmds.add_parser("list", help="list users and roles")
    lst.set_defaults(func=_list)
    for action in (add, remove, lst):
        add_data_dir_option(action)


def _store(args: argparse.Namespace) -> UserStore:
    return UserStore(Path(args.data_dir) / "users.yaml")


def _add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"password for {args.name}: ")
            again = getpass.getpass("again: ")
        except EOFError:  # no terminal and nothing on stdin
            print("error: no password given (type it at the prompt, or pipe it with --password-stdin)",
                  file=sys.stderr)
            return 1
        if again != password:
            print("passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        ensure_data_dir(Path(args.data_dir))
        _store(args).add(args.name, password, Role[args.role], replace=args.replace)
    except (ValueError, UserFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user '{args.name}' ({args.role}) saved in {_store(args).path}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    return _run(lambda: _store(args).remove(args.name), f"user '{args.name}' removed")


def _list(args: argparse.Namespace) -> int:
    def show() -> None:
        users = _store(args).list()
        for user in users:
            print(f"{user.name}\t{user.role.name}")
        if not users:
            print(f"no users in {_store(args).path}", file=sys.stderr)

    return _run(show)


def _run(action: Callable[[], object], done: str | None = None) -> int:
    """Run one users-file action; a refusal is one line on stderr and exit code 1."""
    try:
        action()
    except (KeyError, ValueError, UserFileError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    if done:
        print(done)
    return 0
