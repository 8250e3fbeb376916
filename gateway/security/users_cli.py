"""`gateway users add/remove/list`: manage the users file under the data dir."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.security.roles import Role
from gateway.security.users import UserFileError, UserStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage users (viewer, operator, admin)")
    # SUPPRESS keeps the top-level --data-dir when the option is not repeated after `users`.
    users.add_argument("--data-dir", default=argparse.SUPPRESS, help="data dir holding users.yaml")
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


def _store(args: argparse.Namespace) -> UserStore:
    return UserStore(Path(args.data_dir) / "users.yaml")


def _add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        _store(args).add(args.name, password, Role[args.role], replace=args.replace)
    except (ValueError, UserFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user '{args.name}' ({args.role}) saved in {_store(args).path}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        _store(args).remove(args.name)
    except (KeyError, UserFileError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    print(f"user '{args.name}' removed")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        users = _store(args).list()
    except UserFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for user in users:
        print(f"{user.name}\t{user.role.name}")
    if not users:
        print(f"no users in {_store(args).path}", file=sys.stderr)
    return 0
