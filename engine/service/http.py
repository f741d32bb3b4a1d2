"""Request plumbing shared by the endpoints: bounded (and gzip-aware) body reading, JSON
responses, and finding the API key a client presented."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class HttpError(Exception):
    """An error answer; each API family renders it in its own error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


def _kb(limit: int) -> str:
    return f"{limit // 1024} KB"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when ``Content-Encoding: gzip``; 413 past ``limit``
    bytes (compressed or not), 400 for a broken gzip stream or an unknown encoding."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(
            413, "payload_too_large", f"request body is {length} bytes; the limit is {_kb(limit)}"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip"):
        raise HttpError(
            400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported (gzip)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(
                413, "payload_too_large", f"request body is over the limit of {_kb(limit)}"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding in ("gzip", "x-gzip"):
        body = gunzip(body, limit)
    return body


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes (a small bomb cannot expand past it)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit:
            raise HttpError(
                413,
                "payload_too_large",
                f"decompressed request body is over the limit of {_kb(limit)}",
            )
        if not inflater.eof:
            raise HttpError(400, "invalid_gzip", "gzip body is truncated")
    except zlib.error as exc:
        raise HttpError(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None
    return out


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise HttpError(400, "invalid_json", "request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def presented_key(request: Request) -> str | None:
    """A key from ``api-key`` (Brevo), ``Authorization: Basic`` (Segment: the key is the
    user name) or ``Authorization: Bearer``."""
    key = request.headers.get("api-key")
    if key:
        return key.strip()
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None
