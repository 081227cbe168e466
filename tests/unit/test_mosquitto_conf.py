"""mosquitto.conf read into culex.toml's shape: Mosquitto 2.0's rules (default listener,
local-only mode, include_dir order, per_listener_settings), every key's fate, and errors,
refusals and warnings that name the file, the line and the key. The fixtures in
tests/fixtures/mosquitto are the examples of mosquitto.conf(5), of Mosquitto's documentation,
of its example files and of Debian's default configuration."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from culex.config import Config, ConfigError, Listener, load_config, parse_config
from culex.mosquitto.bridges import BRIDGE_HANDLERS
from culex.mosquitto.conf import _include_order, read_mosquitto_conf
from culex.mosquitto.handlers import HANDLERS
from culex.mosquitto.keys import CATALOGUE, Fate
from culex.mosquitto.model import MosquittoConf, MosquittoConfError
from culex.mosquitto.toml import dumps

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "mosquitto"


def read(tmp_path: Path, text: str, name: str = "mosquitto.conf") -> MosquittoConf:
    path = tmp_path / name
    path.write_text(text)
    return read_mosquitto_conf(path)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "mosquitto.conf"
    path.write_text(text)
    return load_config(path)


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mosquitto.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# --- listeners and Mosquitto 2's defaults ---


def test_no_listener_is_local_only_with_anonymous_clients(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing\n")
    assert [(lst.host, lst.port) for lst in config.listeners] == [("127.0.0.1", 1883),
                                                                   ("::1", 1883)]
    assert config.auth.allow_anonymous is True
    assert config.storage.durability == "none"  # Mosquitto's persistence false


def test_listener_without_address_is_every_interface_and_anonymous_is_refused(
        tmp_path: Path) -> None:
    conf = read(tmp_path, "listener 1884\n")
    assert conf.data["listeners"] == [{"host": "0.0.0.0", "port": 1884},
                                      {"host": "::", "port": 1884}]
    assert conf.data["auth"] == {"allow_anonymous": False}
    assert "listeners[1].host" in conf.defaults


@pytest.mark.parametrize(("domain", "hosts"), [("ipv4", ["0.0.0.0"]), ("ipv6", ["::"])])
def test_socket_domain(tmp_path: Path, domain: str, hosts: list[str]) -> None:
    conf = read(tmp_path, f"listener 1884\nsocket_domain {domain}\n")
    assert [table["host"] for table in conf.data["listeners"]] == hosts


def test_socket_domain_against_the_address(tmp_path: Path) -> None:
    conf = read(tmp_path, "listener 1884 localhost\nsocket_domain ipv6\n")
    assert conf.data["listeners"] == [{"host": "::1", "port": 1884}]
    with pytest.raises(MosquittoConfError, match=r"mosquitto.conf:2: socket_domain: ipv6 does "
                       r"not match the listener's address 127.0.0.1"):
        read(tmp_path, "listener 1884 127.0.0.1\nsocket_domain ipv6\n")
    assert "mosquitto.conf:2: socket_domain ipv4: with the host name 'broker.lan'" in refusal(
        tmp_path, "listener 1884 broker.lan\nsocket_domain ipv4\nallow_anonymous true\n")


def test_port_and_bind_address_make_the_default_listener(tmp_path: Path) -> None:
    config = load(tmp_path, "port 1885\nbind_address 127.0.0.1\nallow_anonymous true\n"
                            "listener 1886 127.0.0.1\n")
    # Mosquitto opens the default listener after the explicit ones.
    assert [(lst.host, lst.port) for lst in config.listeners] == [("127.0.0.1", 1886),
                                                                   ("127.0.0.1", 1885)]


def test_tls_keys_before_any_listener_open_the_default_one(tmp_path: Path) -> None:
    conf = read(tmp_path, "certfile /c.pem\nkeyfile /k.pem\nbind_address 127.0.0.1\n"
                          "listener 8883 127.0.0.1\ncertfile /d.pem\ntls_version tlsv1.3\n")
    assert conf.data["listeners"] == [
        {"host": "127.0.0.1", "port": 8883, "certfile": "/d.pem", "min_tls_version": "1.3"},
        {"host": "127.0.0.1", "port": 1883, "certfile": "/c.pem", "keyfile": "/k.pem"}]


def test_default_listener_keys_in_local_only_mode_are_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, "certfile /c.pem\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:1: certfile: applies to the default "
                              "listener")
    assert "local-only" in message or "localhost only" in message


def test_default_listener_key_that_does_not_open_it_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, "tls_version tlsv1.2\nlistener 1884 127.0.0.1\n"
                                "allow_anonymous true\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:1: tls_version: applies to the "
                              "default listener, which is not opened")


def test_unix_listener_and_websockets_map_to_the_listener_keys(tmp_path: Path) -> None:
    conf = read(tmp_path, "listener 0 /run/culex.sock\nlistener 8080 127.0.0.1\n"
                          "protocol websockets\nmax_connections 0\nlistener 1884 127.0.0.1\n"
                          "protocol mqtt\nmax_connections 50\n")
    assert conf.data["listeners"] == [
        {"unix": "/run/culex.sock"},
        {"host": "127.0.0.1", "port": 8080, "protocol": "websocket", "max_connections": -1},
        {"host": "127.0.0.1", "port": 1884, "max_connections": 50}]
    assert str(conf.origins["listeners[1].protocol"]) == f"{tmp_path}/mosquitto.conf:3: protocol"


def test_listener_errors(tmp_path: Path) -> None:
    with pytest.raises(MosquittoConfError, match="a listener with port 0 must give a Unix"):
        read(tmp_path, "listener 0\n")
    with pytest.raises(MosquittoConfError, match=r":1: listener: 70000 is out of range"):
        read(tmp_path, "listener 70000\n")
    assert "written `listener 0 PATH`" in refusal(tmp_path, "listener 1883 /tmp/sock\n")


# --- authentication ---


def test_per_listener_settings_with_the_same_settings_everywhere(tmp_path: Path) -> None:
    conf = read(tmp_path, "per_listener_settings true\nlistener 1884 127.0.0.1\n"
                          "password_file /p\nallow_anonymous false\nlistener 1885 127.0.0.1\n"
                          "password_file /p\n")
    assert conf.data["auth"] == {"password_file": "/p", "allow_anonymous": False}
    assert not conf.refusals


def test_per_listener_settings_that_differ_are_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, "per_listener_settings true\nlistener 1884 127.0.0.1\n"
                                "allow_anonymous true\nlistener 1885 127.0.0.1\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:3: allow_anonymous true: differs "
                              "between listeners")


def test_per_listener_settings_must_come_first(tmp_path: Path) -> None:
    with pytest.raises(MosquittoConfError, match=r":2: per_listener_settings: must come before "
                       r"any other security setting \(first at .*:1\)"):
        read(tmp_path, "allow_anonymous true\nper_listener_settings true\n")


def test_allow_anonymous_false_in_local_only_mode_is_refused(tmp_path: Path) -> None:
    # Mosquitto 2 lets anonymous localhost clients in anyway (checked against 2.0.11).
    assert "has no effect in Mosquitto's local-only mode" in refusal(
        tmp_path, "allow_anonymous false\n")


# --- values: every one through culex.toml's checks, with its line ---


def test_limits_map(tmp_path: Path) -> None:
    config = load(tmp_path, "listener 1884 127.0.0.1\nallow_anonymous true\n"
                            "max_inflight_messages 0\nmax_queued_messages 5\n"
                            "max_queued_bytes 0\nmax_packet_size 2048\nmax_keepalive 0\n"
                            "max_qos 1\nmax_topic_alias 3\nsys_interval 0\n"
                            "retain_available true\nqueue_qos0_messages false\n")
    limits = config.limits
    assert (limits.max_inflight_messages, limits.max_queued_messages, limits.max_queued_bytes,
            limits.max_packet_size, limits.max_keepalive, limits.max_qos,
            limits.max_topic_alias) == (65535, 5, 0, 2048, 65535, 1, 3)
    assert config.sys_interval == 0


def test_a_value_culex_refuses_names_its_line(tmp_path: Path, ) -> None:
    message = refusal(tmp_path, "listener 1884 127.0.0.1\nallow_anonymous true\n\n"
                                "password_file /nonexistent/passwd\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:4: password_file: auth.password_file: "
                              "/nonexistent/passwd: no such file")


def test_a_listener_problem_names_the_listener_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, "allow_anonymous true\nlistener 8883 127.0.0.1\n"
                                "keyfile /k.pem\n")
    assert message.startswith(f"{tmp_path}/mosquitto.conf:2: listener: listeners[0].keyfile: "
                              "set without certfile")


@pytest.mark.parametrize(("line", "message"), [
    ("max_packet_size 19", ":1: max_packet_size: 19 is out of range 20..268435460"),
    ("max_keepalive ten", ":1: max_keepalive: 'ten' is not a whole number"),
    ("retain_available yes", ":1: retain_available: 'yes' is not true or false"),
    ("max_qos 3", ":1: max_qos: 3 is out of range 0..2"),
    ("sys_interval 10 20", ":1: sys_interval: unexpected text after the value: '20'"),
    ("frobnicate 1", ":1: frobnicate: unknown key"),
    ("password_file", ":1: password_file: empty value"),
    ("log_type chatty", ":1: log_type: 'chatty' is not one of"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(MosquittoConfError, match=re.escape(message)):
        read(tmp_path, line + "\n")


def test_trailing_comment_after_a_word_value(tmp_path: Path) -> None:
    assert read(tmp_path, "max_keepalive 60 # a minute\n").data["limits"] == {
        "max_keepalive": 60}


def test_string_values_run_to_the_end_of_the_line(tmp_path: Path) -> None:
    conf = read(tmp_path, "listener 1884 127.0.0.1\nacl_file   /etc/my acl # not a comment\n")
    assert conf.data["auth"]["acl_file"] == "/etc/my acl # not a comment"


def test_string_given_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MosquittoConfError, match=r":2: acl_file: given twice \(first at"):
        read(tmp_path, "acl_file /a\nacl_file /b\n")


@pytest.mark.parametrize(("line", "reason"), [
    ("max_queued_messages 0", "Culex bounds every queue"),
    ("retain_available false", "Culex always supports retained messages"),
    ("queue_qos0_messages true", "does not queue QoS 0"),
    ("allow_zero_length_clientid false", "Culex assigns an id"),
    ("tls_version tlsv1.1", "TLS 1.2 or later"),
    ("capath /etc/ssl/certs", "concatenate the certificates"),
    ("max_inflight_bytes 1000", "by count"),
    ("plugin /usr/lib/mosquitto_go_auth.so", "Culex loads no plugins"),
    ("auth_plugin /usr/lib/auth-plug.so", "Culex loads no plugins"),
    ("log_dest syslog", "Culex logs to standard error"),
    ("log_type none", "Culex always logs errors"),
])
def test_refusals(tmp_path: Path, line: str, reason: str) -> None:
    message = refusal(tmp_path, f"listener 1884 127.0.0.1\nallow_anonymous true\n{line}\n")
    key = line.split(maxsplit=1)[0]
    assert message.startswith(f"{tmp_path}/mosquitto.conf:3: {key} ")
    assert reason in message


def test_warnings_once_per_key_with_the_first_line(tmp_path: Path) -> None:
    config = load(tmp_path, "listener 1884 127.0.0.1\nallow_anonymous true\n"
                            "autosave_interval 60\nset_tcp_nodelay true\nautosave_interval 90\n"
                            "log_type subscribe\nlog_type subscribe\nlog_dest stdout\n")
    assert [warning.split(": accepted")[0] for warning in config.warnings] == [
        f"{tmp_path}/mosquitto.conf:3: autosave_interval 60",
        f"{tmp_path}/mosquitto.conf:4: set_tcp_nodelay true",
        f"{tmp_path}/mosquitto.conf:6: log_type subscribe",
        f"{tmp_path}/mosquitto.conf:8: log_dest stdout"]
    assert "Culex commits each message before it acknowledges it" in config.warnings[0]


def test_log_dest_file_is_the_log_file(tmp_path: Path) -> None:
    config = load(tmp_path, "listener 1884 127.0.0.1\nallow_anonymous true\n"
                            "log_dest stderr\nlog_dest file  /var/log/my broker.log\n")
    assert config.logging.file == "/var/log/my broker.log"
    assert config.warnings == (f"{tmp_path}/mosquitto.conf:3: log_dest stderr: accepted "
                               "without effect: Culex logs to one destination: the file "
                               "/var/log/my broker.log",)
    with pytest.raises(MosquittoConfError, match=r":2: log_dest: duplicate log_dest file "
                                                 r"\(first at .*:1\)"):
        read(tmp_path, "log_dest file /a.log\nlog_dest file /b.log\n")
    with pytest.raises(MosquittoConfError, match=r":1: log_dest: empty log_dest file value"):
        read(tmp_path, "log_dest file\n")


def test_the_dynamic_security_plugin_is_dynamic_security(tmp_path: Path) -> None:
    (tmp_path / "dynsec.json").write_text("{}")
    config = load(tmp_path, "listener 1884 127.0.0.1\n"
                            "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
                            f"plugin_opt_config_file {tmp_path}/dynsec.json\n"
                            "plugin_opt_verbose true\n")
    assert config.auth.dynamic_security == f"{tmp_path}/dynsec.json"
    assert config.auth.allow_anonymous is False
    assert config.warnings == (f"{tmp_path}/mosquitto.conf:4: plugin_opt_verbose true: "
                               "accepted without effect: the dynamic-security plugin has no "
                               "such option (Mosquitto ignores it too)",)
    # The older names, as Mosquitto 2.0 still reads them.
    conf = read(tmp_path, "auth_plugin /opt/mosquitto_dynamic_security.so\n"
                          "auth_opt_config_file /etc/dynsec.json\n")
    assert conf.data["auth"]["dynamic_security"] == "/etc/dynsec.json"
    conf = read(tmp_path, "listener 1884\nplugin /opt/mosquitto_dynamic_security.so\n")
    assert [str(note) for note in conf.warnings] == [
        f"{tmp_path}/mosquitto.conf:2: plugin: accepted without effect: without "
        "plugin_opt_config_file Mosquitto does not activate the dynamic-security plugin either"]
    with pytest.raises(MosquittoConfError, match=r":1: plugin_opt_config_file: a plugin option "
                                                 r"must come after a `plugin` line"):
        read(tmp_path, "plugin_opt_config_file /etc/dynsec.json\n")
    with pytest.raises(MosquittoConfError, match=r":2: plugin: the dynamic-security plugin is "
                                                 r"loaded twice \(first at .*:1\)"):
        read(tmp_path, "plugin /a/mosquitto_dynamic_security.so\n"
                       "plugin /b/mosquitto_dynamic_security.so\n")


def test_dynamic_security_goes_with_no_password_or_acl_file(tmp_path: Path) -> None:
    (tmp_path / "dynsec.json").write_text("{}")
    (tmp_path / "passwd").write_text("")
    message = refusal(tmp_path, "listener 1884 127.0.0.1\n"
                                "plugin /usr/lib/mosquitto_dynamic_security.so\n"
                                f"plugin_opt_config_file {tmp_path}/dynsec.json\n"
                                f"password_file {tmp_path}/passwd\n")
    assert message.endswith("auth.dynamic_security: cannot be combined with password_file or "
                            "acl_file: its file holds the clients, their passwords and their "
                            "access (create the users there with `mosquitto_ctrl dynsec "
                            "createClient`)")


def test_message_size_limit_is_a_limit(tmp_path: Path) -> None:
    config = load(tmp_path, "listener 1884 127.0.0.1\nallow_anonymous true\n"
                            "message_size_limit 1024\n")
    assert config.limits.message_size_limit == 1024
    with pytest.raises(MosquittoConfError, match=r":1: message_size_limit: 268435456 is out "
                                                 r"of range 0..268435455"):
        read(tmp_path, "message_size_limit 268435456\n")


def test_persistence_maps_to_the_durable_store(tmp_path: Path) -> None:
    conf = read(tmp_path, "persistence true\npersistence_location /var/lib/mosquitto/\n")
    assert conf.data["storage"] == {"durability": "sync",
                                    "path": "/var/lib/mosquitto/culex.db"}
    conf = read(tmp_path, "persistence true\npersistence_file state.db\n")
    assert conf.data["storage"] == {"durability": "sync", "path": "state.db"}
    assert read(tmp_path, "persistence false\n").data["storage"] == {"durability": "none"}


def test_log_type_gives_the_most_verbose_level(tmp_path: Path) -> None:
    assert read(tmp_path, "log_type error\nlog_type warning\n").data["logging"] == {
        "level": "warning"}
    assert read(tmp_path, "log_type all\n").data["logging"] == {"level": "debug"}


# --- include_dir ---


def test_include_order_is_mosquittos() -> None:
    names = ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf", "00.conf"]
    assert sorted(names, key=_include_order) == ["00.conf", "01.conf", "A.conf", "a.conf",
                                                 "B.conf", "b.conf"]


def fixture_copy(tmp_path: Path, name: str, **replace: str) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    main = target / "main.conf"
    text = main.read_text()
    for placeholder, directory in replace.items():
        text = text.replace(placeholder, str(target / directory))
    main.write_text(text)
    return main


def test_manpage_include_dir_load_order(tmp_path: Path) -> None:
    config = load_config(fixture_copy(tmp_path, "include_order", INCLUDE="conf.d"))
    assert config.sys_interval == 1  # b.conf is read last
    assert config.limits.max_keepalive == 200  # B.conf after a.conf (not ASCII order)


def test_manpage_multiple_include_dir(tmp_path: Path) -> None:
    config = load_config(fixture_copy(tmp_path, "include_multiple", ONE="one.d", TWO="two.d"))
    assert config.limits.max_keepalive == 40  # two.d/D.conf is read last


def test_included_files_start_with_the_default_listener(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "tls.conf").write_text("certfile /c.pem\n")
    conf = read(tmp_path, f"listener 1884 127.0.0.1\ninclude_dir {tmp_path / 'd'}\n")
    # As in Mosquitto, the included certfile configures (and opens) the default listener.
    assert conf.data["listeners"][-2:] == [{"host": host, "port": 1883, "certfile": "/c.pem"}
                                           for host in ("0.0.0.0", "::")]


# --- the documentation's examples as fixtures ---


def test_fixture_bridge_example_refuses_its_clean_session() -> None:
    conf = read_mosquitto_conf(FIXTURES / "bridge-remapping.conf")
    assert [(note.where.line, note.where.key) for note in conf.refusals] == [
        (4, "cleansession")]
    assert conf.data["bridges"][0]["topics"] == [
        {"pattern": "clients/total", "direction": "in", "qos": 0,
         "local_prefix": "test/mosquitto/org/", "remote_prefix": "$SYS/broker/"}]
    with pytest.raises(ConfigError, match=r"bridge-remapping.conf:4: cleansession true: not "
                       r"supported: Culex's bridge keeps its session on the remote"):
        load_config(FIXTURES / "bridge-remapping.conf")


def test_fixture_manpage_snippets() -> None:
    conf = read_mosquitto_conf(FIXTURES / "manpage-snippets.conf")
    assert [note.where.key for note in conf.refusals] == ["persistent_client_expiration"]
    assert [note.where.key for note in conf.warnings] == ["log_timestamp_format"]
    assert conf.data["listeners"][-1] == {"host": "localhost", "port": 1883}
    assert conf.data["logging"] == {"file": "/var/log/mosquitto.log"}


def test_fixture_authentication_methods_examples() -> None:
    conf = read_mosquitto_conf(FIXTURES / "auth-password-file.conf")
    assert conf.data["auth"] == {"password_file": "/etc/mosquitto/password_file",
                                 "allow_anonymous": False}
    conf = read_mosquitto_conf(FIXTURES / "auth-anonymous.conf")
    assert conf.data["auth"] == {"allow_anonymous": True}
    parse_config(conf.data, "auth-anonymous.conf")
    conf = read_mosquitto_conf(FIXTURES / "auth-plugin.conf")
    assert (conf.refusals, conf.warnings) == ([], [])
    assert conf.data["auth"] == {"dynamic_security": "/var/lib/mosquitto/dynamic-security.json",
                                 "allow_anonymous": False}


def test_fixture_mosquittos_commented_example_is_local_only() -> None:
    config = load_config(FIXTURES / "example-mosquitto.conf")
    assert config.listeners == (Listener("127.0.0.1", 1883), Listener("::1", 1883))
    assert config.auth.allow_anonymous is True


def test_fixture_debians_default_configuration(tmp_path: Path) -> None:
    text = (FIXTURES / "debian-mosquitto.conf").read_text()
    (tmp_path / "conf.d").mkdir()
    conf = read(tmp_path, text.replace("/etc/mosquitto/conf.d", str(tmp_path / "conf.d")))
    assert [note.where.key for note in conf.warnings] == ["pid_file"]
    assert conf.refusals == []
    assert conf.data["logging"] == {"file": "/var/log/mosquitto/mosquitto.log"}
    assert conf.data["storage"] == {"durability": "sync",
                                    "path": "/var/lib/mosquitto/culex.db"}


def test_fixture_example_acl_and_password_files_load() -> None:
    from culex.auth.acl import AclRules  # noqa: PLC0415
    from culex.auth.passwords import PasswordFile  # noqa: PLC0415
    assert PasswordFile.load(FIXTURES / "pwfile.example").users() == [
        "roger", "sub_client", "pub_client"]
    AclRules.load(FIXTURES / "aclfile.example")


# --- convert-config's TOML ---


def test_converted_toml_reads_back_to_the_same_values(tmp_path: Path) -> None:
    conf = read(tmp_path, "listener 1884\ncertfile /c.pem\nkeyfile /k.pem\n"
                          "allow_anonymous false\npassword_file /p\nmax_keepalive 60\n"
                          "persistence true\nautosave_interval 60\nmessage_size_limit 5\n"
                          "log_type debug\nsys_interval 5\nplugin /usr/lib/other.so\n")
    text = dumps(conf, "mosquitto.conf")
    assert tomllib.loads(text) == conf.data
    assert f"{tmp_path}/mosquitto.conf:2: certfile" in text
    comments = [line for line in text.splitlines() if line.startswith("# /")]
    assert len(comments) == 2
    assert "autosave_interval 60: accepted without effect" in comments[0]
    assert "plugin /usr/lib/other.so: not supported" in comments[1]
    assert "message_size_limit = 5" in text


# --- the catalogue ---


def test_every_mapped_key_has_a_handler() -> None:
    mapped = {name for name, key in CATALOGUE.items() if key.fate is Fate.MAPPED}
    assert mapped - {"listener", "include_dir"} == set(HANDLERS) | set(BRIDGE_HANDLERS)
    assert {name for name, key in CATALOGUE.items() if key.bridge} >= set(BRIDGE_HANDLERS)


def test_readme_table_lists_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Coming from Mosquitto", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)`", section, re.MULTILINE))
    listed |= {name for row in re.findall(r"^\| ([^|]*bridge[^|]*) \|", section, re.MULTILINE)
               for name in re.findall(r"`([^`]+)`", row)}
    assert listed == set(CATALOGUE)
