"""Topic names and filters (MQTT 3.1.1 §4.7): validity, matching, and the `$` rule."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from culex.protocol.errors import MalformedPacket, MQTTError, ProtocolError
from culex.protocol.topics import (
    DEFAULT_MAX_TOPIC_LEVELS,
    check_topic_name,
    filter_problem,
    is_wildcard,
    topic_matches,
)

VALID_FILTERS = [
    "#", "+", "+/+/#", "/", "a", "a/b", "a/+", "a/#", "+/b", "/#", "/+", "+/", "//", "a//b",
    "sport/tennis/player1/#", "sport/+/player1", "$SYS/#", "$SYS/+", " ", "a b/c d", "ü/日本/😀",
    "+/+", "+/#", "a/+/+/#", "$", "$share/g/a",
]
INVALID_FILTERS = [
    "", "a/#/b", "a#", "#a", "a/b+", "+a", "a/b#", "##", "++", "#/", "#/a", "a/#/", "a/+b/c",
    "sport/tennis#", "sport+", "+#", "#+", "a/b/c#/d",
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_filters(topic_filter: str) -> None:
    assert filter_problem(topic_filter) is None


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
def test_invalid_filters(topic_filter: str) -> None:
    problem = filter_problem(topic_filter)
    assert isinstance(problem, str)
    assert problem


def test_filter_depth_limit() -> None:
    deepest = "/".join(["a"] * 10)  # 10 levels
    assert filter_problem(deepest, max_levels=10) is None
    assert filter_problem(deepest + "/a", max_levels=10) is not None
    assert filter_problem("/" * 9, max_levels=10) is None  # ten empty levels
    assert filter_problem("/" * 10, max_levels=10) is not None
    assert filter_problem("a/" * DEFAULT_MAX_TOPIC_LEVELS + "#") is not None
    assert filter_problem("a/" * (DEFAULT_MAX_TOPIC_LEVELS - 1) + "#") is None


def test_is_wildcard() -> None:
    assert is_wildcard("a/+")
    assert is_wildcard("#")
    assert not is_wildcard("a/b")
    assert not is_wildcard("$SYS/x")


# -- check_topic_name ----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [
    "a", "a/b", "/", "/a", "a/", "//", " ", "$SYS/broker/uptime", "ü/日本/😀", "a b", "$",
])
def test_valid_topic_names(topic: str) -> None:
    assert check_topic_name(topic) is None


def test_empty_topic_name_is_malformed() -> None:
    with pytest.raises(MQTTError) as info:
        check_topic_name("")
    assert type(info.value) is MalformedPacket


@pytest.mark.parametrize("topic", ["#", "+", "a/#", "a/+/b", "a+", "a#b", "sport/tennis/#"])
def test_wildcards_in_topic_name(topic: str) -> None:
    with pytest.raises(MQTTError) as info:
        check_topic_name(topic)
    assert type(info.value) is ProtocolError


def test_topic_name_depth_limit() -> None:
    check_topic_name("/".join(["a"] * 10), max_levels=10)
    with pytest.raises(ProtocolError):
        check_topic_name("/".join(["a"] * 11), max_levels=10)
    check_topic_name("a/" * (DEFAULT_MAX_TOPIC_LEVELS - 1) + "a")
    with pytest.raises(ProtocolError):
        check_topic_name("a/" * DEFAULT_MAX_TOPIC_LEVELS + "a")
    with pytest.raises(ProtocolError):
        check_topic_name("/" * 65_400)  # CVE-2019-11779 shape


# -- topic_matches -----------------------------------------------------------------------------

MATCHES = [
    # §4.7.1.2 multi-level wildcard examples
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("#", "a", True),
    # §4.7.1.3 single-level wildcard examples
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/golf", False),
    # exact, empty levels, case, prefix/suffix
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "a", False),
    ("a", "a/b", False),
    ("A", "a", False),
    ("a/b/", "a/b/", True),
    ("/", "/", True),
    ("//", "/", False),
    ("a/+/c", "a//c", True),
    ("a/+/c", "a/b/c/d", False),
    ("a/#", "ab", False),
    ("a/#", "a/", True),
    ("ab", "a", False),
    ("ü/+", "ü/日本", True),
    # §4.7.2 topics beginning with $
    ("#", "$SYS", False),
    ("#", "$SYS/broker/uptime", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/+", "$SYS/a/b", False),
    ("$share/#", "$SYS/x", False),
    ("a/+", "a/$b", True),  # only a leading $ is special
    ("a/#", "a/$b/c", True),
    ("#", "x$", True),
]


@pytest.mark.parametrize("topic_filter, topic, expected", MATCHES)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert filter_problem(topic_filter) is None
    assert topic_matches(topic_filter, topic) is expected


# -- a reference matcher, compared with the real one on generated topics ---------------------


def reference_matches(topic_filter: str, topic: str) -> bool:
    """Straight from the spec: translate the filter into a regular expression."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    parts: list[str] = []
    for level in topic_filter.split("/"):
        if level == "+":
            parts.append("[^/]*")
        elif level == "#":
            parts.append("#")
        else:
            parts.append(re.escape(level))
    pattern = "/".join(parts)
    if pattern == "#":
        pattern = ".*"
    elif pattern.endswith("/#"):
        pattern = pattern[:-2] + "(/.*)?"  # "a/#" matches "a" and everything below it
    return re.fullmatch(pattern, topic, re.DOTALL) is not None


LEVEL = st.sampled_from(["a", "b", "", "$", "$a", "ab", "ü"])
TOPICS = st.lists(LEVEL, min_size=1, max_size=5).map("/".join).filter(bool)
FILTER_LEVELS = st.lists(st.sampled_from(["a", "b", "", "+", "$a", "ab"]), min_size=1, max_size=5)
FILTERS = st.builds(lambda levels, hash_: "/".join(levels + (["#"] if hash_ else [])),
                    FILTER_LEVELS, st.booleans()).filter(bool) | st.just("#")


@settings(max_examples=300, deadline=1000)
@given(FILTERS, TOPICS)
def test_topic_matches_agrees_with_reference(topic_filter: str, topic: str) -> None:
    assert filter_problem(topic_filter) is None
    assert topic_matches(topic_filter, topic) == reference_matches(topic_filter, topic)


@settings(max_examples=200, deadline=1000)
@given(TOPICS)
def test_a_topic_matches_itself_as_a_filter(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic) is not topic.startswith("$")
