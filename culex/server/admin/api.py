"""The JSON API under `/api/v1/` (documented in openapi.json, which the tests hold every answer
to) and the trace stream.

Every argument is checked here, before anything is asked of a worker: a bad one is HTTP 400
saying which and why. Lists take `limit` (1-1000, default 100) and `cursor` (the `next` of the
page before) and answer {"entries": [...], "next": cursor or null}. Payloads are cut to a
preview of 256 bytes unless `full=true`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from ...core.message import Message
from ...protocol.describe import PAYLOAD_PREVIEW
from ...protocol.errors import MQTTError
from ...protocol.properties import Properties
from ...protocol.reasons import reason_name
from ...protocol.topics import filter_problem, validate_topic_name
from .metrics import totals
from .view import BrokerView

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DEFAULT_TRACE_SECONDS = 60.0
MAX_TRACE_SECONDS = 3600.0
# MQTT 5 properties a message published over the API may carry.
PUBLISH_PROPERTIES = ("payload_format_indicator", "message_expiry_interval", "content_type",
                      "response_topic", "correlation_data", "user_properties")
# Subscriptions' cursor: client id and filter, which MQTT strings never contain (U+0000).
CURSOR_SEPARATOR = "\x00"

JSON = dict[str, Any]


class ApiError(Exception):
    """A request the API refuses: its HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, f"limit: {text!r} is not a number from 1 to {MAX_LIMIT}")
    return int(text)


def _flag(request: web.Request, name: str) -> bool | None:
    text = request.query.get(name)
    if text is None:
        return None
    if text not in ("true", "false"):
        raise ApiError(400, f"{name}: {text!r} is not true or false")
    return text == "true"


def _payload_limit(request: web.Request) -> int | None:
    return None if _flag(request, "full") else PAYLOAD_PREVIEW


def _topic_filter(request: web.Request, view: BrokerView, default: str | None) -> str:
    topic_filter = request.query.get("filter", default)
    if topic_filter is None:
        raise ApiError(400, "filter: required (a topic filter, such as sensors/#)")
    problem = filter_problem(topic_filter, view.broker.limits.max_topic_levels)
    if problem is not None:
        raise ApiError(400, f"filter: {topic_filter!r}: {problem}")
    return topic_filter


def _seconds(request: web.Request) -> float:
    text = request.query.get("seconds", str(DEFAULT_TRACE_SECONDS))
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= MAX_TRACE_SECONDS:
        raise ApiError(400, f"seconds: {text!r} is not a number of seconds from 0 to "
                       f"{MAX_TRACE_SECONDS:g}")
    return seconds


def _topic(view: BrokerView, topic: Any) -> str:
    if not isinstance(topic, str):
        raise ApiError(400, "topic: required, a string")
    if topic.startswith("$"):
        raise ApiError(400, f"topic: {topic!r}: topics starting with $ are the broker's own")
    try:
        validate_topic_name(topic.encode(), view.broker.limits.max_topic_levels)
    except (MQTTError, UnicodeEncodeError) as exc:
        raise ApiError(400, f"topic: {topic!r}: {exc}") from None
    return topic


def _payload(body: JSON) -> bytes:
    if "payload" in body and "payload_base64" in body:
        raise ApiError(400, "payload and payload_base64: give one of them")
    if "payload_base64" in body:
        try:
            return base64.b64decode(body["payload_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ApiError(400, "payload_base64: not base64") from None
    payload = body.get("payload", "")
    if not isinstance(payload, str):
        raise ApiError(400, "payload: must be text (payload_base64 for bytes)")
    return payload.encode("utf-8", "surrogatepass")


def _properties(body: JSON) -> Properties | None:
    given = body.get("properties")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise ApiError(400, "properties: must be an object")
    properties = Properties()
    for name, value in given.items():
        setattr(properties, name, _property(name, value))
    return None if properties.is_empty() else properties


def _property(name: str, value: Any) -> Any:
    """One MQTT 5 property of a message published over the API, as Properties holds it."""
    if name in ("payload_format_indicator", "message_expiry_interval"):
        maximum = 1 if name == "payload_format_indicator" else 0xFFFFFFFF
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
            raise ApiError(400, f"properties.{name}: a number from 0 to {maximum}")
        return value
    if name in ("content_type", "response_topic"):
        if not isinstance(value, str):
            raise ApiError(400, f"properties.{name}: a string")
        return value
    if name == "correlation_data":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ApiError(400, "properties.correlation_data: not base64") from None
    if name == "user_properties":
        if not isinstance(value, list) or not all(
                isinstance(pair, list) and len(pair) == 2
                and all(isinstance(item, str) for item in pair) for pair in value):
            raise ApiError(400, "properties.user_properties: a list of [name, value] string "
                           "pairs")
        return [(key, text) for key, text in value]
    raise ApiError(400, f"properties.{name}: not a property a message published here may "
                   f"carry (allowed: {', '.join(PUBLISH_PROPERTIES)})")


async def _json_body(request: web.Request) -> JSON:
    if request.content_type != "application/json":
        # Also what keeps other sites' pages out: a cross-site form can post text/plain
        # without asking, but not application/json.
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def routes(view: BrokerView) -> list[web.RouteDef]:
    """The API's routes, bound to `view`."""

    async def clients(request: web.Request) -> web.Response:
        return web.json_response(await view.clients({
            "cursor": request.query.get("cursor", ""), "limit": _limit(request),
            "prefix": request.query.get("prefix", ""), "user": request.query.get("user")}))

    async def client(request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]
        found = await view.client(client_id)
        if found is None:
            raise ApiError(404, f"client {client_id!r} is not connected")
        return web.json_response(found)

    async def disconnect(request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]
        if not await view.disconnect(client_id):
            raise ApiError(404, f"client {client_id!r} is not connected")
        return web.json_response({"client_id": client_id, "disconnected": True})

    async def sessions(request: web.Request) -> web.Response:
        return web.json_response(await view.sessions({
            "cursor": request.query.get("cursor", ""), "limit": _limit(request),
            "prefix": request.query.get("prefix", ""),
            "connected": _flag(request, "connected")}))

    async def subscriptions(request: web.Request) -> web.Response:
        cursor = request.query.get("cursor", "")
        client_id, _, topic_filter = cursor.partition(CURSOR_SEPARATOR)
        topic = request.query.get("topic")
        if topic is not None:
            _topic(view, topic)
        page = await view.subscriptions({
            "cursor": [client_id, topic_filter], "limit": _limit(request),
            "client_prefix": request.query.get("client_id", ""), "topic": topic})
        if page["next"] is not None:
            page["next"] = CURSOR_SEPARATOR.join(page["next"])
        return web.json_response(page)

    async def retained(request: web.Request) -> web.Response:
        return web.json_response(view.retained(
            _topic_filter(request, view, None), request.query.get("cursor", ""),
            _limit(request), _payload_limit(request)))

    async def delete_retained(request: web.Request) -> web.Response:
        topic_filter = _topic_filter(request, view, None)
        return web.json_response({"filter": topic_filter,
                                  "deleted": await view.delete_retained(topic_filter)})

    async def topics(request: web.Request) -> web.Response:
        return web.json_response(view.topics(_topic_filter(request, view, "#"),
                                             request.query.get("cursor", ""), _limit(request)))

    async def publish(request: web.Request) -> web.Response:
        body = await _json_body(request)
        topic = _topic(view, body.get("topic"))
        qos = body.get("qos", 0)
        retain = body.get("retain", False)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ApiError(400, "qos: 0, 1 or 2")
        if not isinstance(retain, bool):
            raise ApiError(400, "retain: true or false")
        payload = _payload(body)
        message = Message(topic, payload, qos, retain, properties=_properties(body))
        reason = await view.publish(message)
        return web.json_response({"topic": topic, "qos": qos, "retain": retain,
                                  "payload_size": len(payload), "reason_code": reason,
                                  "reason": reason_name(reason)})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(totals(await view.metrics()))

    async def trace(request: web.Request) -> web.StreamResponse:
        client_id = request.query.get("client_id")
        topic_filter = request.query.get("topic")
        if (client_id is None) == (topic_filter is None):
            raise ApiError(400, "give one of client_id and topic")
        seconds = _seconds(request)
        payload_limit = _payload_limit(request)
        if topic_filter is not None:
            problem = filter_problem(topic_filter, view.broker.limits.max_topic_levels)
            if problem is not None:
                raise ApiError(400, f"topic: {topic_filter!r}: {problem}")
            events = view.trace_topic(topic_filter, seconds, payload_limit)
        else:
            assert client_id is not None
            events = view.trace_client(client_id, seconds, payload_limit)
        return await _stream(request, events)

    return [
        web.get("/api/v1/stats", stats),
        web.get("/api/v1/clients", clients),
        web.get("/api/v1/clients/{client_id:.+}", client),
        web.delete("/api/v1/clients/{client_id:.+}", disconnect),
        web.get("/api/v1/sessions", sessions),
        web.get("/api/v1/subscriptions", subscriptions),
        web.get("/api/v1/topics", topics),
        web.get("/api/v1/retained", retained),
        web.delete("/api/v1/retained", delete_retained),
        web.post("/api/v1/publish", publish),
        web.get("/api/v1/trace", trace),
    ]


async def _stream(request: web.Request,
                  events: AsyncGenerator[JSON | None, None]) -> web.StreamResponse:
    """Server-sent events: one `data:` line of JSON per event, each with `elapsed`, the
    seconds since the trace started; a comment when idle; `event: end` when time is up."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    started = time.time()
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if event is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                event["elapsed"] = round(event["time"] - started, 6)
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"event: end\ndata: {}\n\n")
        await response.write_eof()
    except ConnectionResetError:
        pass  # the reader left (or the broker is stopping): the trace ended with the stream
    return response
