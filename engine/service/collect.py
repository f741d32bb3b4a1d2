"""Segment-compatible collection: ``POST /v1/batch``, ``/v1/track``, ``/v1/identify``,
``/v1/group``, ``/v1/alias``, ``/v1/page``, ``/v1/screen`` (and analytics.js's short forms
``/v1/b``, ``/v1/t``, ``/v1/i``, ``/v1/g``, ``/v1/a``, ``/v1/p``, ``/v1/s``), with CORS
for browsers.

- Auth: HTTP Basic with the write key as user name and an empty password, or the key in the
  body's ``writeKey`` (as Segment allows). Any ``ingest`` or ``admin`` key. 401 without one.
- Bodies may be gzipped (``Content-Encoding: gzip``; RudderStack's SDK always does).
- Limits as Segment's: 32 KB per message, 500 KB per batch request (after decompression);
  413 beyond.
- A single-message call with a bad message: 400 with the reason. A batch is accepted with
  its good messages and its bad ones dropped, as Segment does; the response lists what was
  dropped (``rejected``: index and reason) and the bad messages are kept in the ``rejected``
  table. Bad JSON, a body that is not an object, or ``batch`` that is not a list: 400.
- Accepted messages are durable before the 200 and go through ``Runner.ingest`` (see
  :mod:`engine.service.inbox`): a repeated ``messageId`` is ignored, so a client retrying a
  batch never stores anything twice.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.problems import describe_json
from engine.segment import parse_message
from engine.service.http import HttpError, json_response, parse_json, read_body
from engine.service.inbox import with_message_id
from engine.service.state import service_of

MESSAGE_LIMIT = 32 * 1024
BATCH_LIMIT = 500 * 1024
KINDS = ("track", "identify", "group", "alias", "page", "screen")


def segment_error(error: HttpError) -> Response:
    response = json_response(
        {"success": False, "code": error.code, "message": error.message}, error.status
    )
    if error.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def normalise(message: Any) -> Any:
    """RudderStack's SDK sends identify traits in ``context.traits`` only (the Segment spec
    allows both places): use them when the message has no ``traits`` of its own."""
    if (
        isinstance(message, dict)
        and message.get("type") == "identify"
        and message.get("traits") is None
    ):
        context = message.get("context")
        if (
            message["type"] == "identify"
            and isinstance(context, dict)
            and isinstance(context.get("traits"), dict)
        ):
            message["traits"] = context["traits"]
    return message


def device_clock(message: Any) -> Any:
    """Segment's reading of what its SDKs send (analytics.js, the mobile libraries): the
    device's time of the call in ``timestamp`` beside the device's ``sentAt`` is the
    spec's ``originalTimestamp``, and the moment kept is corrected for the device's clock
    (receivedAt - (sentAt - originalTimestamp)). A message that has an
    ``originalTimestamp`` already (RudderStack, an export) keeps its ``timestamp``."""
    if (
        isinstance(message, dict)
        and message.get("sentAt") is not None
        and message.get("timestamp") is not None
        and message.get("originalTimestamp") is None
    ):
        message["originalTimestamp"] = message.pop("timestamp")
    return message


def _check(message: Any, service_now: Any, index: int) -> str | None:
    """Why the message cannot be taken, or None."""
    if not isinstance(message, dict):
        return f"expected a message object, found {describe_json(message)}"
    size = len(orjson.dumps(message))
    if size > MESSAGE_LIMIT:
        return f"message is {size} bytes; the limit is 32 KB"
    try:
        parse_message(message, service_now, index)
    except ValueError as exc:
        return str(exc)
    return None


async def _collect(request: Request, kind: str | None) -> Response:
    service = service_of(request)
    try:
        header_key = None
        if request.headers.get("authorization") or request.headers.get("api-key"):
            header_key = await service.authorize(request, "ingest")
        body = await read_body(request, BATCH_LIMIT if kind is None else MESSAGE_LIMIT)
        data = parse_json(body)
        if not isinstance(data, dict):
            raise HttpError(
                400, "invalid_request", f"expected a JSON object, found {describe_json(data)}"
            )
        if header_key is None:
            await service.authorize(request, "ingest", data.get("writeKey"))
        now = service.clock.now()
        if kind is None:
            batch = data.get("batch")
            if not isinstance(batch, list):
                raise HttpError(400, "invalid_request", "'batch' must be a list of messages")
            context = data.get("context")
            sent_at = data.get("sentAt")  # the batch's, for its messages' clock skew
            good: list[Any] = []
            bad: list[dict[str, Any]] = []
            for index, message in enumerate(batch):
                if isinstance(message, dict) and isinstance(context, dict):
                    message.setdefault("context", context)
                if isinstance(message, dict) and sent_at is not None:
                    message.setdefault("sentAt", sent_at)
                message = device_clock(normalise(message))
                reason = _check(message, now, index + 1)
                if reason is None:
                    good.append(with_message_id(message))
                else:
                    bad.append({"index": index, "reason": reason, "message": message})
            source = "http /v1/batch"
        else:
            data.pop("writeKey", None)
            data["type"] = kind
            data = device_clock(normalise(data))
            reason = _check(data, now, 1)
            good = [] if reason else [with_message_id(data)]
            bad = [{"index": 0, "reason": reason, "message": data}] if reason else []
            source = f"http /v1/{kind}"
        if good or bad:
            rejected = [
                {
                    "line": b["index"] + 1,
                    "raw": orjson.dumps(b["message"]).decode(),
                    "reason": f"{source} #{b['index'] + 1}: {b['reason']}",
                }
                for b in bad
            ]
            service.admit()
            await service.blocking(service.inbox.put, good, source, rejected)
            service.accepted_messages(source, len(good))
        if kind is not None and bad:
            raise HttpError(400, "invalid_request", bad[0]["reason"])
    except HttpError as error:
        return segment_error(error)
    answer: dict[str, Any] = {"success": True}
    if bad:
        answer["rejected"] = [{"index": b["index"], "reason": b["reason"]} for b in bad]
    return json_response(answer)


async def batch(request: Request) -> Response:
    return await _collect(request, None)


def _single(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _collect(request, kind)

    endpoint.__name__ = f"segment_{kind}"
    endpoint.__doc__ = f"Segment {kind} call."
    return endpoint


routes = [
    Route("/v1/batch", batch, methods=["POST"]),
    Route("/v1/import", batch, methods=["POST"]),
    *(Route(f"/v1/{kind}", _single(kind), methods=["POST"]) for kind in KINDS),
    # analytics.js (analytics-next) posts to the type's first letter, and batches to /b
    Route("/v1/b", batch, methods=["POST"], include_in_schema=False),
    *(
        Route(f"/v1/{kind[0]}", _single(kind), methods=["POST"], include_in_schema=False)
        for kind in KINDS
    ),
]


class BrowserCollection(CORSMiddleware):
    """Cross-origin calls to the collection endpoints (``/v1/...``), as a shop's pages make
    them with analytics.js or RudderStack's JavaScript SDK: the browser's preflight is
    answered and every answer names any origin, as Segment's own API does. A write key
    is public in a page anyway (it can only add events). The rest of the service (the
    Brevo API, admin calls, which take admin keys) gets no CORS headers, so a browser
    never hands their answers to another site's script."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            app,
            allow_origins=["*"],
            allow_methods=["POST"],
            allow_headers=["authorization", "content-type", "content-encoding"],
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await super().__call__(scope, receive, send)
        else:
            await self.app(scope, receive, send)
