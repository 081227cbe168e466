"""Command line: `culex serve`, `culex trace`, `culex --version`, and the other subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import logging
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
from .logs import log_file_of, setup_logging
from .mosquitto.conf import read_mosquitto_conf
from .mosquitto.model import MosquittoConfError
from .mosquitto.toml import dumps
from .server.app import check_files, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culex", description="Culex MQTT broker")
    parser.add_argument("--version", action="version", version=f"culex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the broker")
    run.add_argument("--config", type=Path, help="configuration file: culex.toml, or "
                     "Mosquitto's format when its name ends in .conf")
    run.add_argument("--host", help="listen on this address instead of the configured ones")
    run.add_argument("--port", type=port_number,
                     help="listen on this port instead of the configured ones")
    run.add_argument("--admin", metavar="HOST:PORT", type=admin_address,
                     help='serve the admin API (/metrics, /api/v1/) here instead of [admin] '
                     'host and port; "off" turns it off')
    run.add_argument("--log-level", choices=LOG_LEVELS)
    run.add_argument("--log-format", choices=LOG_FORMATS)
    run.add_argument("--log-file", type=Path,
                     help="log to this file instead of stderr; SIGUSR1 reopens it (logrotate)")
    run.add_argument("--pid-file", type=Path,
                     help="write the broker's pid here once it listens; removed at exit")
    from .bench.command import add_arguments as add_bench_arguments  # noqa: PLC0415
    add_bench_arguments(commands.add_parser("bench", help="load-test an MQTT broker"))
    from .auth.passwd_command import add_arguments as add_passwd_arguments  # noqa: PLC0415
    add_passwd_arguments(commands.add_parser("passwd", help="manage a password file"))
    from .trace_command import add_arguments as add_trace_arguments  # noqa: PLC0415
    add_trace_arguments(commands.add_parser(
        "trace", help="show one client's packets, or the messages on a topic filter, live "
        "(from a running broker's admin API)"))
    from .membership_command import add_arguments as add_cluster_arguments  # noqa: PLC0415
    add_cluster_arguments(commands.add_parser(
        "cluster", help="list a cluster's members, or forget one that is gone for good"))
    check = commands.add_parser("check-config", help="validate a configuration and the "
                                "password, ACL and certificate files it names; start nothing")
    check.add_argument("file", type=Path)
    convert = commands.add_parser("convert-config", help="print the culex.toml equivalent of "
                                  "a mosquitto.conf, with a comment on each key that has none")
    convert.add_argument("file", type=Path)
    return parser


def port_number(text: str) -> int:
    port = int(text)  # ValueError: argparse says "invalid port_number value"
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def admin_address(text: str) -> tuple[str, int]:
    """`--admin`: HOST:PORT ([::1]:PORT for IPv6), or "off" (no host)."""
    if text == "off":
        return "", 0
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT or off")
    return host.removeprefix("[").removesuffix("]"), int(port)


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    if args.host is not None or args.port is not None:
        first = config.listeners[0]
        listener = dataclasses.replace(first, host=args.host or first.host,
                                       port=args.port if args.port is not None else first.port,
                                       unix="")
        config = dataclasses.replace(config, listeners=(listener,))
    if args.admin is not None:
        host, port = args.admin
        config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, host=host,
                                                                       port=port))
    if args.log_level or args.log_format or args.log_file:
        logging_config = dataclasses.replace(
            config.logging, level=args.log_level or config.logging.level,
            format=args.log_format or config.logging.format,
            file=str(args.log_file) if args.log_file else config.logging.file)
        config = dataclasses.replace(config, logging=logging_config)
    return config


def listeners_source(args: argparse.Namespace, source: str) -> str | None:
    """The command-line options that replaced the configured listeners, for errors about
    them; None when the listeners are the configuration's (`source`)."""
    if args.host is not None and args.port is not None:
        return f"command line --host {args.host} --port {args.port}"
    if args.host is not None:
        return f"command line --host {args.host} (port from {source}: listeners[0])"
    if args.port is not None:
        return f"command line --port {args.port} (host from {source}: listeners[0])"
    return None


def check_config(path: Path) -> int:
    """Validate a configuration and every file it names, without starting anything."""
    try:
        config = load_config(path)
        check_exposure(config, str(path))
        files = check_files(config).auth
    except ConfigError as exc:
        print(f"culex: {exc}", file=sys.stderr)
        return 1
    passwords, acl = files.passwords, files.acl
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
    for warning in config.warnings:
        print(f"culex: warning: {warning}", file=sys.stderr)
    bridges = f", {len(config.bridges)} bridge(s)" if config.bridges else ""
    cluster = config.cluster
    clustered = "" if cluster is None else (
        f", cluster node {cluster.node} on {len(cluster.redis)} Redis URL(s), "
        f"lease {cluster.lease:g} s")
    if files.dynamic_security is not None:
        state = files.dynamic_security[1]
        print(f"{path}: OK ({len(config.listeners)} listener(s), dynamic security: "
              f"{len(state.clients)} client(s), {len(state.groups)} group(s), "
              f"{len(state.roles)} role(s), durability {config.storage.durability}"
              f"{bridges}{clustered})")
        return 0
    print(f"{path}: OK ({len(config.listeners)} listener(s), {users} user(s){enhanced}, "
          f"ACL {'on' if acl is not None else 'off'}, durability {config.storage.durability}"
          f"{bridges}{clustered})")
    return 0


def convert_config(path: Path) -> int:
    """Print the culex.toml that a mosquitto.conf amounts to. The files it names are not
    checked: a configuration is often converted on another machine than the one it runs on."""
    try:
        conf = read_mosquitto_conf(path)
    except MosquittoConfError as exc:
        print(f"culex: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(dumps(conf, str(path)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from .bench.command import run as run_bench  # noqa: PLC0415
        return run_bench(args)
    if args.command == "passwd":
        from .auth.passwd_command import run as run_passwd  # noqa: PLC0415
        return run_passwd(args)
    if args.command == "trace":
        from .trace_command import run as run_trace  # noqa: PLC0415
        return run_trace(args)
    if args.command == "cluster":
        from .membership_command import run as run_cluster  # noqa: PLC0415
        return run_cluster(args)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "convert-config":
        return convert_config(args.file)
    source = str(args.config) if args.config else "the default configuration"
    try:
        config = apply_overrides(load_config(args.config), args)
        check_exposure(config, source, listeners_source(args, source))
        checked = check_files(config)
        log_file = log_file_of(config)
        try:
            setup_logging(config.logging.level, config.logging.format, file=log_file)
        except OSError as exc:
            setting = "--log-file" if args.log_file else f"{source}: logging.file"
            raise ConfigError(f"{setting}: {log_file}: cannot open: {exc.strerror}") from None
    except ConfigError as exc:
        print(f"culex: configuration error: {exc}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        logging.getLogger("culex").warning("%s", warning)
    return run(config, checked, args.pid_file)


if __name__ == "__main__":
    sys.exit(main())
