"""The ASGI app: ``create_app(url)`` for ``leadflow serve``, tests and embedding.

from engine.service.app import create_app
app = create_app("sqlite:///leads.db")      # any ASGI server: uvicorn engine...
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.clock import Clock
from engine.service import admin, brevo, collect, links
from engine.service.http import json_response
from engine.service.openapi import docs_page, openapi_spec
from engine.service.state import Service
from engine.store.db import open_engine
from engine.templates import TemplateCatalog

log = logging.getLogger("leadflow.service")


class Counting:
    """Counts requests by route and status for /metrics (a plain ASGI middleware)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            with self.service.counter_lock:
                self.service.requests[(name, status)] += 1


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_response({"code": "not_found", "message": f"no such path {request.url.path}"}, 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    message = f"{request.method} is not allowed on {request.url.path}"
    return json_response({"code": "method_not_allowed", "message": message}, 405)


async def _crashed(request: Request, exc: Exception) -> Response:
    log.exception("request %s %s failed", request.method, request.url.path, exc_info=exc)
    message = "internal error; the request was not completed"
    return json_response({"code": "internal_error", "message": message}, 500)


def create_app(
    url: str | None = None,
    clock: Clock | None = None,
    engine: Engine | None = None,
    apply: bool = True,
    templates: TemplateCatalog | None = None,
) -> Starlette:
    """The service on a store. ``apply=False`` leaves the inbox for another process;
    ``templates``: your own email templates beside the shipped ones."""
    owned = engine is None
    engine = engine or open_engine(url)
    service = Service(engine, clock, apply=apply, templates=templates)
    spec: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        """This document."""
        return json_response(spec)

    async def docs(request: Request) -> Response:
        """A page listing every operation."""
        return HTMLResponse(docs_page(spec))

    routes = [
        *collect.routes,
        *brevo.routes,
        *admin.routes,
        *links.routes,
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
    ]
    spec.update(openapi_spec(routes))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()
            if owned:
                engine.dispose()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_allowed, Exception: _crashed},
    )
    app.state.service = service
    app.add_middleware(Counting, service=service)
    app.add_middleware(collect.BrowserCollection)
    return app
