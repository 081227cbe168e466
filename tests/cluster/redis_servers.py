"""Real Redis servers for the cluster tests: Debian's redis-server on free loopback ports.

* `RedisServer`: one instance with `appendonly yes` and `appendfsync always`, as a cluster's
  Redis must run for "acknowledged means stored" to hold; `restart()` keeps its directory, so
  the AOF is read back as after a crash.
  With `replica_of`, a replica of another one.
* `RedisCluster`: three such instances with `cluster-enabled yes`, joined into a Redis Cluster
  of three masters by `redis-cli --cluster create`, with `replicas` replicas of each master
  (none unless asked).

A missing redis-server fails loudly (`make system-deps` installs it): nothing is skipped.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import PortTaken, free_port

START_TIMEOUT = 10.0


def redis_binary(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not found: run `make system-deps` (Debian's redis-server)"
    return path


class RedisServer:
    def __init__(self, directory: Path, *, cluster: bool = False,
                 replica_of: RedisServer | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        # The cluster bus port is given explicitly: the default, port + 10000, may be taken.
        self.bus_port = free_port() if cluster else 0
        self.cluster = cluster
        # A replica of that server (`--replicaof`), for the tests of `replicas`.
        self.replica_of = replica_of
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [redis_binary("redis-server"), "--port", str(self.port), "--bind", self.host,
                   "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                   "--appendfsync", "always", "--protected-mode", "no",
                   "--logfile", "redis.log"]
        if self.replica_of is not None:
            command += ["--replicaof", self.replica_of.host, str(self.replica_of.port)]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000", "--cluster-port", str(self.bus_port)]
        return command

    def start(self) -> RedisServer:
        for _attempt in range(3):
            try:
                return self._start_once()
            except PortTaken:
                # free_port() released the port before redis-server bound it, and a test
                # running in parallel took it meanwhile: other ports (a restart keeps them).
                self.port = free_port()
                self.bus_port = free_port() if self.cluster else 0
        raise RuntimeError("redis-server found no free port after 3 attempts")

    def _start_once(self) -> RedisServer:
        log = self.directory / "redis.log"
        if log.exists():
            log.unlink()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log_text():
                    raise PortTaken(self.port)
                raise RuntimeError(f"redis-server exited early:\n{self.log_text()}")
            try:
                if self.client().ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT} s")

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def log_text(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """kill -9: whatever was not in the AOF is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        """kill -9 and start again on the same port and directory (the AOF is replayed)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisCluster:
    """Three masters, each slot range on one of them; with `replicas`, that many replicas of
    each master too."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        self.servers = [RedisServer(directory / f"redis-{index}", cluster=True)
                        for index in range(masters * (1 + replicas))]
        self._replicas = replicas

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()  # none left behind gossiping to ports that later tests use
            raise

    def _start(self) -> RedisCluster:
        for server in self.servers:
            server.start()
        created = subprocess.run(
            [redis_binary("redis-cli"), "--cluster", "create",
             *(server.address for server in self.servers),
             "--cluster-replicas", str(self._replicas),
             "--cluster-yes"], capture_output=True, text=True, timeout=30, check=False)
        assert created.returncode == 0, created.stdout + created.stderr
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            states = [server.client().cluster("info")["cluster_state"]
                      for server in self.servers]
            if states == ["ok"] * len(self.servers):
                return self
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def replica_servers(self) -> list[RedisServer]:
        """The servers that are replicas now (as `redis-cli --cluster create` chose)."""
        return [server for server in self.servers
                if server.client().info("replication")["role"] == "slave"]

    def replicas_of(self, *keys: str) -> list[RedisServer]:
        """The replicas of the masters that hold `keys`."""
        client = self.client()
        ports = set()
        for key in keys:
            node = client.get_node_from_key(key)
            assert node is not None, key
            ports.add(int(node.port))
        client.close()
        return [server for server in self.replica_servers()
                if int(server.client().info("replication")["master_port"]) in ports]

    def replicas_in_sync(self) -> int:
        """How many replicas are online with their master."""
        return sum(1 for server in self.servers
                   for key, value in server.client().info("replication").items()
                   if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")

    def client(self) -> redis.RedisCluster:
        first = self.servers[0]
        return redis.RedisCluster(host=first.host, port=first.port, socket_timeout=5)

    def flush(self) -> None:
        for server in self.servers:
            server.client().flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
