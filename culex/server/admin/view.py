"""The whole broker as the admin API shows it: this process's answers merged with the other
workers' (asked over the links, see core/worker_queries.py), in the process that serves HTTP.

- Lists: every worker builds a page after the same cursor and says whether it has more; the
  pages are merged in key order and cut to the limit, so paging through 100,000 clients never
  asks any worker for more than one page.
- One client (read it, disconnect it, trace it): the worker that owns its client id.
- Retained messages (every worker keeps them all), publishing and topics (an observer here
  sees what every worker routes): this process alone, through routing like any publisher.
- Metrics: every worker's counters, one series per worker.

A worker that does not answer within `ASK_SECONDS` makes the request fail (HTTP 504) naming
it, rather than answer for part of the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any, TypeVar

from ...core.message import Message
from ...core.observers import TopicRates, TopicTrace
from ...core.steer import delete_retained, publish, when_done
from ...core.worker_links import owner_of
from ...core.worker_queries import Answers, Failed, WorkerQueries
from ...protocol.topics import topic_matches
from .peer import AdminPeer

ASK_SECONDS = 5.0
# A topic-rate observer with nobody reading it for this long stops: it costs a delivery per
# message while it runs.
TOPIC_RATES_IDLE_SECONDS = 60.0
# Trace events waiting for a slow reader: past this, they are dropped and counted.
TRACE_BACKLOG = 10_000
# How long a publish or a delete waits for its commit before the request fails.
DONE_SECONDS = 10.0
# A trace stream with nothing to say sends a keep-alive this often.
IDLE_SECONDS = 15.0
# Retained messages cleared per loop turn when deleting by filter.
DELETE_BATCH = 1000

JSON = dict[str, Any]
T = TypeVar("T")


class WorkerFailed(Exception):
    """Part of the broker did not answer in time (another worker; a commit), or a worker
    answered with an error: the request fails (HTTP 504), saying which."""


class BrokerView:
    def __init__(self, peer: AdminPeer, queries: WorkerQueries | None) -> None:
        self.peer = peer
        self.broker = peer.broker
        self.loop = peer.loop
        self.queries = queries
        self.size = 1 if queries is None else len(queries.workers) + 1
        self._rates: TopicRates | None = None
        self._rates_used = 0.0
        self._rates_timer: asyncio.TimerHandle | None = None
        self._streams: dict[int, TraceStream] = {}
        self._next_trace = 0

    def close(self) -> None:
        if self._rates is not None:
            self._stop_rates()
        for stream in list(self._streams.values()):
            stream.finish()

    # -- asking ------------------------------------------------------------------------------

    async def _ask(self, workers: list[int], op: str, args: JSON) -> Answers:
        """`op` answered by each of `workers` (this one included, asked directly)."""
        answers: Answers = {}
        if self.peer.index in workers:
            answers[self.peer.index] = self.peer.answers[op](args)
        others = [index for index in workers if index != self.peer.index]
        if not others:
            return answers
        queries = self.queries
        assert queries is not None
        future: asyncio.Future[Answers] = self.loop.create_future()
        query = queries.ask(others, op, args, partial(_resolve, future))
        try:
            async with asyncio.timeout(ASK_SECONDS):
                answers.update(await future)
        except TimeoutError:
            queries.forget(query)
            raise WorkerFailed(f"worker(s) did not answer within {ASK_SECONDS:g} s "
                               f"({op})") from None
        failed = {index: answer for index, answer in answers.items()
                  if isinstance(answer, Failed)}
        if failed:
            raise WorkerFailed("; ".join(f"worker {index}: {answer.error}"
                                         for index, answer in sorted(failed.items())))
        return answers

    async def _everywhere(self, op: str, args: JSON) -> list[Any]:
        answers = await self._ask(list(range(self.size)), op, args)
        return [answers[index] for index in sorted(answers)]

    async def _owner(self, client_id: str, op: str, args: JSON) -> Any:
        owner = owner_of(client_id, self.size)
        return (await self._ask([owner], op, args))[owner]

    async def _merged(self, op: str, args: JSON, key: Callable[[JSON], Any]) -> JSON:
        pages = await self._everywhere(op, args)
        entries = sorted((entry for page in pages for entry in page["entries"]), key=key)
        limit = args["limit"]
        more = len(entries) > limit or any(page["more"] for page in pages)
        return {"entries": entries[:limit], "next": key(entries[limit - 1]) if more and entries
                else None}

    # -- reads -------------------------------------------------------------------------------

    async def metrics(self) -> list[JSON]:
        return await self._everywhere("metrics", {})

    async def clients(self, args: JSON) -> JSON:
        return await self._merged("clients", args, lambda entry: entry["client_id"])

    async def sessions(self, args: JSON) -> JSON:
        return await self._merged("sessions", args, lambda entry: entry["client_id"])

    async def subscriptions(self, args: JSON) -> JSON:
        return await self._merged("subscriptions", args,
                                  lambda entry: [entry["client_id"], entry["topic_filter"]])

    async def client(self, client_id: str) -> JSON | None:
        answer: JSON | None = await self._owner(client_id, "client", {"client_id": client_id})
        return answer

    def retained(self, topic_filter: str, cursor: str, limit: int,
                 payload_limit: int | None) -> JSON:
        entries, more = self.peer.inspector.retained(topic_filter, cursor, limit,
                                                     payload_limit=payload_limit,
                                                     now=self.loop.time())
        return {"entries": entries, "next": entries[-1]["topic"] if more else None}

    def topics(self, topic_filter: str, cursor: str, limit: int) -> JSON:
        """Topics with messages lately (seen by an observer that starts with the first call
        and stops when nobody has asked for a minute) or a retained message."""
        rates = self._topic_rates()
        counted = {topic: counts for topic, counts in rates.rates().items()
                   if topic > cursor and topic_matches(topic_filter, topic)}
        retained, _ = self.peer.inspector.retained(topic_filter, cursor, limit + 1,
                                                   payload_limit=64, now=self.loop.time())
        by_topic = {entry["topic"]: entry for entry in retained}
        topics = sorted(set(counted) | set(by_topic))
        page = topics[:limit]
        return {
            "entries": [{"topic": topic,
                         "messages": counted.get(topic, (0, 0.0))[0],
                         "rate": counted.get(topic, (0, 0.0))[1],
                         "retained": by_topic.get(topic)} for topic in page],
            "next": page[-1] if len(topics) > limit else None,
            "counting_since": self.loop.time() - rates.started,
        }

    def _topic_rates(self) -> TopicRates:
        self._rates_used = self.loop.time()
        if self._rates is None:
            self._rates = TopicRates(self.broker.manager, self.broker.router, self.loop.time())
            self._rates_timer = self.loop.call_later(1.0, self._roll_rates)
        return self._rates

    def _roll_rates(self) -> None:
        assert self._rates is not None
        if self.loop.time() - self._rates_used > TOPIC_RATES_IDLE_SECONDS:
            self._stop_rates()
            return
        self._rates.roll()
        self._rates_timer = self.loop.call_later(1.0, self._roll_rates)

    def _stop_rates(self) -> None:
        assert self._rates is not None
        self._rates.close()
        self._rates = None
        if self._rates_timer is not None:
            self._rates_timer.cancel()

    # -- changes -----------------------------------------------------------------------------

    async def disconnect(self, client_id: str) -> bool:
        done: bool = await self._owner(client_id, "disconnect", {"client_id": client_id})
        return done

    async def publish(self, message: Message) -> int:
        """Route `message`; answer once it is as safe as a PUBACK would say."""
        reason = publish(self.broker, message)
        if message.qos or message.retain:
            await self._done()
        return reason

    async def delete_retained(self, topic_filter: str) -> int:
        deleted = 0
        while True:
            cleared, more = delete_retained(self.broker, topic_filter, DELETE_BATCH)
            deleted += cleared
            if not more:
                break
            await asyncio.sleep(0)  # let clients in between two batches
        if deleted:
            await self._done()
        return deleted

    async def _done(self) -> None:
        """Until what was just published is committed and held by the workers it went to;
        a failing disk (commits held and retried) makes the request fail rather than hang."""
        finished: asyncio.Future[None] = self.loop.create_future()
        when_done(self.broker, partial(_resolve, finished, None))
        try:
            async with asyncio.timeout(DONE_SECONDS):
                await finished
        except TimeoutError:
            raise WorkerFailed(f"routed, but not committed within {DONE_SECONDS:g} s (see the "
                               "log: is storage failing?)") from None

    # -- traces ------------------------------------------------------------------------------

    async def trace_client(self, client_id: str, seconds: float,
                           payload_limit: int | None) -> AsyncGenerator[JSON | None, None]:
        """The packets of `client_id` for `seconds`, traced by the worker that owns it."""
        self._next_trace += 1
        trace_id = self._next_trace
        stream = self._streams[trace_id] = TraceStream()
        owner = owner_of(client_id, self.size)
        local = None
        try:
            if owner == self.peer.index:
                local = self.peer.traces.start(client_id, stream.put, payload_limit)
            else:
                await self._ask([owner], "trace_start", {
                    "id": trace_id, "client_id": client_id, "seconds": seconds,
                    "payload_limit": payload_limit})
            async for event in stream.events(self.loop.time() + seconds):
                yield event
        finally:
            del self._streams[trace_id]
            if local is not None:
                self.peer.traces.stop(local)
            elif self.queries is not None:
                self.queries.ask([owner], "trace_stop", {"id": trace_id}, lambda _: None)

    async def trace_topic(self, topic_filter: str, seconds: float,
                          payload_limit: int | None) -> AsyncGenerator[JSON | None, None]:
        """Every message routed to `topic_filter` for `seconds` (on any worker: the
        observer's filter reaches them all)."""
        stream = TraceStream()
        trace = TopicTrace(topic_filter, stream.put, payload_limit=payload_limit,
                           wall_time=time.time, manager=self.broker.manager,
                           router=self.broker.router)

        def started() -> None:
            stream.put({"time": time.time(), "direction": "event", "type": "trace started",
                        "topic_filter": topic_filter})

        # Said once every other worker has the observer's route (the barrier SUBACKs wait
        # for): from then on no message on the filter, wherever published, is missed.
        links = self.broker.links
        if links is None or not links.when_known(started, links.route_sends):
            started()
        try:
            async for event in stream.events(self.loop.time() + seconds):
                yield event
        finally:
            trace.close()

    def notice(self, worker: int, op: str, body: Any) -> None:
        """A NOTICE from another worker: an event of a trace it runs for us."""
        if op == "trace":
            stream = self._streams.get(body["id"])
            if stream is not None:
                stream.put(body["event"])


def _resolve(future: asyncio.Future[T], result: T) -> None:
    if not future.done():  # not given up on meanwhile
        future.set_result(result)


class TraceStream:
    """Events between a trace (called from wherever the traced things happen) and the HTTP
    response that writes them: bounded, so a reader that stops reading costs at most
    `TRACE_BACKLOG` events, and what is dropped is said."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[JSON | None] = asyncio.Queue(TRACE_BACKLOG)
        self.dropped = 0
        self.finished = False

    def put(self, event: JSON) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def finish(self) -> None:
        """End the stream now (shutdown)."""
        self.finished = True
        if not self._queue.full():
            self._queue.put_nowait(None)

    async def events(self, until: float) -> AsyncGenerator[JSON | None, None]:
        """Events until the loop's clock reaches `until`; None after `IDLE_SECONDS` without
        any (the writer then sends a keep-alive, which is how it notices a reader gone)."""
        loop = asyncio.get_running_loop()
        while not self.finished:
            left = until - loop.time()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(min(left, IDLE_SECONDS)):
                    event = await self._queue.get()
            except TimeoutError:
                yield None
                continue
            if event is None:
                return
            if self.dropped:
                yield {"time": time.time(), "direction": "event", "type": "dropped",
                       "count": self.dropped}
                self.dropped = 0
            yield event
