"""An HTTP client for the admin API that holds every answer to the OpenAPI document.

`AdminClient.call` finds the document's operation for the method and path, and validates the
JSON body of every answer (whatever its status) against the schema the document gives for
that status (jsonschema, Draft 2020-12, as OpenAPI 3.1 specifies): an answer the document does
not describe fails the test that got it. Trace streams are read line by line and each event
is validated against `TraceEvent`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from culex.server.admin.http import OPENAPI
from tests.conftest import BrokerProcess

DOCUMENT = json.loads(OPENAPI.read_text())
BASE_URI = "urn:culex:openapi"
REGISTRY = Registry().with_resource(
    BASE_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012))
TEMPLATES = [(re.compile("^" + re.sub(r"\{[^}]+\}", ".+", path) + "$"), path)
             for path in DOCUMENT["paths"]]


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def validate(schema_pointer: str, value: Any) -> None:
    validator = Draft202012Validator({"$ref": f"{BASE_URI}#/{schema_pointer}"},
                                     registry=REGISTRY)
    errors = sorted(validator.iter_errors(value), key=str)
    assert not errors, f"answer does not match the OpenAPI document ({schema_pointer}): " \
        f"{errors[0].message} at {list(errors[0].absolute_path)}\n{json.dumps(value)[:2000]}"


def operation(method: str, path: str) -> str:
    """The document's template for `path` (a request path without the query)."""
    for pattern, template in TEMPLATES:
        if pattern.match(path) and method.lower() in DOCUMENT["paths"][template]:
            return template
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def admin_url(broker: BrokerProcess) -> str:
    """Where `broker` serves its admin API (it logs the port it was given)."""
    found = re.search(r"admin API listening on (http://\S+/)", broker.wait_for_log(
        "admin API listening on", timeout=15))
    assert found is not None
    return found.group(1).rstrip("/")


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class AdminClient:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: Any = None, headers: dict[str, str] | None = None,
             raw_body: bytes | None = None, expect: int | None = 200) -> Answer:
        template = operation(method, path)
        url = self.base + urllib.parse.quote(path) + (
            "?" + urllib.parse.urlencode(query) if query else "")
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, error.headers, error.read())
        if expect is not None:
            assert answer.status == expect, (answer.status, answer.body[:500])
        self._check(method, template, answer)
        return answer

    def _check(self, method: str, template: str, answer: Answer) -> None:
        responses = DOCUMENT["paths"][template][method.lower()]["responses"]
        assert str(answer.status) in responses, \
            f"{method} {template}: status {answer.status} is not documented"
        content_type = answer.headers.get("Content-Type", "").split(";")[0]
        documented = responses[str(answer.status)].get("content", {})
        assert content_type in documented, \
            f"{method} {template} {answer.status}: {content_type} is not documented"
        if content_type == "application/json":
            validate(_pointer("paths", template, method.lower(), "responses",
                              str(answer.status), "content", "application/json", "schema"),
                     answer.json())

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query or None).json()

    def pages(self, path: str, **query: Any) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list, following `next`."""
        cursor = None
        while True:
            page = self.get(path, **query, **({"cursor": cursor} if cursor is not None else {}))
            yield page["entries"]
            cursor = page["next"]
            if cursor is None:
                return

    def trace(self, seconds: float, **query: Any) -> Iterator[dict[str, Any]]:
        """The events of a trace stream as they come (each checked against TraceEvent),
        until it ends."""
        url = f"{self.base}/api/v1/trace?" + urllib.parse.urlencode(
            {"seconds": seconds, **query})
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=seconds + 10) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event_name = None
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event_name = line[7:]
                elif line.startswith("data: "):
                    if event_name == "end":
                        return
                    event = json.loads(line[6:])
                    validate(_pointer("components", "schemas", "TraceEvent"), event)
                    yield event


def wait_until(condition: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """The first truthy value of `condition()` within `timeout`, else a failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)
