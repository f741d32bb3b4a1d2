"""Signed tokens for the links in emails: unsubscribe and double opt-in confirmation.

A token is ``v1.<payload>.<signature>``: the payload is base64url JSON (purpose, contact,
issue time, source) and the signature an HMAC-SHA256 over it with the store's secret
(:func:`engine.messaging.settings.secret`). Nothing is stored per token; a token cannot be
forged or moved to another contact, and a changed secret invalidates every link.

The HTTP service serves the links at :data:`UNSUBSCRIBE_PATH` and :data:`CONFIRM_PATH`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from engine.errors import LeadflowError

UNSUBSCRIBE_PATH = "/unsubscribe/{token}"
"""GET shows or performs the unsubscribe; POST with ``List-Unsubscribe=One-Click`` (RFC 8058)
performs it."""
CONFIRM_PATH = "/confirm/{token}"
"""GET confirms a double opt-in subscription."""

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"
_PURPOSES = {UNSUBSCRIBE: "u", CONFIRM: "c"}
_NAMES = {v: k for k, v in _PURPOSES.items()}


class InvalidToken(LeadflowError):
    """A link token that is malformed, forged, for another purpose, or expired."""


@dataclass(frozen=True, slots=True)
class Token:
    purpose: str
    contact_id: str
    issued_at: datetime
    source: str
    signature: str
    """Base64url signature: a stable reference to this token (consent proofs keep it)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    # hmac.digest: the same bytes as hmac.new(...).digest(), in one C call (half of a
    # short email's rendering time went to building the HMAC object)
    return _b64(hmac.digest(secret, f"v1.{payload}".encode(), "sha256")[:18])


def make_token(
    secret: bytes, purpose: str, contact_id: str, issued_at: datetime, source: str = ""
) -> str:
    body = {"p": _PURPOSES[purpose], "c": contact_id, "t": int(issued_at.timestamp())}
    if source:
        body["s"] = source
    payload = _b64(orjson.dumps(body))
    return f"v1.{payload}.{_sign(secret, payload)}"


def read_token(secret: bytes, token: str, purpose: str) -> Token:
    """Check the signature and purpose; raises :class:`InvalidToken` with the reason."""
    parts = token.strip().split(".") if isinstance(token, str) else []
    if len(parts) != 3 or parts[0] != "v1":
        raise InvalidToken("the link is not a Leadflow link (malformed token)")
    _, payload, signature = parts
    if not hmac.compare_digest(_sign(secret, payload), signature):
        raise InvalidToken("the link's signature does not match (altered or foreign link)")
    try:
        body = orjson.loads(_unb64(payload))
        kind = _NAMES[body["p"]]
        contact_id = str(body["c"])
        issued = datetime.fromtimestamp(int(body["t"]), UTC)
        source = str(body.get("s", ""))
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InvalidToken("the link's payload cannot be read") from None
    if kind != purpose:
        raise InvalidToken(f"this is a {kind} link, not a {purpose} link")
    return Token(kind, contact_id, issued, source, signature)


def link(public_url: str, path: str, token: str) -> str:
    return public_url.rstrip("/") + path.format(token=token)
