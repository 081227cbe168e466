"""The admin listener against a real broker (one and two worker processes): `/metrics` parsed by
prometheus-client's own parser and checked against the traffic the test made, every JSON
answer held to the OpenAPI document (admin_client.py), the bearer token, and the start-up
rules (beyond loopback without a token; a busy port)."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from prometheus_client.parser import text_string_to_metric_families

from culex.core.worker_links import owner_of
from tests.conftest import BrokerFactory, BrokerProcess, free_port
from tests.integration.admin_client import AdminClient, admin_url, wait_until
from tests.integration.clients import Clients, Will
from tests.integration.test_reload import reload

ADMIN = {"host": "127.0.0.1", "port": 0}
V5 = mqtt.MQTTv5


def api(broker: BrokerProcess, token: str | None = None) -> AdminClient:
    return AdminClient(admin_url(broker), token)


def scrape(admin: AdminClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """`/metrics`, parsed: sample name -> labels (without `worker`) -> the sum over workers."""
    text = admin.call("GET", "/metrics").body.decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
        lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((key, value) for key, value in sample.labels.items()
                                  if key != "worker"))
            samples[sample.name][labels] += sample.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name][tuple(sorted(labels.items()))])


def test_metrics_count_the_traffic_the_test_made(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN, sys_interval=0, limits={"max_queued_messages": 2})
    admin = api(broker)
    listener = f"127.0.0.1:{broker.port}"
    with Clients(broker) as clients:
        offline = clients.paho("metrics-offline", clean_session=False)
        assert offline.subscribe("queued/#", 1) == [1]
        offline.disconnect()
        subscriber = clients.subscriber("traffic/#", 2, client_id="metrics-sub")
        clients.paho("metrics-v5", protocol=V5)
        publisher = clients.paho("metrics-pub")
        for qos, count in ((0, 7), (1, 5), (2, 3)):
            for number in range(count):
                publisher.publish("traffic/x", f"{qos}-{number}", qos)
        assert len(subscriber.get_many(15)) == 15
        publisher.publish("$SYS/not-yours", "x", 0)  # dropped: $SYS is read-only
        for number in range(5):  # 2 fit the offline session's queue, 3 are dropped
            publisher.publish("queued/1", str(number), 1)
        publisher.publish("kept/1", "a", 0, retain=True)
        publisher.publish("kept/2", "b", 1, retain=True)

        def settled() -> dict[str, Any] | None:
            samples = scrape(admin)
            done = value(samples, "culex_messages_dropped_total", reason="queue_full") == 3 \
                and value(samples, "culex_event_loop_lag_seconds_count") > 0 \
                and value(samples, "culex_retained_messages") == 2 * broker.workers
            return samples if done else None

        samples = wait_until(settled)
        received = [value(samples, "culex_messages_received_total", qos=str(qos))
                    for qos in range(3)]
        assert received == [7 + 1 + 1, 5 + 5 + 1, 3]
        assert [value(samples, "culex_messages_sent_total", qos=str(qos))
                for qos in range(3)] == [7, 5, 3]
        assert value(samples, "culex_messages_dropped_total", reason="not_authorized") == 1
        for reason in ("expired", "too_large", "stalled_reader"):
            assert value(samples, "culex_messages_dropped_total", reason=reason) == 0
        assert value(samples, "culex_connections", listener=listener, protocol="3.1.1") == 2
        assert value(samples, "culex_connections", listener=listener, protocol="5.0") == 1
        assert value(samples, "culex_sessions", state="connected") == 3
        assert value(samples, "culex_sessions", state="offline") == 1
        assert value(samples, "culex_queued_messages") == 2
        assert value(samples, "culex_subscriptions") == 2
        assert value(samples, "culex_storage_commit_seconds_count") > 0
        assert value(samples, "culex_storage_commit_seconds_bucket", le="+Inf") == \
            value(samples, "culex_storage_commit_seconds_count")
        assert value(samples, "culex_bytes_received_total") > 15 * 10
        assert worker_labels(admin, "culex_packets_received_total") == {
            str(index) for index in range(broker.workers)}
        stats = admin.get("/api/v1/stats")
        assert (stats["messages_received"], stats["messages_sent"]) == (sum(received), 15)
        assert (stats["sessions_connected"], stats["sessions_offline"]) == (3, 1)
        assert stats["dropped"]["queue_full"] == 3 and stats["retained"] == 2


def worker_labels(admin: AdminClient, name: str) -> set[str]:
    """The `worker` labels of the samples of `name`: one series per worker process."""
    text = admin.call("GET", "/metrics").body.decode()
    return {sample.labels["worker"] for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name}


def test_drops_too_large_and_expired_are_counted(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN, sys_interval=0)
    admin = api(broker)
    with Clients(broker) as clients:
        tiny = clients.paho("drops-tiny", protocol=V5, connect=False)
        connect = PahoProperties(PacketTypes.CONNECT)
        connect.MaximumPacketSize = 100
        tiny.connect(properties=connect)
        assert tiny.subscribe("drops/big", 1) == [1]
        late = clients.paho("drops-late", protocol=V5, clean_session=False, connect=False)
        session = PahoProperties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 300
        late.connect(properties=session)
        assert late.subscribe("drops/expiring", 1) == [1]
        late.disconnect()
        publisher = clients.paho("drops-pub", protocol=V5)
        publisher.publish("drops/big", b"x" * 200, 1)
        expiring = PahoProperties(PacketTypes.PUBLISH)
        expiring.MessageExpiryInterval = 1
        publisher.publish("drops/expiring", "soon gone", 1, properties=expiring)
        wait_until(lambda: value(scrape(admin), "culex_messages_dropped_total",
                                 reason="too_large") == 1)
        # The queued message expires while its session is offline: dropped when it would
        # have been sent, on the session's return.
        published = time.monotonic()
        wait_until(lambda: time.monotonic() - published > 1.2, timeout=5)
        returning = clients.paho("drops-late", protocol=V5, clean_session=False,
                                 connect=False)
        returning.connect(properties=session)
        wait_until(lambda: value(scrape(admin), "culex_messages_dropped_total",
                                 reason="expired") == 1)
        returning.assert_no_message()


def test_api_answers_for_the_whole_broker(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN, sys_interval=0)
    admin = api(broker)
    with Clients(broker) as clients:
        ids = [f"api-{number:02d}" for number in range(12)]
        for client_id in ids:
            client = clients.paho(client_id)
            assert client.subscribe(f"api/{client_id}/#", 1) == [1]
        if broker.workers > 1:  # the clients really are spread over the workers
            assert {owner_of(client_id, broker.workers) for client_id in ids} == {0, 1}
        pages = list(admin.pages("/api/v1/clients", limit=5, prefix="api-"))
        assert [len(page) for page in pages] == [5, 5, 2]
        assert [entry["client_id"] for page in pages for entry in page] == ids
        entry = pages[0][0]
        assert entry["listener"] == f"127.0.0.1:{broker.port}"
        assert entry["protocol"] == "3.1.1" and entry["subscriptions"] == 1
        detail = admin.get("/api/v1/clients/api-03")
        assert detail["subscription_list"] == [
            {"topic_filter": "api/api-03/#", "qos": 1, "shared_group": None}]
        subscriptions = [entry for page in admin.pages("/api/v1/subscriptions", limit=4)
                         for entry in page]
        assert [(entry["client_id"], entry["topic_filter"]) for entry in subscriptions] == [
            (client_id, f"api/{client_id}/#") for client_id in ids]
        matching = admin.get("/api/v1/subscriptions", topic="api/api-07/x")["entries"]
        assert [entry["client_id"] for entry in matching] == ["api-07"]
        # Offline sessions are sessions too.
        keeper = clients.paho("api-offline", clean_session=False)
        keeper.subscribe("kept/#", 1)
        keeper.disconnect()
        wait_until(lambda: admin.get("/api/v1/sessions", connected="false")["entries"])
        offline = admin.get("/api/v1/sessions", connected="false")["entries"]
        assert [(entry["client_id"], entry["persistent"], entry["expiry_interval"])
                for entry in offline] == [("api-offline", True, None)]
        assert len(admin.get("/api/v1/sessions", prefix="api-", limit=1000)["entries"]) == 13
        admin.call("GET", "/api/v1/clients/api-offline", expect=404)
        admin.call("GET", "/api/v1/clients/nobody", expect=404)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, V5], ids=["v311", "v5"])
def test_disconnecting_a_client(broker_factory: BrokerFactory, protocol: int) -> None:
    broker = broker_factory(admin=ADMIN)
    admin = api(broker)
    with Clients(broker) as clients:
        watcher = clients.subscriber("kicked/will", 1)
        # Ids owned by each worker: whichever holds the connection does the disconnecting.
        for client_id in ("kick-a", "kick-d", "kick-h"):
            victim = clients.paho(client_id, protocol=protocol,
                                  will=Will("kicked/will", client_id.encode(), 1))
            answer = admin.call("DELETE", f"/api/v1/clients/{client_id}").json()
            assert answer == {"client_id": client_id, "disconnected": True}
            assert victim.disconnected.wait(5)
            if protocol == V5:
                assert victim.disconnect_reason == 0x98  # Administrative action
            assert watcher.get().payload == client_id.encode()  # the will, as for any close
            wait_until(lambda cid=client_id: admin.call(  # type: ignore[misc]
                "GET", f"/api/v1/clients/{cid}", expect=None).status == 404)
    broker.wait_for_log("client kick-h (127.0.0.1:")
    assert broker.log_text().count("disconnected by the admin API") == 3


def test_retained_publish_and_delete(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN, sys_interval=0)
    admin = api(broker)
    with Clients(broker) as clients:
        publisher = clients.paho("retainer")
        for topic in ("shelf/a", "shelf/b", "shelf/c/deep", "other/x"):
            publisher.publish(topic, f"value of {topic}", 1, retain=True)
        publisher.publish("shelf/binary", bytes(range(250, 256)) * 100, 1, retain=True)
        listed = admin.get("/api/v1/retained", filter="shelf/#")["entries"]
        assert [entry["topic"] for entry in listed] == [
            "shelf/a", "shelf/b", "shelf/binary", "shelf/c/deep"]
        assert listed[0]["payload"] == "value of shelf/a" and not listed[0]["truncated"]
        binary = listed[2]
        assert binary["payload"] is None and binary["truncated"] and binary["payload_size"] == 600
        assert base64.b64decode(binary["payload_base64"]) == (bytes(range(250, 256)) * 100)[:256]
        whole = admin.get("/api/v1/retained", filter="shelf/binary", full="true")["entries"][0]
        assert base64.b64decode(whole["payload_base64"]) == bytes(range(250, 256)) * 100
        # Publishing: text, bytes, properties; what a PUBACK would say.
        watcher = clients.subscriber("from-api/#", 2, protocol=V5)
        sent = admin.call("POST", "/api/v1/publish", body={
            "topic": "from-api/text", "payload": "hello from HTTP", "qos": 2, "retain": True,
            "properties": {"content_type": "text/plain", "user_properties": [["by", "test"]],
                           "correlation_data": base64.b64encode(b"\x00\x01").decode()}}).json()
        assert (sent["reason_code"], sent["payload_size"]) == (0, 15)
        got = watcher.get()
        assert (got.topic, got.payload, got.qos) == ("from-api/text", b"hello from HTTP", 2)
        assert got.properties.ContentType == "text/plain"
        assert got.properties.UserProperty == [("by", "test")]
        assert got.properties.CorrelationData == b"\x00\x01"
        admin.call("POST", "/api/v1/publish", body={
            "topic": "from-api/bytes", "payload_base64": base64.b64encode(b"\xff\xfe").decode()})
        assert watcher.get().payload == b"\xff\xfe"
        nobody = admin.call("POST", "/api/v1/publish", body={"topic": "nobody/listens"}).json()
        assert (nobody["reason_code"], nobody["reason"]) == (16, "No matching subscribers")
        # Deleting by filter: gone from the broker, for a new subscriber too.
        deleted = admin.call("DELETE", "/api/v1/retained", query={"filter": "shelf/#"}).json()
        assert deleted == {"filter": "shelf/#", "deleted": 4}
        assert {entry["topic"] for entry in admin.get("/api/v1/retained", filter="#")[
            "entries"]} == {"other/x", "from-api/text"}
        late = clients.subscriber("shelf/#", 1)
        late.assert_no_message()
        topics = admin.get("/api/v1/topics")["entries"]
        assert {entry["topic"] for entry in topics} >= {"other/x", "from-api/text"}


def test_bad_requests_are_refused_saying_why(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN)
    admin = api(broker)
    for path, query, needle in (
            ("/api/v1/clients", {"limit": "0"}, "limit"),
            ("/api/v1/retained", {}, "filter: required"),
            ("/api/v1/retained", {"filter": "a/#/b"}, "filter"),
            ("/api/v1/sessions", {"connected": "maybe"}, "connected"),
            ("/api/v1/trace", {}, "client_id and topic"),
            ("/api/v1/trace", {"client_id": "x", "seconds": "-1"}, "seconds")):
        error = admin.call("GET", path, query=query, expect=400).json()["error"]
        assert needle in error, error
    for body, needle in (({"payload": "x"}, "topic"), ({"topic": "a/+"}, "topic"),
                         ({"topic": "$SYS/x"}, "the broker's own"),
                         ({"topic": "a", "qos": 3}, "qos"),
                         ({"topic": "a", "payload_base64": "%%%"}, "base64"),
                         ({"topic": "a", "properties": {"topic_alias": 1}}, "topic_alias")):
        error = admin.call("POST", "/api/v1/publish", body=body, expect=400).json()["error"]
        assert needle in error, (body, error)
    error = admin.call("POST", "/api/v1/publish", raw_body=b'{"topic": "a"}',
                       headers={"Content-Type": "text/plain"}, expect=415).json()["error"]
    assert "JSON" in error
    broker.stop()
    assert "Traceback" not in broker.log_text()


def test_a_token_is_required_when_configured(broker_factory: BrokerFactory,
                                            tmp_path: Path) -> None:
    token = "t" * 40
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    broker = broker_factory(admin={**ADMIN, "token_file": str(token_file)})
    base = admin_url(broker)
    for given, message in ((None, "bearer token is required"), ("wrong" * 8, "wrong token")):
        for path in ("/metrics", "/api/v1/clients"):
            answer = AdminClient(base, given).call("GET", path, expect=401)
            assert message in answer.json()["error"]
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    right = AdminClient(base, token)
    assert right.get("/api/v1/clients") == {"entries": [], "next": None}
    assert b"culex_info" in right.call("GET", "/metrics").body
    with urllib.request.urlopen(base + "/", timeout=5) as page:  # the page is no secret
        assert page.status == 200 and b"<html" in page.read()


def test_sighup_rotates_the_token_and_a_bad_file_keeps_it(broker_factory: BrokerFactory,
                                                          tmp_path: Path) -> None:
    """SIGHUP reads `[admin] token_file` again: the new token works and the old one is refused;
    a file that has become too short is refused in the log, and the token in force stays."""
    first, second = "a" * 40, "b" * 40
    token_file = tmp_path / "admin-token"
    token_file.write_text(first + "\n")
    broker = broker_factory(admin={**ADMIN, "token_file": str(token_file)})
    base = admin_url(broker)
    assert AdminClient(base, first).get("/api/v1/clients") == {"entries": [], "next": None}
    token_file.write_text(second + "\n")
    reload(broker, "is now in force")
    assert "wrong token" in AdminClient(base, first).call(
        "GET", "/api/v1/clients", expect=401).json()["error"]
    assert AdminClient(base, second).get("/api/v1/clients") == {"entries": [], "next": None}
    token_file.write_text("short\n")
    assert "at least 16 characters" in reload(broker, "admin token reload refused")
    assert AdminClient(base, second).get("/api/v1/clients") == {"entries": [], "next": None}


def test_without_a_token_other_hosts_and_origins_are_refused(
        broker_factory: BrokerFactory) -> None:
    broker = broker_factory(admin=ADMIN)
    admin = api(broker)
    rebound = admin.call("GET", "/api/v1/clients", headers={"Host": "evil.example:18083"},
                         expect=403).json()["error"]
    assert "evil.example" in rebound
    cross = admin.call("POST", "/api/v1/publish", body={"topic": "a"},
                       headers={"Origin": "http://evil.example"}, expect=403).json()["error"]
    assert "cross-origin" in cross
    admin.call("POST", "/api/v1/publish", body={"topic": "a"},
               headers={"Origin": admin.base})


def one_line_failure(args: list[str], cwd: Path, code: int) -> str:
    result = subprocess.run([sys.executable, "-m", "culex", "serve", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_admin_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    line = one_line_failure(["--port", str(free_port()), "--admin", f"0.0.0.0:{port}"],
                            tmp_path, 2)
    assert f"admin listener 0.0.0.0:{port} is reachable beyond loopback" in line
    assert "token_file" in line
    config = tmp_path / "culex.toml"
    config.write_text(f'[admin]\nhost = "0.0.0.0"\nport = {port}\n')
    line = one_line_failure(["--config", str(config), "--port", str(free_port())], tmp_path, 2)
    assert line.startswith(f"culex: configuration error: {config}: admin.host:")
    assert not (tmp_path / "data").exists()  # refused before anything was bound or opened


def test_a_busy_admin_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Bound with the MQTT listeners, all or none: the MQTT listener (a Unix socket here, so
    that no other test can be listening where this one looks) is let go again."""
    mqtt_socket = tmp_path / "mqtt.sock"
    config = tmp_path / "culex.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(f'[[listeners]]\nunix = "{mqtt_socket}"\n'
                          f'[admin]\nhost = "127.0.0.1"\nport = {port}\n')
        line = one_line_failure(["--config", str(config)], tmp_path, 1)
    assert line.endswith(f"ERROR cannot listen on 127.0.0.1:{port} ([admin], the admin "
                         "API): address already in use"), line
    assert not mqtt_socket.exists()
    assert not (tmp_path / "data").exists()  # the state is never opened after a failed bind
