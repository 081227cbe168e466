"""Questions from one worker to the others, and their answers, over the worker links.

With worker processes the admin API is served by worker 0, and every answer must be the whole
broker's; what only another worker knows (its clients, sessions and counters) worker 0 asks it
for, on the links' ADMIN channel (`WorkerLinks.serve`), one JSON body per record. A question is
{"id", "op", "args"}; the worker answers {"id", "body"} (or {"id", "error"}) made by its own
`answers[op]`, on its own loop, between two of its other records. A list is asked for one page
at a time, so no record grows with the broker. A notice is one-way, {"op", "body"} without an
id: what a worker reports unasked (the packets of a client it traces). Questions and answers
deliver nothing, so they are handled even while a full subscriber holds routing back.

Sans-I/O like the links themselves: how long to wait is the caller's business (the server
gives up after a few seconds and says which worker did not answer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .worker_links import WorkerLinks

log = logging.getLogger("culex")

Answer = Callable[[dict[str, Any]], Any]
"""Answers one kind of question: its arguments -> a JSON-able value."""

# The links' service channel of the admin API's records.
ADMIN = 2

Answers = dict[int, Any]
"""What each asked worker answered, by worker index: its body, or a `Failed`."""


class Failed:
    """A worker's answer that it could not answer (its error), or that it is gone."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


class _Waiting:
    __slots__ = ("answers", "done", "workers")

    def __init__(self, workers: set[int], done: Callable[[Answers], None]) -> None:
        self.workers = workers
        self.done = done
        self.answers: Answers = {}


class WorkerQueries:
    def __init__(self, links: WorkerLinks, answers: dict[str, Answer],
                 on_notice: Callable[[int, str, Any], None]) -> None:
        self._links = links
        self.answers = answers
        self._on_notice = on_notice
        self._next_id = 0
        self._waiting: dict[int, _Waiting] = {}
        links.serve(ADMIN, self.received, in_order=False)

    @property
    def index(self) -> int:
        return self._links.index

    @property
    def workers(self) -> list[int]:
        """Every other worker."""
        return [index for index in range(self._links.size) if index != self._links.index]

    def ask(self, workers: Iterable[int], op: str, args: dict[str, Any],
            done: Callable[[Answers], None]) -> int:
        """Ask each of `workers` (others than this one); `done(answers)` once every one has
        answered. Returns the question's id, to `forget` it when giving up."""
        self._next_id += 1
        query_id = self._next_id
        waiting = _Waiting(set(workers), done)
        body = json.dumps({"kind": "query", "id": query_id, "op": op, "args": args}).encode()
        for index in list(waiting.workers):
            if not self._links.send_service(ADMIN, body, index):
                waiting.workers.discard(index)
                waiting.answers[index] = Failed(f"worker {index} is gone")
        if waiting.workers:
            self._waiting[query_id] = waiting
        else:
            done(waiting.answers)
        return query_id

    def forget(self, query_id: int) -> None:
        self._waiting.pop(query_id, None)

    def notify(self, index: int, op: str, body: Any) -> bool:
        return self._links.send_service(ADMIN, json.dumps(
            {"kind": "notice", "op": op, "body": body}).encode(), index)

    def received(self, index: int, body: bytes) -> None:
        message = json.loads(body)
        kind = message["kind"]
        if kind == "query":
            self._answer(index, message)
        elif kind == "answer":
            waiting = self._waiting.get(message["id"])
            if waiting is None:
                return  # given up on meanwhile
            waiting.answers[index] = (Failed(message["error"]) if "error" in message
                                      else message["body"])
            waiting.workers.discard(index)
            if not waiting.workers:
                del self._waiting[message["id"]]
                waiting.done(waiting.answers)
        elif kind == "notice":
            self._on_notice(index, message["op"], message["body"])

    def _answer(self, index: int, message: dict[str, Any]) -> None:
        answer = self.answers.get(message["op"])
        reply: dict[str, Any] = {"kind": "answer", "id": message["id"]}
        if answer is None:
            reply["error"] = f"unknown question {message['op']!r}"
        else:
            try:
                reply["body"] = answer(message["args"])
            except Exception as exc:  # a bug here must not take the link's reading down
                log.exception("worker query %r from worker %d failed", message["op"], index)
                reply["error"] = f"{type(exc).__name__}: {exc}"
        self._links.send_service(ADMIN, json.dumps(reply).encode(), index)
