"""`culex passwd`: add, change or delete a user in a password file (like mosquitto_passwd).

    culex passwd [-c] [--scheme S] [--scram [--scram-iterations N]] [--password-stdin] FILE USER
                                   add USER or change its password
    culex passwd -D FILE USER      delete USER
    culex passwd --rehash [--scheme S] [--password-stdin] FILE USER
                                   hash USER's current password again with Culex's scheme

`--scram` also stores SCRAM-SHA-256 credentials, so the user can log in with MQTT 5 enhanced
authentication (method "SCRAM-SHA-256") as well as with a CONNECT password. Without it a changed
password drops any SCRAM entry the user had: it was made from the old password.

`-c` creates FILE, replacing any existing one (as mosquitto_passwd does); without it FILE must
exist, so a typo in the path cannot silently start a new, nearly empty file. The password is
read twice from the terminal with echo off, or once from a line of standard input with
`--password-stdin` for scripts (never from argv: it would show in `ps` and shell history).

`--rehash` is for files written by mosquitto_passwd, whose hashes are cheap to guess (one
SHA-512, or PBKDF2 with 101 iterations): given the user's current password (checked against the
stored hash first, so a typo cannot lock the user out), it stores a fresh hash of the same
password. The broker logs at start-up and on reload which users still have weak hashes.

Exit codes: 0 done, 1 one-line error on stderr (no traceback); 2 is argparse's own code for
unusable options, as for every culex subcommand.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .passwords import (
    DEFAULT_SCRAM_ITERATIONS,
    SCHEMES,
    SCRYPT,
    PasswordFile,
    PasswordFileError,
    params_for_scheme,
)

PROG = "culex passwd"


class PasswdError(Exception):
    """A user-facing failure: the message is printed as the one line on stderr."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--create", action="store_true",
                        help="create FILE, overwriting it if it exists")
    parser.add_argument("-D", "--delete", action="store_true", help="delete USER from FILE")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from one line of standard input")
    parser.add_argument("--scheme", choices=SCHEMES, default=SCRYPT,
                        help="password hash for new or changed users (default: %(default)s)")
    parser.add_argument("--rehash", action="store_true",
                        help="hash USER's current password again with --scheme; the password "
                        "given must be the current one")
    parser.add_argument("--scram", action="store_true",
                        help="also store SCRAM-SHA-256 credentials (MQTT 5 enhanced "
                        "authentication)")
    parser.add_argument("--scram-iterations", type=int, metavar="N",
                        help="PBKDF2 iterations of the SCRAM entry, which every client login "
                        f"repeats (default: {DEFAULT_SCRAM_ITERATIONS}, at least 4096)")
    parser.add_argument("file", metavar="FILE", type=Path, help="the password file")
    parser.add_argument("user", metavar="USER", help="the user name")


def run(args: argparse.Namespace) -> int:
    try:
        _run(args)
    except PasswdError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted, {args.file} unchanged", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> None:
    path: Path = args.file
    user: str = args.user
    if args.delete and (args.create or args.password_stdin):
        raise PasswdError("-D cannot be combined with -c or --password-stdin")
    if args.rehash and (args.delete or args.create or args.scram):
        raise PasswdError("--rehash cannot be combined with -D, -c or --scram")
    if args.scram_iterations is not None and not args.scram:
        raise PasswdError("--scram-iterations needs --scram")
    try:
        # argv that is not UTF-8 arrives with surrogate escapes, which the file cannot hold.
        user.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswdError("user name is not valid UTF-8") from None
    if args.create:
        passwords = PasswordFile()
    else:
        if not path.exists():
            raise PasswdError(f"{path}: no such file (use -c to create it)")
        try:
            passwords = PasswordFile.load(path)
        except PasswordFileError as exc:
            raise PasswdError(str(exc)) from None
    if args.delete:
        if not passwords.delete(user):
            raise PasswdError(f"user {user!r} not found in {path}")
    elif args.rehash:
        if user not in passwords:
            raise PasswdError(f"user {user!r} not found in {path}")
        password = _read_stdin() if args.password_stdin else _prompt(confirm=False)
        if not passwords.rehash(user, password, params_for_scheme(args.scheme)):
            raise PasswdError(f"that is not the current password of {user!r}; {path} "
                              "unchanged")
    else:
        password = _read_stdin() if args.password_stdin else _prompt()
        try:
            passwords.set(user, password, params_for_scheme(args.scheme),
                          (args.scram_iterations or DEFAULT_SCRAM_ITERATIONS) if args.scram
                          else None)
        except ValueError as exc:
            raise PasswdError(str(exc)) from None
    try:
        passwords.save(path)
    except OSError as exc:
        raise PasswdError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_stdin() -> bytes:
    # Bytes, not text: an MQTT password is binary data, and the terminal encoding must not
    # change what gets hashed. Only the line ending is removed.
    line = sys.stdin.buffer.readline()
    password = line.removesuffix(b"\n").removesuffix(b"\r")
    if not password:
        raise PasswdError("no password on standard input")
    return password


def _prompt(confirm: bool = True) -> bytes:
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Reenter password: ") if confirm else first
    except EOFError:
        raise PasswdError("no password given") from None
    if first != second:
        raise PasswdError("passwords do not match")
    if not first:
        raise PasswdError("empty password")
    try:
        return first.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswdError("password is not valid UTF-8") from None
