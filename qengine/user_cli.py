"""``qengine user``: manage the user store (users, classes, passwords, bearer tokens, grants).

The store is the file named by cluster.yaml's ``auth.users`` (``--config``), or ``--store PATH``,
or ``$QENGINE_USERS``. Secrets are read from standard input (never from the command line, where
``ps`` and shell history would keep them) and stored only as hashes; a new token is printed
once."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qengine.errors import ConfigError, QEngineError
from qengine.users import USER_CLASSES, UserStore

__all__ = ["add_arguments", "run"]


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="cluster.yaml: the store is its auth.users file")
    where.add_argument("--store", type=Path, help="the user store file (default: $QENGINE_USERS)")
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    common = _common()
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("add", parents=[common], help="add a user",
                       description="Add a user of a class; optionally set its MySQL password (read from "
                                   "standard input) and issue a TAP bearer token (printed once).")
    a.add_argument("name")
    a.add_argument("--class", dest="user_class", required=True, choices=USER_CLASSES,
                   help="the user class: its resource limits (guest: small, power, science: large)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    a.add_argument("--token", action="store_true", help="also issue a bearer token and print it")
    for name, text in (("grant", "let a user read a database, or one table of it"),
                       ("revoke", "take back a grant")):
        g = sub.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] + ".")
        g.add_argument("name")
        g.add_argument("what", metavar="DB[.TABLE]", help="a database (all its tables) or one table")
    t = sub.add_parser("token", parents=[common], help="issue a new bearer token (printed once)",
                       description="Issue a new TAP/HTTP bearer token for a user and print it: it is not "
                                   "stored, only its hash. --revoke-all first revokes the user's tokens.")
    t.add_argument("name")
    t.add_argument("--label", default="", help="a note kept with the token's hash (e.g. 'laptop')")
    t.add_argument("--revoke-all", action="store_true", help="revoke every token of the user (no new one "
                                                             "unless --new is given too)")
    t.add_argument("--new", action="store_true", help="with --revoke-all: issue a new token afterwards")
    pw = sub.add_parser("passwd", parents=[common], help="set a user's MySQL password (from stdin)",
                        description="Set a user's password, read from the first line of standard input.")
    pw.add_argument("name")
    c = sub.add_parser("class", parents=[common], help="change a user's class",
                       description="Change a user's class (its resource limits).")
    c.add_argument("name")
    c.add_argument("user_class", choices=USER_CLASSES)
    r = sub.add_parser("remove", parents=[common], help="remove a user (its tokens stop working)",
                       description="Remove a user; its tokens and password stop working at once.")
    r.add_argument("name")
    sub.add_parser("list", parents=[common], help="list users, classes and grants (no secrets)",
                   description="List users: class, grants, number of tokens, whether a password is set.")


def store_of(args: argparse.Namespace) -> UserStore:
    """The store named by --config, --store or $QENGINE_USERS."""
    if getattr(args, "config", None):
        from czar.server import load_cluster_config

        auth = load_cluster_config(args.config).get("auth")
        if auth is None:
            raise ConfigError(f"{args.config} has no 'auth' section (auth: {{users: users.json}})")
        return auth.store
    path = getattr(args, "store", None) or os.environ.get("QENGINE_USERS")
    if not path:
        raise QEngineError("which user store? give --config cluster.yaml, --store FILE or set QENGINE_USERS")
    return UserStore(path)


def _password() -> str:
    line = sys.stdin.readline()
    pw = line.rstrip("\r\n")
    if not pw:
        raise QEngineError("no password on standard input (e.g. printf '%s\\n' \"$PW\" | qengine user ...)")
    return pw


def run(args: argparse.Namespace) -> int:
    store = store_of(args)
    if args.action == "add":
        pw = _password() if args.password_stdin else None
        store.add(args.name, args.user_class, pw)
        print(f"user {args.name} added (class {args.user_class}"
              f"{', password set' if pw else ''})", file=sys.stderr)
        if args.token:
            print(store.new_token(args.name, "created with the user"))
            print("the token is shown only this once: keep it", file=sys.stderr)
    elif args.action == "grant":
        store.grant(args.name, args.what)
        print(f"{args.name} may read {args.what}", file=sys.stderr)
    elif args.action == "revoke":
        if not store.revoke(args.name, args.what):
            raise QEngineError(f"{args.name} has no grant {args.what!r} "
                               f"(grants: {', '.join(store.users()[args.name]['grants']) or 'none'})")
        print(f"{args.name} may no longer read {args.what}", file=sys.stderr)
    elif args.action == "token":
        if args.revoke_all:
            n = store.revoke_tokens(args.name)
            print(f"{n} token(s) of {args.name} revoked", file=sys.stderr)
            if not args.new:
                return 0
        print(store.new_token(args.name, args.label))
        print("the token is shown only this once: keep it", file=sys.stderr)
    elif args.action == "passwd":
        store.set_password(args.name, _password())
        print(f"password of {args.name} set", file=sys.stderr)
    elif args.action == "class":
        store.set_class(args.name, args.user_class)
        print(f"{args.name} is now of class {args.user_class}", file=sys.stderr)
    elif args.action == "remove":
        store.remove(args.name)
        print(f"user {args.name} removed", file=sys.stderr)
    elif args.action == "list":
        users = store.users()
        print("user\tclass\tgrants\ttokens\tpassword")
        for name, u in users.items():
            print(f"{name}\t{u['class']}\t{','.join(u['grants']) or '-'}\t{u['tokens']}\t"
                  f"{'yes' if u['password'] else 'no'}")
    return 0
