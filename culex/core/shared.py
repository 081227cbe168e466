"""Shared subscriptions (`$share/{ShareName}/{filter}`, MQTT 5 §4.8.2): groups and who gets what.

A group is identified by its ShareName and its filter; it sits in its own trie once per filter,
as one subscriber, so the trie's match cache and its invalidation work for groups exactly as for
sessions (a member joining or leaving changes the group object, never the trie). Each matching
message goes to exactly one member, chosen per message, which is why the choice cannot live in
the cached match result. Keeping groups out of the main trie also keeps the ordinary routing
loops as they were: the broker asks this module only while at least one group exists.

Which member: only connected members that may read the topic are candidates; for QoS 1/2, when
none is connected, a member whose session outlives its connection (every offline member is one:
a clean session ends with its connection) queues it. Among candidates the strategy decides:

- "round_robin" (default): in turn, in the order members joined;
- "random": uniformly at random;
- "sticky": the same member while it stays a candidate, then the next in turn;
- "hash": by a hash (CRC-32) of the publisher's client id, so one publisher's messages go to one
  member and stay in order (the topic is hashed for messages without a publisher: wills, $SYS).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Final

from ..auth.acl import Access
from .session import Session
from .trie import SubscriptionTrie


class SharedGroup:
    """The members of one `$share/{name}/{topic_filter}` and their subscription values."""

    __slots__ = ("_next", "_sticky", "members", "name", "order", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        # Member -> its trie value (subscription_value.py): each member has its own QoS, options and
        # Subscription Identifier.
        self.members: dict[Session, int] = {}
        self.order: list[Session] = []  # join order: what round-robin walks
        self._next = 0
        self._sticky: Session | None = None

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.topic_filter!r}, {len(self.members)} members)"

    @property
    def key(self) -> tuple[str, str]:
        """(ShareName, filter): how a queued message names the group that gave it."""
        return self.name, self.topic_filter

    def candidates(self, topic: str, queue_offline: bool,
                   exclude: Session | None = None) -> list[int]:
        """Positions in `order` of the members that may get a message on `topic` now."""
        online: list[int] = []
        offline: list[int] = []
        for index, session in enumerate(self.order):
            if session is exclude:
                continue
            acl = session.acl
            if acl is not None and not acl.allowed(topic, Access.READ):
                continue
            (offline if session.connection is None else online).append(index)
        return online or (offline if queue_offline else [])

    def round_robin(self, candidates: list[int], key: str) -> int:
        chosen = next((index for index in candidates if index >= self._next), candidates[0])
        self._next = chosen + 1
        return chosen

    def random(self, candidates: list[int], key: str) -> int:
        return random.choice(candidates)

    def sticky(self, candidates: list[int], key: str) -> int:
        sticky = self._sticky
        if sticky is not None:
            for index in candidates:
                if self.order[index] is sticky:
                    return index
        chosen = self.round_robin(candidates, key)
        self._sticky = self.order[chosen]
        return chosen

    def hash(self, candidates: list[int], key: str) -> int:
        return candidates[zlib.crc32(key.encode()) % len(candidates)]


Strategy = Callable[[SharedGroup, list[int], str], int]

_STRATEGIES: Final[dict[str, Strategy]] = {  # one per name in limits.STRATEGIES
    "round_robin": SharedGroup.round_robin,
    "random": SharedGroup.random,
    "sticky": SharedGroup.sticky,
    "hash": SharedGroup.hash,
}


class SharedSubscriptions:
    """Every shared subscription group of a broker, in a trie of its own."""

    def __init__(self, strategy: str = "round_robin") -> None:
        self.trie: SubscriptionTrie[SharedGroup] = SubscriptionTrie()
        self.groups: dict[tuple[str, str], SharedGroup] = {}
        self.count = 0  # memberships, for $SYS/broker/subscriptions/count
        self._choose = _STRATEGIES[strategy]

    def add(self, name: str, topic_filter: str, session: Session, value: int) -> bool:
        """Join (or renew the QoS and options of) `session`'s membership; True when new."""
        group = self.groups.get((name, topic_filter))
        if group is None:
            group = self.groups[name, topic_filter] = SharedGroup(name, topic_filter)
            self.trie.add(topic_filter, group, 0)
        new = session not in group.members
        if new:
            group.order.append(session)
            self.count += 1
        group.members[session] = value
        return new

    def remove(self, name: str, topic_filter: str, session: Session) -> bool:
        """Leave; the last member to leave removes the group from the trie."""
        group = self.groups.get((name, topic_filter))
        if group is None or group.members.pop(session, None) is None:
            return False
        index = group.order.index(session)
        del group.order[index]
        if group._next > index:
            group._next -= 1  # round-robin goes on with the member that was next
        if group._sticky is session:
            group._sticky = None
        self.count -= 1
        if not group.members:
            del self.groups[name, topic_filter]
            self.trie.remove(topic_filter, group)
        return True

    def pick(self, group: SharedGroup, topic: str, queue_offline: bool, publisher: str | None,
             exclude: Session | None = None) -> tuple[Session, int] | None:
        """The member of `group` that gets one message, with its subscription value; None when
        no member can take it: nobody connected (unless `queue_offline`, for QoS 1/2), or
        nobody may read the topic."""
        candidates = group.candidates(topic, queue_offline, exclude)
        if not candidates:
            return None
        session = group.order[self._choose(group, candidates, publisher or topic)]
        return session, group.members[session]

    def choose(self, topic: str, qos: int,
               publisher: str | None) -> list[tuple[Session, int, SharedGroup]]:
        """One member per group whose filter matches `topic`."""
        chosen = []
        for group, _ in self.trie.match(topic):
            picked = self.pick(group, topic, qos > 0, publisher)
            if picked is not None:
                chosen.append((*picked, group))
        return chosen
