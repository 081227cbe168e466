"""ACL evaluation tables: per user, anonymous, patterns, deny precedence, $SYS, CVE-2017-7650."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from culex.auth import acl
from culex.auth.acl import Access, AclError, AclRules

R, W = Access.READ, Access.WRITE

ACL = """\
# anonymous clients
topic read public/#
topic write public/anon/inbox

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read shared/+/news

user bob
topic write bob/out
topic read $SYS/broker/clients/#

user admin
topic readwrite #
topic read $SYS/#

user guest
topic read #
topic deny private/#

user John Smith
topic read smith/#

# patterns apply to everyone, wherever they are written
pattern read users/%u/#
pattern write devices/%c/status
pattern deny blocked/%c
"""

RULES = AclRules.parse(ACL, "acl.conf")

# (client id, user name, topic, access, allowed)
TOPIC_TABLE = [
    # anonymous: the rules before the first `user` line, plus %c patterns
    ("c", None, "public/x", R, True),
    ("c", None, "public/x/y", R, True),
    ("c", None, "public/x", W, False),
    ("c", None, "public/anon/inbox", W, True),
    ("c", None, "alice/x", R, False),
    ("c", None, "users/None/x", R, False),
    ("c", None, "users//x", R, False),
    ("dev1", None, "devices/dev1/status", W, True),
    ("dev1", None, "devices/dev2/status", W, False),
    # alice: readwrite her tree except the denied part, read a wildcard filter
    ("c", "alice", "alice/x", W, True),
    ("c", "alice", "alice/x", R, True),
    ("c", "alice", "alice", R, True),
    ("c", "alice", "alice/secret/k", R, False),
    ("c", "alice", "alice/secret/k", W, False),
    ("c", "alice", "alice/secret", R, False),
    ("c", "alice", "alice/secrets", R, True),
    ("c", "alice", "shared/a/news", R, True),
    ("c", "alice", "shared/a/news", W, False),
    ("c", "alice", "shared/a/b/news", R, False),
    ("c", "alice", "public/x", R, False),  # anonymous rules are not for named users
    ("c", "alice", "users/alice/inbox", R, True),
    ("c", "alice", "users/bob/inbox", R, False),
    ("c", "alice", "users/alice/inbox", W, False),
    ("c", "alice", "bob/out", W, False),
    # bob: write-only topic, an explicit $SYS subtree
    ("c", "bob", "bob/out", W, True),
    ("c", "bob", "bob/out", R, False),
    ("c", "bob", "$SYS/broker/clients/connected", R, True),
    ("c", "bob", "$SYS/broker/load", R, False),
    ("c", "bob", "$SYS/broker/clients/connected", W, False),
    # admin: everything, $SYS readable because granted explicitly, never writable
    ("c", "admin", "any/topic", R, True),
    ("c", "admin", "any/topic", W, True),
    ("c", "admin", "$SYS/broker/uptime", R, True),
    ("c", "admin", "$SYS/broker/uptime", W, False),
    ("c", "admin", "$SYS", W, False),
    ("c", "admin", "$other/x", W, False),  # '#' does not match $-topics (MQTT-4.7.2-1)
    # guest: '#' grants everything but $SYS; the deny wins
    ("c", "guest", "x/y", R, True),
    ("c", "guest", "$SYS/broker/uptime", R, False),
    ("c", "guest", "private/a", R, False),
    ("c", "guest", "private", R, False),
    ("c", "guest", "privately", R, True),
    # a user name with a space (the rest of the `user` line)
    ("c", "John Smith", "smith/x", R, True),
    ("c", "John", "smith/x", R, False),
    # a user with no section: patterns only
    ("c", "carol", "users/carol/x", R, True),
    ("c", "carol", "carol/x", R, False),
    # a deny pattern beats admin's '#'
    ("bad", "admin", "blocked/bad", R, False),
    ("bad", "admin", "blocked/bad", W, False),
    ("bad", "admin", "blocked/other", R, True),
    ("good", "admin", "blocked/bad", R, True),
]


@pytest.mark.parametrize(("client_id", "user", "topic", "access", "expected"), TOPIC_TABLE)
def test_topic_table(client_id: str, user: str | None, topic: str, access: Access,
                     expected: bool) -> None:
    assert RULES.allowed(client_id, user, topic, access) is expected
    assert RULES.for_client(client_id, user).allowed(topic, access) is expected


# (user name, requested filter, allowed)
FILTER_TABLE = [
    ("alice", "alice/#", True),
    ("alice", "alice/+", True),
    ("alice", "alice/x/y", True),
    ("alice", "alice", True),
    ("alice", "#", False),
    ("alice", "+/x", False),
    ("alice", "alice/secret/#", False),  # covered by the deny
    ("alice", "alice/secret/x", False),
    ("alice", "shared/+/news", True),
    ("alice", "shared/a/news", True),
    ("alice", "shared/#", False),
    ("alice", "shared/+/+", False),
    ("alice", "shared/+/news/#", False),
    ("guest", "#", True),
    ("guest", "a/+/b", True),
    ("guest", "+/uptime", True),
    ("guest", "$SYS/#", False),
    ("guest", "$SYS/broker/uptime", False),
    ("guest", "private/#", False),
    ("guest", "private/x", False),
    ("admin", "$SYS/#", True),
    ("admin", "#", True),
    ("bob", "$SYS/broker/clients/#", True),
    ("bob", "$SYS/broker/clients/+", True),
    ("bob", "$SYS/#", False),
    ("bob", "$SYS/+/clients/x", False),
    ("bob", "bob/out", False),  # write-only
    (None, "public/#", True),
    (None, "#", False),
]


@pytest.mark.parametrize(("user", "topic_filter", "expected"), FILTER_TABLE)
def test_subscription_table(user: str | None, topic_filter: str, expected: bool) -> None:
    assert RULES.allowed_filter("c", user, topic_filter) is expected


# (ACL filter, requested filter, allowed): a grant must cover everything the request can match.
COVERAGE = [
    ("a/b", "a/b", True),
    ("a/b", "a/#", False),
    ("a/b", "a/+", False),
    ("a/b", "a", False),
    ("a/+", "a/+", True),
    ("a/+", "a/b", True),
    ("a/+", "a/#", False),
    ("a/+", "a", False),
    ("a/+", "a/b/c", False),
    ("a/#", "a", True),
    ("a/#", "a/#", True),
    ("a/#", "a/+/c/#", True),
    ("a/+/#", "a/#", False),
    ("a/+/#", "a/b/#", True),
    ("#", "a/#", True),
    ("#", "+", True),
    ("#", "$SYS/x", False),
    ("+/+", "a/b", True),
    ("+/+", "+/+", True),
    ("+/+", "+/#", False),
    ("+/+", "$SYS/x", False),
    ("$SYS/#", "$SYS/a/b", True),
    ("$SYS/#", "#", False),
    ("a//b", "a//b", True),
    ("a//b", "a/+/b", False),
]


@pytest.mark.parametrize(("granted", "requested", "expected"), COVERAGE)
def test_coverage(granted: str, requested: str, expected: bool) -> None:
    rules = AclRules.parse(f"topic read {granted}\n")
    assert rules.allowed_filter("c", None, requested) is expected


@pytest.mark.parametrize("text", [
    "user u\ntopic deny a/b\ntopic readwrite a/#\n",
    "user u\ntopic readwrite a/#\ntopic deny a/b\n",
    "pattern deny a/b\nuser u\ntopic readwrite a/#\n",
    "user u\ntopic readwrite a/#\nuser v\ntopic read x\npattern deny a/+\n",
])
def test_deny_wins_wherever_it_is_written(text: str) -> None:
    rules = AclRules.parse(text)
    for access in (R, W):
        assert not rules.allowed("c", "u", "a/b", access)
        assert rules.allowed("c", "u", "a/c/d", access)
    assert not rules.allowed_filter("c", "u", "a/b")
    assert rules.allowed_filter("c", "u", "a/#")  # partly denied: filtered at delivery


def test_empty_acl_denies_everything() -> None:
    rules = AclRules.parse("# nothing granted\n\n")
    assert not rules.allowed("c", None, "a", R)
    assert not rules.allowed("c", "u", "a", W)
    assert not rules.allowed_filter("c", "u", "#")


def test_access_word_may_be_omitted_meaning_readwrite() -> None:
    rules = AclRules.parse("topic a/b\n")
    assert rules.allowed("c", None, "a/b", R) and rules.allowed("c", None, "a/b", W)


def test_read_and_write_are_separate() -> None:
    rules = AclRules.parse("topic read r\ntopic write w\ntopic deny d\n")
    assert [rules.allowed("c", None, t, a) for t in ("r", "w", "d") for a in (R, W)] == [
        True, False, False, True, False, False]


def test_filters_with_spaces_and_repeated_user_sections() -> None:
    rules = AclRules.parse("user a\ntopic read my topic/x\nuser b\ntopic read y\n"
                           "user a\ntopic write z\n")
    assert rules.allowed("c", "a", "my topic/x", R)
    assert rules.allowed("c", "a", "z", W)
    assert not rules.allowed("c", "a", "y", R)
    assert rules.allowed("c", "b", "y", R)


def test_crlf_and_indentation() -> None:
    rules = AclRules.parse("  user a\r\n\ttopic read x/#\r\n  # comment\r\n")
    assert rules.allowed("c", "a", "x/1", R)


def test_sys_is_never_writable() -> None:
    rules = AclRules.parse("topic write $SYS/#\ntopic readwrite $SYS\ntopic write #\n")
    assert not rules.allowed("c", None, "$SYS/broker/x", W)
    assert not rules.allowed("c", None, "$SYS", W)
    assert rules.allowed("c", None, "$SYS", R)
    assert rules.allowed("c", None, "ordinary", W)


def test_deny_matches_dollar_topics_without_the_wildcard_exception() -> None:
    # A grant of '#' does not reach $SYS (MQTT-4.7.2-1) but a deny of '#' must.
    rules = AclRules.parse("topic read $SYS/#\ntopic deny #\n")
    assert not rules.allowed("c", None, "$SYS/broker/uptime", R)
    assert not rules.allowed_filter("c", None, "$SYS/#")


PATTERNS = """\
pattern readwrite users/%u/#
pattern read clients/%c/#
pattern write %c/out
pattern read shared/%c-%u/x
user u
topic readwrite blocked/#
pattern deny blocked/%c/x
"""


def test_patterns_substitute_client_id_and_user_name() -> None:
    rules = AclRules.parse(PATTERNS)
    assert rules.allowed("dev1", "alice", "users/alice/t", W)
    assert not rules.allowed("dev1", "alice", "users/bob/t", R)
    assert rules.allowed("dev1", "alice", "clients/dev1/t", R)
    assert not rules.allowed("dev1", "alice", "clients/dev2/t", R)
    assert rules.allowed("dev1", "alice", "dev1/out", W)
    assert rules.allowed("dev1", "alice", "shared/dev1-alice/x", R)
    assert rules.allowed_filter("dev1", "alice", "users/alice/#")
    assert not rules.allowed_filter("dev1", "alice", "users/+/#")
    # anonymous: %u patterns do not apply, %c ones do
    assert rules.allowed("dev1", None, "clients/dev1/t", R)
    assert not rules.allowed("dev1", None, "users/None/t", R)
    assert not rules.allowed("dev1", None, "shared/dev1-None/x", R)


# CVE-2017-7650: values that would turn a pattern into a wider filter.
UNSAFE_VALUES = ["#", "+", "a/#", "x/y", "a+b", "a#", "/", ""]


@pytest.mark.parametrize("value", UNSAFE_VALUES)
def test_user_name_cannot_widen_a_pattern(value: str) -> None:
    rules = AclRules.parse(PATTERNS)
    for topic in ("users/other/t", "users/x/y/t", f"users/{value}/t", "users/a/b/c"):
        assert not rules.allowed("dev1", value, topic, R), topic
        assert not rules.allowed("dev1", value, topic, W), topic
    for topic_filter in ("users/+/#", "users/#", f"users/{value}/#"):
        assert not rules.allowed_filter("dev1", value, topic_filter), topic_filter
    assert not rules.allowed("dev1", value, "shared/dev1-x/x", R)
    # the same client's %c patterns, with a safe client id, still apply
    assert rules.allowed("dev1", value, "clients/dev1/t", R)


@pytest.mark.parametrize("value", UNSAFE_VALUES)
def test_client_id_cannot_widen_a_pattern(value: str) -> None:
    rules = AclRules.parse(PATTERNS)
    for topic in ("clients/other/t", "clients/x/y/t", f"clients/{value}/t"):
        assert not rules.allowed(value, "alice", topic, R), topic
    for topic in ("anything/out", "x/y/out", f"{value}/out"):
        assert not rules.allowed(value, "alice", topic, W), topic
    assert not rules.allowed_filter(value, "alice", "clients/#")
    assert not rules.allowed_filter(value, "alice", "clients/+/#")
    assert rules.allowed(value, "alice", "users/alice/t", R)


@pytest.mark.parametrize("value", ["x/y", "+", "#", "a/#", ""])
def test_deny_pattern_with_unsafe_value_fails_closed(value: str) -> None:
    # An escapable deny would be a bypass: deny everything under the pattern's literal prefix.
    rules = AclRules.parse(PATTERNS)
    assert not rules.allowed(value, "u", "blocked/x/y/x", R)
    assert not rules.allowed(value, "u", "blocked/other/x", W)
    assert not rules.allowed(value, "u", "blocked", R)
    assert not rules.allowed_filter(value, "u", "blocked/#")
    assert rules.allowed(value, "u", "users/u/t", R)  # outside the prefix: unaffected
    # a safe client id is denied only its own topic
    assert not rules.allowed("ok", "u", "blocked/ok/x", R)
    assert rules.allowed("ok", "u", "blocked/other/x", R)


def test_deny_pattern_with_unsafe_value_in_first_level_denies_everything() -> None:
    rules = AclRules.parse("topic readwrite #\ntopic read $SYS/#\npattern deny %c/private\n")
    assert rules.allowed("ok", None, "x/private", R)
    assert not rules.allowed("ok", None, "ok/private", R)
    for topic in ("x/private", "anything", "$SYS/broker/uptime"):
        assert not rules.allowed("+", None, topic, R), topic


def test_client_id_cannot_reach_sys_through_a_pattern() -> None:
    rules = AclRules.parse("pattern read %c/#\npattern read $SYS/clients/%c/#\n")
    assert rules.allowed("dev", None, "dev/a", R)
    assert not rules.allowed("$SYS", None, "$SYS/broker/uptime", R)
    assert not rules.allowed_filter("$SYS", None, "$SYS/#")
    # a pattern that names $SYS itself does grant it
    assert rules.allowed("dev", None, "$SYS/clients/dev/x", R)
    assert not rules.allowed("dev", None, "$SYS/clients/other/x", R)


def test_substitution_is_single_pass() -> None:
    # A client id "%u" must not be substituted again by the user name.
    rules = AclRules.parse("pattern read a/%c/%u\n")
    assert rules.allowed("%u", "bob", "a/%u/bob", R)
    assert not rules.allowed("%u", "bob", "a/bob/bob", R)
    assert rules.allowed("%c", "%c", "a/%c/%c", R)
    assert not rules.allowed("%c", "%c", "a/%c/%u", R)


def test_needs_delivery_check() -> None:
    rules = AclRules.parse("user u\ntopic readwrite a/#\ntopic deny a/secret\ntopic read b/#\n")
    client = rules.for_client("c", "u")
    assert client.needs_delivery_check("a/#")  # the deny overlaps
    assert client.needs_delivery_check("a/+")
    assert client.needs_delivery_check("+/secret")
    assert not client.needs_delivery_check("a/public/#")
    assert not client.needs_delivery_check("a/x")
    assert not client.needs_delivery_check("b/#")
    assert client.needs_delivery_check("c/#")  # not granted at all


def test_deep_topics_match_iteratively() -> None:
    # ACL filters are bounded at 1024 levels like any filter; topics reaching the matcher are
    # not assumed to be. CVE-2019-11779 used a 65,400-level topic: a recursive matcher would
    # overflow the stack at a depth like this one.
    plus = ["+"] * 1024
    rules = AclRules.parse("topic read " + "/".join(plus) + "\n"
                           "topic read " + "/".join([*plus[:-1], "#"]) + "\n"
                           "topic deny " + "/".join([*plus[:-1], "deny"]) + "\n")
    client = rules.for_client("c", None)
    deep = "/".join(["x"] * 65_400)
    exact = "/".join(["x"] * 1024)
    started = time.perf_counter()
    results = [
        client.allowed(deep, R),
        client.allowed(exact, R),
        client.allowed(exact[:-1] + "deny", R),
        client.allowed_filter(deep),
        client.allowed_filter(deep + "/#"),
        client.allowed_filter("/".join(["x"] * 1022) + "/#"),
        client.needs_delivery_check(deep),
        client.needs_delivery_check("/".join(["x"] * 1022) + "/#"),
    ]
    elapsed = time.perf_counter() - started
    assert results == [True, True, False, True, True, False, False, True]
    assert elapsed < 1
    assert not hasattr(acl, "re"), "no regular expressions in the ACL matcher"


MALFORMED = [
    ("foo bar", "unknown keyword 'foo'"),
    ("User alice", "unknown keyword 'User'"),
    ("user", "'user' needs a user name"),
    ("topic", "missing topic filter"),
    ("topic read", "missing topic filter after 'read'"),
    ("topic reed a/b", "unknown access 'reed'"),
    ("topic read a/#/b", "'#' must be a whole last level"),
    ("topic read a/b+", "'+' must be a whole level"),
    ("topic read a/b # trailing comment", "'#' must be a whole last level"),
    ("pattern read a/%c#", "'#' must be a whole last level"),
    ("pattern write", "missing topic filter"),
]


@pytest.mark.parametrize(("bad", "problem"), MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = tmp_path / "acl.conf"
    path.write_text(f"# header\ntopic read ok\n\nuser x\n{bad}\ntopic read fine\n")
    with pytest.raises(AclError) as info:
        AclRules.load(path)
    assert info.value.line == 5
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:5: ")
    assert problem in str(info.value)


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(AclError, match=r"^acl:3: not valid UTF-8$"):
        AclRules.parse(b"topic read a\n\ntopic read \xff\n", "acl")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AclError) as info:
        AclRules.load(tmp_path / "absent.acl")
    assert info.value.line == 0
    assert str(tmp_path / "absent.acl") in str(info.value)


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "acl.conf"
    path.write_bytes(ACL.encode())
    rules = AclRules.load(path)
    for client_id, user, topic, access, expected in TOPIC_TABLE:
        assert rules.allowed(client_id, user, topic, access) is expected
