"""SubscriptionTrie: add/remove/match, wildcards, the `$` rule, QoS dedupe, the match cache and
its invalidation, deep topics without recursion, pruning."""

from __future__ import annotations

import pytest

from culex.core.trie import SubscriptionTrie
from culex.protocol.topics import topic_matches


def matched(trie: SubscriptionTrie[str], topic: str) -> dict[str, int]:
    return dict(trie.match(topic))


@pytest.fixture
def trie() -> SubscriptionTrie[str]:
    return SubscriptionTrie()


class TestAddRemove:
    def test_add_reports_new_and_counts(self, trie: SubscriptionTrie[str]) -> None:
        assert trie.add("a/b", "s1", 1) is True
        assert trie.add("a/b", "s2", 0) is True
        assert trie.add("a/b", "s1", 2) is False, "replacing the QoS is not a new subscription"
        assert trie.count == 2
        assert matched(trie, "a/b") == {"s1": 2, "s2": 0}

    def test_remove(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/b", "s1", 1)
        trie.add("a/b", "s2", 1)
        assert trie.remove("a/b", "s1") is True
        assert trie.remove("a/b", "s1") is False
        assert trie.remove("a/c", "s2") is False
        assert trie.remove("a", "s2") is False, "a prefix of a filter is not the filter"
        assert trie.count == 1
        assert matched(trie, "a/b") == {"s2": 1}

    def test_removal_prunes_empty_nodes(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/b/c/d", "s1", 0)
        trie.add("a/b", "s2", 0)
        trie.add("x/#", "s3", 0)
        trie.remove("a/b/c/d", "s1")
        a = trie._root.children["a"]
        assert list(a.children) == ["b"]
        assert a.children["b"].children == {}, "c and d pruned, b kept (it has a subscriber)"
        trie.remove("a/b", "s2")
        trie.remove("x/#", "s3")
        assert trie._root.children == {}
        assert trie.count == 0

    def test_remove_keeps_nodes_with_children(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a", "s1", 0)
        trie.add("a/b", "s2", 0)
        trie.remove("a", "s1")
        assert matched(trie, "a/b") == {"s2": 0}
        assert "a" in trie._root.children

    def test_same_subscriber_several_filters(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/+", "s1", 0)
        trie.add("a/b", "s1", 1)
        trie.remove("a/b", "s1")
        assert matched(trie, "a/b") == {"s1": 0}


class TestMatch:
    @pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/b", "a", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("a/+", "a/", True),  # an empty level is a level
        ("+/+", "/x", True),
        ("+", "a", True),
        ("+", "/a", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("#", "a", True),
        ("#", "a/b/c", True),
        ("#", "/", True),
        ("a/#", "a", True),  # '#' also matches the parent level
        ("a/#", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("a/#", "b/a", False),
        ("a/b/#", "a", False),
        ("+/#", "a", True),
        ("+/b/#", "a/b", True),
        ("a/+/#", "a", False),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a/b/c/d", True),
        ("#", "$SYS", False),
        ("#", "$SYS/broker/uptime", False),
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("+", "$x", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/+/uptime", "$SYS/broker/uptime", True),
        ("a/+", "a/$b", True),  # the '$' rule only concerns the first level
        ("a/#", "a/$b", True),
        ("A/b", "a/b", False),
    ])
    def test_filter_semantics(self, trie: SubscriptionTrie[str], topic_filter: str, topic: str,
                              expected: bool) -> None:
        trie.add(topic_filter, "s", 1)
        assert (trie.match(topic) == [("s", 1)]) is expected
        assert topic_matches(topic_filter, topic) is expected, "trie and topic_matches agree"

    def test_dedupe_by_max_qos(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/b", "s1", 0)
        trie.add("a/+", "s1", 2)
        trie.add("#", "s1", 1)
        trie.add("a/#", "s2", 1)
        trie.add("+/b", "s2", 0)
        result = trie.match("a/b")
        assert sorted(result) == [("s1", 2), ("s2", 1)]
        assert len(result) == 2, "each subscriber exactly once"

    def test_no_match_is_empty(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/b", "s1", 0)
        assert trie.match("x") == []
        assert trie.match("a/b/c") == []

    def test_many_subscribers_one_topic(self, trie: SubscriptionTrie[str]) -> None:
        for index in range(100):
            trie.add("t/+" if index % 2 else "t/x", f"s{index}", index % 3)
        result = matched(trie, "t/x")
        assert len(result) == 100
        assert result["s5"] == 2

    def test_deep_topic_65000_levels_no_recursion_error(self,
                                                        trie: SubscriptionTrie[str]) -> None:
        levels = 65_000
        topic = "/".join(["a"] * levels)
        plus_filter = "/".join(["+"] * levels)
        trie.add(topic, "exact", 2)
        trie.add("#", "hash", 0)
        trie.add("a/#", "a-hash", 1)
        trie.add(plus_filter, "plus", 1)
        trie.add(plus_filter + "/x", "too-deep", 1)
        assert matched(trie, topic) == {"exact": 2, "hash": 0, "a-hash": 1, "plus": 1}
        assert trie.remove(topic, "exact")
        assert trie.remove(plus_filter, "plus")
        assert matched(trie, topic) == {"hash": 0, "a-hash": 1}

    def test_deep_empty_levels(self, trie: SubscriptionTrie[str]) -> None:
        topic = "/" * 64_999
        trie.add(topic, "exact", 1)
        trie.add("+/#", "wild", 0)
        assert matched(trie, topic) == {"exact": 1, "wild": 0}


class TestCache:
    def test_repeated_match_is_cached(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/+", "s1", 1)
        first = trie.match("a/b")
        assert trie.match("a/b") is first

    def test_exact_filter_invalidates_only_its_topic(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/+", "s1", 0)
        cached_b = trie.match("a/b")
        cached_c = trie.match("a/c")
        cached_x = trie.match("x/y")
        assert trie.cache_invalidations == 0

        trie.add("a/b", "s2", 1)
        assert trie.cache_invalidations == 1
        assert set(trie._cache) == {"a/c", "x/y"}
        assert trie.match("a/c") is cached_c
        assert trie.match("x/y") is cached_x
        fresh_b = trie.match("a/b")
        assert fresh_b is not cached_b
        assert dict(fresh_b) == {"s1": 0, "s2": 1}

    def test_exact_filter_for_an_uncached_topic_invalidates_nothing(
            self, trie: SubscriptionTrie[str]) -> None:
        trie.match("a/b")
        trie.add("q/r", "s1", 0)
        assert trie.cache_invalidations == 0
        assert set(trie._cache) == {"a/b"}

    def test_wildcard_filter_invalidates_only_matching_topics(
            self, trie: SubscriptionTrie[str]) -> None:
        for topic in ("a/b", "a/c", "a/b/c", "x/y", "$SYS/a", "a"):
            trie.match(topic)
        trie.add("a/+", "s1", 0)
        assert trie.cache_invalidations == 2
        assert set(trie._cache) == {"a/b/c", "x/y", "$SYS/a", "a"}

        trie.add("#", "s2", 0)
        assert trie.cache_invalidations == 2 + 3, "'#' drops a/b/c, x/y and a, not $SYS/a"
        assert set(trie._cache) == {"$SYS/a"}

        trie.match("a")
        trie.match("a/b/c")
        trie.add("a/#", "s3", 0)
        assert trie.cache_invalidations == 5 + 2, "'a/#' matches its parent level 'a' too"
        assert dict(trie.match("a")) == {"s2": 0, "s3": 0}

    def test_remove_invalidates(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/+", "s1", 0)
        trie.add("a/b", "s2", 0)
        assert dict(trie.match("a/b")) == {"s1": 0, "s2": 0}
        trie.match("a/c")
        trie.remove("a/b", "s2")
        assert trie.cache_invalidations == 1
        assert dict(trie.match("a/b")) == {"s1": 0}
        trie.remove("a/+", "s1")
        assert trie.cache_invalidations == 1 + 2
        assert trie.match("a/b") == [] and trie.match("a/c") == []

    def test_failed_remove_invalidates_nothing(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/+", "s1", 0)
        trie.match("a/b")
        trie.remove("a/+", "nobody")
        trie.remove("z/#", "s1")
        assert trie.cache_invalidations == 0
        assert "a/b" in trie._cache

    def test_qos_change_is_seen_through_the_cache(self, trie: SubscriptionTrie[str]) -> None:
        trie.add("a/#", "s1", 0)
        assert trie.match("a/b") == [("s1", 0)]
        trie.add("a/#", "s1", 2)
        assert trie.match("a/b") == [("s1", 2)]

    def test_cache_is_bounded(self, trie: SubscriptionTrie[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("culex.core.trie.MATCH_CACHE_SIZE", 10)
        trie.add("#", "s1", 0)
        for index in range(25):
            trie.match(f"t/{index}")
        assert len(trie._cache) <= 10
        assert trie.match("t/0") == [("s1", 0)]
