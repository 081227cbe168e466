"""Topic name and topic filter rules (MQTT 3.1.1 §4.7), shared by the codec and the broker."""

from __future__ import annotations

from .codec import decode_utf8
from .errors import MalformedPacket, ProtocolError
from .reasons import ReasonCode

# Far above any real hierarchy, far below what would make per-level work an attack
# (CVE-2019-11779: a 65,400-level topic). Matching is iterative, so this is about CPU, not stack.
DEFAULT_MAX_TOPIC_LEVELS = 1024


def check_topic_name(topic: str, max_levels: int = DEFAULT_MAX_TOPIC_LEVELS) -> None:
    """A PUBLISH or will topic: non-empty, no wildcards, bounded depth.

    The errors carry the MQTT 5 reason code of the DISCONNECT that reports them: an empty
    topic is malformed in 3.1.1 (CVE-2021-34432) but in MQTT 5 only lacks a Topic Alias, a
    Protocol Error (§3.3.2.1); a topic we refuse once parsed is 0x90 Topic Name invalid
    (§3.3.4, BAD_INPUTS #23)."""
    if not topic:
        error: MalformedPacket | ProtocolError = MalformedPacket("empty topic name",
                                                                 "MQTT-4.7.3-1")
        error.reason_code = ReasonCode.PROTOCOL_ERROR
        raise error
    if "+" in topic or "#" in topic:
        error = ProtocolError(f"wildcard in topic name {topic!r}", "MQTT-3.3.2-2")
        error.reason_code = ReasonCode.TOPIC_NAME_INVALID
        raise error
    if topic.count("/") >= max_levels:
        error = ProtocolError(f"topic name deeper than {max_levels} levels")
        error.reason_code = ReasonCode.TOPIC_NAME_INVALID
        raise error


def filter_problem(topic_filter: str, max_levels: int = DEFAULT_MAX_TOPIC_LEVELS) -> str | None:
    """Why a topic filter is invalid, or None when it is valid.

    Returned rather than raised: an invalid filter in SUBSCRIBE is answered with 0x80 in its
    SUBACK slot while the other filters of the same packet still succeed.
    """
    if not topic_filter:
        return "empty topic filter [MQTT-4.7.3-1]"
    levels = topic_filter.split("/")
    if len(levels) > max_levels:
        return f"topic filter deeper than {max_levels} levels"
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return "'#' must be a whole last level [MQTT-4.7.1-2]"
        if "+" in level and level != "+":
            return "'+' must be a whole level [MQTT-4.7.1-3]"
    return None


def is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a valid filter matches a topic name, with the `$` rule of MQTT-4.7.2-1."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


SHARE_PREFIX = "$share/"


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """(ShareName, Topic Filter) of a shared subscription `$share/{ShareName}/{filter}`, None
    for any other filter. Validate first with `shared_filter_problem`."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    name, _, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
    return name, inner


def shared_filter_problem(topic_filter: str,
                          max_levels: int = DEFAULT_MAX_TOPIC_LEVELS) -> str | None:
    """`filter_problem` for a filter that starts with `$share/` (MQTT 5 §4.8.2)."""
    name, slash, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
    if not name:
        return "empty ShareName in a shared subscription [MQTT-4.8.2-1]"
    if "+" in name or "#" in name:
        return "'+' or '#' in a ShareName [MQTT-4.8.2-2]"
    if not slash or not inner:
        return "no topic filter after the ShareName [MQTT-4.8.2-2]"
    return filter_problem(inner, max_levels)


def validate_topic_name(topic_bytes: bytes, max_levels: int = DEFAULT_MAX_TOPIC_LEVELS) -> str:
    """Decode and check a PUBLISH topic: well-formed UTF-8 without forbidden code points, then
    the topic name rules. The broker caches the result per distinct name."""
    topic = decode_utf8(topic_bytes, "topic name")
    check_topic_name(topic, max_levels)
    return topic
