"""mosquitto.conf bridge sections read into `[[bridges]]`: every mapped key, Mosquitto's
`topic` and `address` syntax, the defaults written out where Culex's differ, several
sections, a password given inline, and the errors, refusals and warnings, each naming the file,
the line and the key. `culex convert-config` and `culex check-config` on such a file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from culex.bridge.settings import BridgeSettings, BridgeTopic
from culex.cli import main
from culex.config import Config, ConfigError, load_config, parse_config
from culex.mosquitto.conf import read_mosquitto_conf
from culex.mosquitto.model import MosquittoConf, MosquittoConfError
from culex.mosquitto.toml import dumps

HEAD = "listener 1884 127.0.0.1\nallow_anonymous true\n"
# A section with every mapped key set to a value other than the default.
FULL = """\
connection cloud
address broker.example.com:8883 backup.example.com
bridge_protocol_version mqttv50
remote_clientid site-17
remote_username site-17
remote_password s3cret with spaces
bridge_cafile {ca}
bridge_certfile {cert}
bridge_keyfile {key}
bridge_tls_version tlsv1.3
keepalive_interval 30
restart_timeout 2 20
try_private false
local_username bridge
cleansession false
local_cleansession false
start_type automatic
round_robin false
notifications false
bridge_attempt_unsubscribe false
bridge_insecure false
bridge_require_ocsp false
bridge_outgoing_retain true
topic sensors/# out 1 "" site17/
topic commands/# IN 2 remote/ ""
topic "" both 0 here/x there/y
topic #
"""


def write(tmp_path: Path, text: str, name: str = "mosquitto.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read(tmp_path: Path, text: str) -> MosquittoConf:
    return read_mosquitto_conf(write(tmp_path, HEAD + text))


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, HEAD + text))


def full(tmp_path: Path) -> str:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("a certificate\n")
    return FULL.format(**{name: str(path) for name, path in files.items()})


def test_every_mapped_key(tmp_path: Path) -> None:
    config = load(tmp_path, full(tmp_path))
    (bridge,) = config.bridges
    assert bridge == BridgeSettings(
        name="cloud", address=("broker.example.com:8883", "backup.example.com:1883"),
        protocol_version="5", client_id="site-17", username="site-17",
        cafile=str(tmp_path / "ca.pem"), certfile=str(tmp_path / "cert.pem"),
        keyfile=str(tmp_path / "key.pem"), tls_version="1.3", keepalive=30,
        reconnect_delay=2.0, reconnect_delay_max=20.0, try_private=False,
        local_username="bridge", max_buffered_messages=1000, max_inflight=20,
        inline_password="s3cret with spaces",
        topics=(BridgeTopic("sensors/#", "out", 1, "", "site17/"),
                BridgeTopic("commands/#", "in", 2, "remote/", ""),
                BridgeTopic("", "both", 0, "here/x", "there/y"),
                BridgeTopic("#", "out", 0)))
    assert bridge.password() == b"s3cret with spaces"
    assert "s3cret" not in repr(bridge)  # never in a log line
    assert config.warnings == ()


def test_mosquittos_defaults_are_written_out(tmp_path: Path) -> None:
    conf = read(tmp_path, "connection edge\naddress 10.0.0.2\nnotifications false\n"
                          "topic a/b\n")
    assert conf.data["bridges"] == [{
        "name": "edge", "address": ["10.0.0.2:1883"], "protocol_version": "3.1.1",
        "reconnect_delay": 5.0, "reconnect_delay_max": 30.0, "max_buffered_messages": 1000,
        "max_inflight": 20, "topics": [{"pattern": "a/b", "direction": "out", "qos": 0}]}]
    assert conf.defaults["bridges[0].protocol_version"].startswith(
        "Mosquitto's default bridge_protocol_version")
    assert "which bounds its bridges too" in conf.defaults["bridges[0].max_buffered_messages"]
    (bridge,) = parse_config(conf.data, "test").bridges
    assert bridge.remote_client_id().endswith(".edge")  # Mosquitto's <hostname>.<name>
    assert bridge.password() is None


def test_global_queue_limits_bound_the_bridges_too(tmp_path: Path) -> None:
    conf = read(tmp_path, "max_queued_messages 5000\nmax_queued_bytes 1000000\n"
                          "max_inflight_messages 0\nconnection edge\naddress h\n"
                          "notifications false\ntopic a/b\n")
    table = conf.data["bridges"][0]
    assert (table["max_buffered_messages"], table["max_buffered_bytes"],
            table["max_inflight"]) == (5000, 1_000_000, 65535)
    assert conf.origins["bridges[0].max_buffered_messages"].line == 3
    # max_queued_bytes 0 means unbounded in Mosquitto: Culex's bridge keeps its own bound
    conf = read(tmp_path, "max_queued_bytes 0\nconnection edge\naddress h\n"
                          "notifications false\ntopic a/b\n")
    assert "max_buffered_bytes" not in conf.data["bridges"][0]


@pytest.mark.parametrize(("line", "topic"), [
    ("topic a/#", {"pattern": "a/#", "direction": "out", "qos": 0}),
    ("topic a/# in", {"pattern": "a/#", "direction": "in", "qos": 0}),
    ("topic a/# Both 2", {"pattern": "a/#", "direction": "both", "qos": 2}),
    ("topic a/# out 1 local/ remote/",
     {"pattern": "a/#", "direction": "out", "qos": 1, "local_prefix": "local/",
      "remote_prefix": "remote/"}),
    ('topic a/# out 1 "" remote/',
     {"pattern": "a/#", "direction": "out", "qos": 1, "remote_prefix": "remote/"}),
    ('topic a/# in 1 local/ ""',
     {"pattern": "a/#", "direction": "in", "qos": 1, "local_prefix": "local/"}),
    ('topic "" in 1 here/t there/t',
     {"pattern": "", "direction": "in", "qos": 1, "local_prefix": "here/t",
      "remote_prefix": "there/t"}),
    ("topic # out 1 # a comment", {"pattern": "#", "direction": "out", "qos": 1}),
    ("topic +/x both", {"pattern": "+/x", "direction": "both", "qos": 0}),
])
def test_topic_lines(tmp_path: Path, line: str, topic: dict[str, object]) -> None:
    conf = read(tmp_path, f"connection edge\naddress h\n{line}\n")
    assert conf.data["bridges"][0]["topics"] == [topic]


def test_addresses(tmp_path: Path) -> None:
    conf = read(tmp_path, "connection edge\naddresses a b:1884 [::1]:1885 fe80::1:1886 "
                          "# comment\ntopic t\n")
    assert conf.data["bridges"][0]["address"] == [
        "a:1883", "b:1884", "[::1]:1885", "[fe80::1]:1886"]
    (bridge,) = parse_config(conf.data, "test").bridges
    assert bridge.endpoints() == [("a", 1883), ("b", 1884), ("::1", 1885), ("fe80::1", 1886)]


def test_keepalive_below_five_is_five_as_in_mosquitto(tmp_path: Path) -> None:
    conf = read(tmp_path, "connection edge\naddress h\nkeepalive_interval 0\ntopic t\n")
    assert conf.data["bridges"][0]["keepalive"] == 5


def test_restart_timeout_with_one_value_is_a_fixed_delay(tmp_path: Path) -> None:
    conf = read(tmp_path, "connection edge\naddress h\nrestart_timeout 7 # wait 9 s\ntopic t\n")
    table = conf.data["bridges"][0]
    assert (table["reconnect_delay"], table["reconnect_delay_max"]) == (7.0, 7.0)


def test_several_connections_and_included_files(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d", "connection included\naddress c\ntopic c/#\n", "b.conf")
    conf = read(tmp_path, "connection first\naddress a\ntopic a/#\n"
                          f"include_dir {tmp_path / 'conf.d'}\n"
                          "topic a2/# in\n"  # still the first section: the include is over
                          "connection second\naddress b\ntopic b/# both 2\n")
    tables = {table["name"]: table for table in conf.data["bridges"]}
    assert list(tables) == ["first", "included", "second"]
    assert [topic["pattern"] for topic in tables["first"]["topics"]] == ["a/#", "a2/#"]
    assert tables["included"]["address"] == ["c:1883"]
    assert tables["second"]["topics"] == [{"pattern": "b/#", "direction": "both", "qos": 2}]
    assert conf.origins["bridges[1].topics[0]"].file == str(tmp_path / "conf.d" / "b.conf")


def test_a_bridge_key_in_an_included_file_needs_its_own_connection(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d", "topic c/#\n", "b.conf")
    with pytest.raises(MosquittoConfError, match=re.escape(
            f"{tmp_path}/conf.d/b.conf:1: topic: a bridge key needs a `connection` line")):
        read(tmp_path, f"connection first\naddress a\ninclude_dir {tmp_path / 'conf.d'}\n")


@pytest.mark.parametrize(("text", "message"), [
    ("topic a/#\n", ":3: topic: a bridge key needs a `connection` line before it"),
    ("connection e\naddress h\ntopic a/# sideways\n", ":5: topic: 'sideways' is not a "
     "direction"),
    ("connection e\naddress h\ntopic a/# out 3\n", ":5: topic: 3 is out of range 0..2"),
    ("connection e\naddress h\ntopic a/# out one\n", ":5: topic: 'one' is not a whole"),
    ("connection e\naddress h\ntopic a/# out 1 l/ r/ extra\n", ":5: topic: unexpected text "
     "after the remote prefix: 'extra'"),
    ('connection e\naddress h\ntopic "" out 1 l/\n', ":5: topic: pattern: empty, which needs "
     "both local_prefix and remote_prefix"),
    ("connection e\naddress h\ntopic a/# out 1 l/+/ r/\n", ":5: topic: local_prefix: 'l/+/' "
     "may not hold wildcards"),
    ("connection e\naddress h\ntopic a/#/b\n", ":5: topic: pattern: the local filter "
     "'a/#/b' is invalid"),
    ("connection e\naddress h:0\ntopic t\n", ":4: address: 'h:0' is not host[:port]"),
    ("connection e\naddress h:http\ntopic t\n", ":4: address: 'h:http' is not host[:port]"),
    ("connection e\naddress h\naddress i\ntopic t\n", ":5: address: one address line per "
     "bridge (first at"),
    ("connection e\naddress # no address\ntopic t\n", ":4: address: empty value"),
    ("connection e\naddress h\ntopic t\nconnection e\n", ":6: connection: a second bridge "
     "named 'e' (first at"),
    ("connection e\naddress h\nkeepalive_interval 70000\ntopic t\n", ":5: "
     "keepalive_interval: 70000 is more than 65535"),
    ("connection e\naddress h\nrestart_timeout 10 5\ntopic t\n", ":5: restart_timeout: the "
     "cap 5 is lower than the base 10"),
    ("connection e\naddress h\nrestart_timeout 1 2 3\ntopic t\n", ":5: restart_timeout: "
     "unexpected text after the cap: '3'"),
    ("connection e\naddress h\nrestart_timeout # none\ntopic t\n", ":5: restart_timeout: "
     "empty value"),
    ("connection e\naddress h\nstart_type manual\ntopic t\n", ":5: start_type: manual is not "
     "a start type"),
    ("connection e\naddress h\nbridge_protocol_version mqttv4\ntopic t\n", ":5: "
     "bridge_protocol_version: 'mqttv4' is not one of mqttv31, mqttv311, mqttv50"),
    ("connection e\naddress h\nremote_clientid a\nclientid b\ntopic t\n", ":6: clientid: "
     "given twice for one bridge (first at"),
    ("connection e\naddress h\nremote_password p\npassword q\ntopic t\n", ":6: password: "
     "given twice for one bridge"),
    ("connection e\naddress h\nremote_password p\ntopic t\n", ":5: remote_password: MQTT "
     "3.1.1 sends a password only with a user name"),
    ("connection e\ntopic t\n", ":3: connection: the bridge e has no `address` line"),
    ("connection e\naddress h\n", ":3: connection: the bridge e has no `topic` line"),
    ("connection e\naddress h\ntry_private maybe\ntopic t\n", ":5: try_private: 'maybe' is "
     "not true or false"),
    ("connection e\naddress h\ntopic\n", ":5: topic: empty value"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MosquittoConfError, match=re.escape(f"{tmp_path}/mosquitto.conf{message}")):
        read(tmp_path, text)


@pytest.mark.parametrize(("line", "reason"), [
    ("bridge_protocol_version mqttv31", "Culex's bridge speaks MQTT 3.1.1 (mqttv311) and 5"),
    ("cleansession true", "keeps its session on the remote"),
    ("local_cleansession true", "keeps its session here"),
    ("start_type lazy", "connects at start-up"),
    ("start_type once", "connects again whenever its connection ends"),
    ("round_robin true", "goes back to the first one"),
    ("bridge_insecure true", "always checks that the remote's certificate"),
    ("bridge_require_ocsp true", "OCSP is not supported"),
    ("bridge_outgoing_retain false", "keeps the RETAIN flag"),
    ("bridge_tls_version tlsv1.1", "TLS 1.2 or later"),
    ("bridge_capath /etc/ssl/certs", "concatenate the certificates"),
    ("bridge_psk 0123abcd", "TLS-PSK is not supported"),
    ("bridge_identity edge", "TLS-PSK is not supported"),
    ("bridge_alpn mqtt", "ALPN on bridges is not supported"),
    ("bridge_bind_address 10.0.0.1", "binding a bridge to a local address"),
    ("bridge_certfile /c.pem", "not supported without bridge_cafile: Mosquitto then connects "
     "without TLS"),
])
def test_refusals(tmp_path: Path, line: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"connection e\naddress h\n{line}\ntopic t\nnotifications false\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/mosquitto.conf:5: {line.split(maxsplit=1)[0]} "), message
    assert reason in message


def test_a_name_culex_cannot_use_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"{tmp_path}/mosquitto.conf:3: connection edge/1: not supported: a Culex bridge's "
            "name is 1-64 letters")):
        load(tmp_path, "connection edge/1\naddress h\ntopic t\nnotifications false\n")


@pytest.mark.parametrize(("lines", "warned"), [
    ("", "connection e: accepted without effect: Culex's bridges publish no "
     "$SYS/broker/connection/<client id>/state notifications"),
    ("notifications true\n", "notifications true: accepted without effect: Culex's bridges"),
    ("notifications false\nnotification_topic state/e\n", "notification_topic state/e: "
     "accepted without effect: Culex publishes no connection notifications"),
    ("notifications false\nnotifications_local_only true\n", "notifications_local_only"),
    ("notifications false\nlocal_clientid local.e\n", "the session $bridge/<name>"),
    ("notifications false\nlocal_password pw\n", "is not authenticated"),
    ("notifications false\nbridge_max_packet_size 1000\n", "[limits] max_packet_size"),
    ("notifications false\nidle_timeout 60\n", "applies to lazy bridges"),
    ("notifications false\nthreshold 10\n", "applies to lazy bridges"),
    ("notifications false\nbridge_attempt_unsubscribe true\n", "never unsubscribes"),
])
def test_warnings(tmp_path: Path, lines: str, warned: str) -> None:
    config = load(tmp_path, f"connection e\naddress h\ntopic t\n{lines}")
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith(f"{tmp_path}/mosquitto.conf:")
    assert warned in config.warnings[0]
    assert len(config.bridges) == 1


def test_nothing_to_warn_about(tmp_path: Path) -> None:
    config = load(tmp_path, "connection e\naddress h\ntopic t\nnotifications false\n"
                            "bridge_attempt_unsubscribe false\n")
    assert config.warnings == ()


def test_convert_config_writes_the_bridges(tmp_path: Path) -> None:
    text = full(tmp_path) + "\nconnection second\naddress 10.0.0.2\ntopic a/b in\n"
    conf = read(tmp_path, text)
    converted = dumps(conf, "mosquitto.conf")
    assert tomllib.loads(converted) == conf.data
    assert "s3cret" not in converted
    assert re.search(r"^# .*mosquitto.conf:8: remote_password: culex.toml reads a bridge's "
                     r"password from a file", converted, re.MULTILINE)
    assert '# password_file = "/etc/culex/cloud.password"' in converted
    assert re.search(r'^  \{ pattern = "sensors/#", direction = "out", qos = 1, '
                     r'remote_prefix = "site17/" \},  # .*mosquitto.conf:26: topic$',
                     converted, re.MULTILINE)
    assert re.search(r'^protocol_version = "3.1.1"  # Mosquitto\'s default', converted,
                     re.MULTILINE)
    # The converted file loads as culex.toml, to the same bridges but for the password.
    from_toml = parse_config(tomllib.loads(converted), "culex.toml").bridges
    assert [bridge.name for bridge in from_toml] == ["cloud", "second"]
    assert from_toml[0].password() is None
    assert load(tmp_path, text).bridges == (
        BridgeSettings(**{**_fields(from_toml[0]), "inline_password": "s3cret with spaces"}),
        from_toml[1])


def _fields(bridge: BridgeSettings) -> dict[str, object]:
    return {name: getattr(bridge, name) for name in BridgeSettings.__dataclass_fields__}


def test_check_config_counts_the_bridges(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # (check-config loads TLS files, so this one has none)
    section = "".join(line for line in full(tmp_path).splitlines(keepends=True)
                      if not line.startswith(("bridge_cafile", "bridge_certfile",
                                              "bridge_keyfile")))
    path = write(tmp_path, HEAD + section + "connection b\naddress h\ntopic t\n")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith(", 2 bridge(s))")
    assert f"{path}:27: connection b: accepted without effect" in err
    assert main(["convert-config", str(path)]) == 0
    assert capsys.readouterr().out.count("[[bridges]]") == 2


def test_check_config_names_a_missing_bridge_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEAD + "connection e\naddress h:8883\nbridge_cafile /nonexistent\n"
                                  "topic t\nnotifications false\n")
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"culex: {path}:3: connection: bridges[0].cafile: /nonexistent: no such file")


def test_culex_toml_cannot_hold_a_password() -> None:
    table = {"name": "e", "address": "h:1883", "topics": [{"pattern": "t"}],
             "inline_password": "pw"}
    with pytest.raises(ConfigError, match=r"bridges\[0\].inline_password: unknown key"):
        parse_config({"bridges": [table]}, "culex.toml")
