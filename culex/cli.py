"""Command line: `culex serve`, `culex --version`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import __version__
from .config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    check_exposure,
    load_config,
)
from .logs import setup_logging
from .server.app import run, tls_context
from .server.security import SecurityError, load_files
from .server.transport import ListenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culex", description="Culex MQTT broker")
    parser.add_argument("--version", action="version", version=f"culex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the broker")
    run.add_argument("--config", type=Path, help="TOML configuration file (culex.toml)")
    run.add_argument("--host", help="listen on this address instead of the configured ones")
    run.add_argument("--port", type=int, help="listen on this port instead of the configured ones")
    run.add_argument("--log-level", choices=LOG_LEVELS)
    run.add_argument("--log-format", choices=LOG_FORMATS)
    from .bench.command import add_arguments as add_bench_arguments  # noqa: PLC0415
    add_bench_arguments(commands.add_parser("bench", help="load-test an MQTT broker"))
    from .auth.passwd_command import add_arguments as add_passwd_arguments  # noqa: PLC0415
    add_passwd_arguments(commands.add_parser("passwd", help="manage a password file"))
    check = commands.add_parser("check-config", help="validate a configuration and the "
                                "password, ACL and certificate files it names; start nothing")
    check.add_argument("file", type=Path)
    return parser


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    if args.host is not None or args.port is not None:
        first = config.listeners[0]
        listener = dataclasses.replace(first, host=args.host or first.host,
                                       port=args.port if args.port is not None else first.port,
                                       unix="")
        config = dataclasses.replace(config, listeners=(listener,))
    if args.log_level or args.log_format:
        logging_config = dataclasses.replace(
            config.logging, level=args.log_level or config.logging.level,
            format=args.log_format or config.logging.format)
        config = dataclasses.replace(config, logging=logging_config)
    return config


def check_config(path: Path) -> int:
    """Validate a configuration and every file it names, without starting anything."""
    try:
        config = load_config(path)
        check_exposure(config, str(path))
        passwords, acl = load_files(config.auth)
        for listener in config.listeners:
            tls_context(listener)
    except (ConfigError, SecurityError, ListenError) as exc:
        print(f"culex: {exc}", file=sys.stderr)
        return 1
    users = len(passwords) if passwords is not None else 0
    methods = config.auth.enhanced_methods
    enhanced = ""
    if methods:
        scram_users = len(passwords.scram_users()) if passwords is not None else 0
        enhanced = f", enhanced auth {'/'.join(methods)} ({scram_users} SCRAM user(s))"
        if not scram_users:
            print(f"culex: warning: {path}: auth.enhanced_methods: {config.auth.password_file} "
                  "has no SCRAM entries (`culex passwd --scram`): every SCRAM login will fail",
                  file=sys.stderr)
    print(f"{path}: OK ({len(config.listeners)} listener(s), {users} user(s){enhanced}, "
          f"ACL {'on' if acl is not None else 'off'}, durability {config.storage.durability})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from .bench.command import run as run_bench  # noqa: PLC0415
        return run_bench(args)
    if args.command == "passwd":
        from .auth.passwd_command import run as run_passwd  # noqa: PLC0415
        return run_passwd(args)
    if args.command == "check-config":
        return check_config(args.file)
    try:
        config = apply_overrides(load_config(args.config), args)
        check_exposure(config, str(args.config or "command line"))
    except ConfigError as exc:
        print(f"culex: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.format)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
