"""The links in emails: ``/unsubscribe/{token}`` and ``/confirm/{token}`` (no API key; the
signed token is the credential). :mod:`engine.messaging.consent` does the work; these
endpoints are its HTTP face.

- ``GET /unsubscribe/{token}``: unsubscribes and says so in a small page (clicking again is
  harmless). ``POST`` does the same: RFC 8058 one-click (``List-Unsubscribe=One-Click`` in
  the form body, sent by mailbox providers) or the page's own button.
- ``GET /confirm/{token}`` (or ``POST``): confirms a double opt-in subscription and stores
  the proof (time, source, IP, user agent).
- A bad, forged or expired link: 400 with the reason.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from engine.service.admin import optional
from engine.service.state import Service, service_of


def _page(title: str, text: str, status: int = 200) -> Response:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:36em;margin:3em auto;padding:0 1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _client(request: Request) -> tuple[str | None, str | None]:
    host = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        host = forwarded.split(",")[0].strip() or host
    return host, request.headers.get("user-agent")


async def _act(request: Request, action: str) -> Response:
    service: Service = service_of(request)
    consent = optional("engine.messaging.consent")
    tokens = optional("engine.messaging.tokens")
    if consent is None or tokens is None:
        return _page("Not available", "This Leadflow build does not handle email links.", 501)
    token = request.path_params["token"]
    ip, agent = _client(request)
    method = "link"
    if request.method == "POST" and action == "unsubscribe":
        form = (await request.body()).decode("utf-8", "replace")
        method = "one-click" if "List-Unsubscribe=One-Click" in form else "link"

    def work() -> Any:
        with service.runner() as runner:
            if action == "unsubscribe":
                return consent.unsubscribe(runner, token, ip=ip, user_agent=agent, method=method)
            return consent.confirm(runner, token, ip=ip, user_agent=agent)

    try:
        result = await service.blocking(work)
    except tokens.InvalidToken as exc:
        return _page("This link does not work", str(exc), 400)
    if action == "unsubscribe":
        return _page(
            "You are unsubscribed",
            "You will not get these emails any more."
            if not result.already
            else "You were already unsubscribed; nothing changed.",
        )
    return _page(
        "Subscription confirmed",
        "Thank you: your subscription is confirmed."
        if not result.already
        else "Your subscription was already confirmed.",
    )


async def unsubscribe(request: Request) -> Response:
    """Unsubscribe by the signed link in an email (GET, or POST for RFC 8058 one-click)."""
    return await _act(request, "unsubscribe")


async def confirm(request: Request) -> Response:
    """Confirm a double opt-in subscription by the signed link in the email."""
    return await _act(request, "confirm")


routes = [
    Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
    Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
]
