"""Retained messages by topic, in a trie so a wildcard subscribe visits only matching branches."""

from __future__ import annotations

from collections.abc import Iterator

from .message import Message


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainedStore:
    def __init__(self) -> None:
        self._root = _Node()
        self.count = 0

    def set(self, message: Message) -> Message | None:
        """Store, replace, or (empty payload) clear the retained message of its topic.

        Returns the message it replaced or cleared, if any."""
        if not message.payload:
            return self._delete(message.topic)
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        previous = node.message
        self.count += previous is None
        node.message = message
        return previous

    def get(self, topic: str) -> Message | None:
        node: _Node | None = self._root
        for level in topic.split("/"):
            node = node.children.get(level) if node else None
        return node.message if node else None

    def _delete(self, topic: str) -> Message | None:
        levels = topic.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return None
            path.append(child)
        previous = path[-1].message
        if previous is None:
            return None
        path[-1].message = None
        self.count -= 1
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.message is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return previous

    def match(self, topic_filter: str) -> Iterator[Message]:
        """Retained messages whose topic the filter matches (the `$` rule applied)."""
        levels = topic_filter.split("/")
        depth = len(levels)
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == depth:
                if node.message is not None:
                    yield node.message
                continue
            level = levels[index]
            if level == "#":
                # '#' also matches the parent level itself ("a/#" matches "a").
                if node.message is not None and index:
                    yield node.message
                yield from self._subtree(node, skip_dollar=index == 0)
            elif level == "+":
                for name, child in node.children.items():
                    if index or not name.startswith("$"):
                        stack.append((child, index + 1))
            else:
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, index + 1))

    @staticmethod
    def _subtree(start: _Node, skip_dollar: bool) -> Iterator[Message]:
        stack = [child for name, child in start.children.items()
                 if not (skip_dollar and name.startswith("$"))]
        while stack:
            node = stack.pop()
            if node.message is not None:
                yield node.message
            stack.extend(node.children.values())
