"""`culex check-config` on a clustered configuration: what it would join, or one line naming
the key that is wrong. It does not connect to Redis (a configuration is often checked on
another machine than the one it runs on)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import render_config
from tests.integration.test_auth import culex


def test_check_config_names_the_cluster(tmp_path: Path) -> None:
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"cluster": {
        "redis": ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"], "node": "node-a"}}))
    result = culex("check-config", str(config), cwd=tmp_path, timeout=10)
    assert result.returncode == 0, result.stderr
    assert "cluster node node-a on 2 Redis URL(s), lease 5 s" in result.stdout


def test_check_config_refuses_a_bad_node_name(tmp_path: Path) -> None:
    config = tmp_path / "culex.toml"
    config.write_text(render_config({"cluster": {"redis": ["redis://127.0.0.1:7000"],
                                                 "node": "node a"}}))
    result = culex("check-config", str(config), cwd=tmp_path, timeout=10)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"culex: {config}: cluster.node: 'node a' must be 1-63 letters, digits, '.', '_' or "
        "'-', starting with a letter or digit (it names Redis keys)"]
