"""The links in emails: ``/unsubscribe/{token}`` and ``/confirm/{token}`` (no API key; the
signed token is the credential). :mod:`engine.messaging.consent` does the work; these
endpoints are its HTTP face.

- ``GET`` on either link only shows a page with a button: mail security scanners fetch
  every link of an incoming email, and a GET that acted would unsubscribe corporate
  recipients at the first email (with the scanner's address as proof), or confirm a
  double opt-in nobody asked for (RFC 8058, section 4).
- ``POST /unsubscribe/{token}`` unsubscribes and says so (again is harmless): RFC 8058
  one-click (``List-Unsubscribe=One-Click`` in the form body, sent by mailbox providers)
  or the page's button.
- ``POST /confirm/{token}`` (the page's button) confirms a double opt-in subscription and
  stores the proof (time, source, IP, user agent).
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
from engine.store.db import writer


def _page(title: str, text: str, status: int = 200, button: str | None = None) -> Response:
    """A small page; ``button``: a form that POSTs to this same address."""
    form = (
        f"<form method='post'><button type='submit'>{html.escape(button)}</button></form>"
        if button
        else ""
    )
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        "<meta name='robots' content='noindex'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:36em;margin:3em auto;padding:0 1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status)


_ASK = {
    "unsubscribe": ("Unsubscribe?", "You will not get these emails any more.", "Unsubscribe"),
    "confirm": (
        "Confirm your subscription",
        "Press the button to confirm that you want these emails.",
        "Confirm my subscription",
    ),
}


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
    if (
        request.method != "POST"
    ):  # a look (GET or HEAD), by a person or a mail scanner: ask, change nothing
        settings = optional("engine.messaging.settings")

        def check() -> None:
            with writer(service.engine).begin() as connection:  # the secret, made on first use
                tokens.read_token(settings.secret(connection), token, action)

        try:
            await service.blocking(check)
        except tokens.InvalidToken as exc:
            return _page("This link does not work", str(exc), 400)
        title, text, button = _ASK[action]
        return _page(title, text, button=button)
    ip, agent = _client(request)
    method = "link"
    if action == "unsubscribe":
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
    """Unsubscribe by the signed link in an email: GET asks, POST (the page's button, or
    RFC 8058 one-click) unsubscribes."""
    return await _act(request, "unsubscribe")


async def confirm(request: Request) -> Response:
    """Confirm a double opt-in subscription by the signed link in the email: GET asks,
    POST (the page's button) confirms."""
    return await _act(request, "confirm")


routes = [
    Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
    Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
]
