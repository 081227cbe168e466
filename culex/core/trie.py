"""The subscription trie: topic filters to subscribers, matched without recursion, cached.

A match walks an explicit stack, so a 65,000-level topic costs time in proportion, never a
RecursionError. Results are cached per topic name; a subscription change drops exactly the cache
entries it could affect (one dict pop for a filter without wildcards, a scan of the cache for a
wildcard filter) so steady-state routing is one dict lookup.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from ..protocol.topics import is_wildcard, topic_matches
from .subscription_value import merge

S = TypeVar("S", bound=Hashable)

# A bound on cached topic names: a publisher spraying unique topics must not grow memory for ever.
MATCH_CACHE_SIZE = 100_000


class _Node(Generic[S]):
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        self.subscribers: dict[S, int] = {}


class SubscriptionTrie(Generic[S]):
    def __init__(self) -> None:
        self._root: _Node[S] = _Node()
        self._cache: dict[str, list[tuple[S, int]]] = {}
        self.count = 0
        self.cache_invalidations = 0

    def add(self, topic_filter: str, subscriber: S, value: int) -> bool:
        """Subscribe, or replace the value (subscription_value.py) of an existing
        subscription. True when it is new."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        is_new = subscriber not in node.subscribers
        node.subscribers[subscriber] = value
        self.count += is_new
        self._invalidate(topic_filter)
        return is_new

    def remove(self, topic_filter: str, subscriber: S) -> bool:
        """Unsubscribe; prunes nodes left empty. True when the subscription existed."""
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].subscribers.pop(subscriber, None) is None:
            return False
        self.count -= 1
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.subscribers or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        self._invalidate(topic_filter)
        return True

    def match(self, topic: str) -> list[tuple[S, int]]:
        """Subscribers of a topic name, each once with the value of its highest-QoS matching
        subscription [MQTT-3.3.5-1]."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        found: dict[S, int] = {}
        levels = topic.split("/")
        depth = len(levels)
        stack = [(self._root, 0)]
        dollar = topic.startswith("$")
        while stack:
            node, index = stack.pop()
            children = node.children
            # MQTT-4.7.2-1: a leading wildcard never matches a topic that starts with '$'.
            wild_ok = index or not dollar
            if wild_ok and "#" in children:
                self._collect(children["#"], found)
            if index == depth:
                self._collect(node, found)
                continue
            if wild_ok and "+" in children:
                stack.append((children["+"], index + 1))
            child = children.get(levels[index])
            if child is not None:
                stack.append((child, index + 1))
        result = list(found.items())
        if len(self._cache) >= MATCH_CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = result
        return result

    @staticmethod
    def _collect(node: _Node[S], found: dict[S, int]) -> None:
        # One delivery per subscriber however many of its filters match (see
        # subscription_value.merge): the QoS is the low two bits; MQTT 5 option bits must not
        # make a QoS 0 subscription outrank a QoS 2 one [MQTT-3.3.4-2], and every matching
        # identifier is kept.
        for subscriber, value in node.subscribers.items():
            previous = found.get(subscriber)
            found[subscriber] = value if previous is None else merge(previous, value)

    def _invalidate(self, topic_filter: str) -> None:
        cache = self._cache
        if not cache:
            return
        if not is_wildcard(topic_filter):
            if cache.pop(topic_filter, None) is not None:
                self.cache_invalidations += 1
            return
        stale = [topic for topic in cache if topic_matches(topic_filter, topic)]
        for topic in stale:
            del cache[topic]
        self.cache_invalidations += len(stale)
