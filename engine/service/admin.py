"""Leadflow's own API under ``/api`` (an ``admin`` key), plus ``/health`` and ``/metrics``.

Errors are ``{"code": ..., "message": ...}``; a workflow that fails validation is 422 with
``problems``, each with its ``file``, JSON ``pointer`` and ``message`` (as ``leadflow
validate`` prints them).
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from engine.api import Leadflow
from engine.errors import DeployConflict, InvalidWorkflow, UnknownContact
from engine.runner import Runner
from engine.service.http import HttpError, json_response, parse_json, read_body
from engine.service.state import Service, service_of
from engine.store.db import writer
from engine.store.tables import (
    RUN_IN_FLIGHT,
    events,
    outbox,
    rejected,
    runs,
    waits,
)
from engine.views import contact_view, deployed_workflows, summary

BODY_LIMIT = 4 * 1024 * 1024


def optional(module: str) -> Any:
    """A module other parts of Leadflow provide, or None while it is not there."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def api_error(error: HttpError, extra: dict[str, Any] | None = None) -> Response:
    return json_response(
        {"code": error.code, "message": error.message, **(extra or {})}, error.status
    )


def _endpoint(handler: Callable[[Request, Service], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        service = service_of(request)
        try:
            await service.authorize(request, "admin")
            if any("\x00" in value for value in request.query_params.values()):
                raise HttpError(400, "invalid_request", "a NUL character in the query")
            result: Response = await handler(request, service)
            return result
        except HttpError as error:
            return api_error(error)
        except UnknownContact as exc:
            return api_error(HttpError(404, "not_found", str(exc)))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


LIMIT_MAX = 2**63 - 1
"""The largest limit a store takes (a 64-bit integer), as ``--limit`` takes on the CLI."""


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > LIMIT_MAX:
        raise HttpError(
            400, "invalid_request", f"limit must be a whole number from 0 to {LIMIT_MAX}"
        )
    return int(text)


def _unavailable(what: str) -> HttpError:
    return HttpError(501, "not_available", f"{what} is not part of this Leadflow build")


def _path_steps(request: Request, skip: int) -> list[str]:
    """The path's steps after the first ``skip`` ones, each decoded on its own: an id may
    hold an encoded slash (``crm%2F42``), which the decoded path can no longer tell from
    a step of the path."""
    raw = request.scope.get("raw_path")
    if raw is None:
        return request.url.path.split("/")[1 + skip :]
    text = raw.split(b"?", 1)[0].decode("ascii", "replace")
    return [urllib.parse.unquote(step) for step in text.split("/")[1 + skip :]]


def _no_path(request: Request) -> HttpError:
    return HttpError(404, "not_found", f"no such path {request.url.path}")


@_endpoint
async def get_contact(request: Request, service: Service) -> Response:
    """One contact: attributes, scores, grades, lists, account, active runs, score history."""
    steps = _path_steps(request, 2)
    if len(steps) == 2 and steps[1] == "explain":
        return await _explain(request, service, steps[0])
    if len(steps) != 1:
        raise _no_path(request)
    return await _contact(service, steps[0])


async def _contact(service: Service, contact_id: str) -> Response:
    def work() -> dict[str, Any]:
        with service.engine.connect() as connection:
            return contact_view(connection, contact_id, history=True)

    return json_response(await service.blocking(work))


@_endpoint
async def explain_contact(request: Request, service: Service) -> Response:
    """Why the contact has each score (``?score=NAME`` for one)."""
    steps = _path_steps(request, 2)
    if len(steps) == 1:  # the contact ``x/explain``, sent as x%2Fexplain
        return await _contact(service, steps[0])
    if len(steps) != 2 or steps[1] != "explain":
        raise _no_path(request)
    return await _explain(request, service, steps[0])


async def _explain(request: Request, service: Service, contact_id: str) -> Response:
    explain = optional("engine.explain")
    if explain is None:
        raise _unavailable("contacts explain")
    score = request.query_params.get("score")

    def work() -> dict[str, Any]:
        with service.engine.connect() as connection:
            result: dict[str, Any] = explain.explain_contact(connection, contact_id, score)
            return result

    return json_response(await service.blocking(work))


@_endpoint
async def get_account(request: Request, service: Service) -> Response:
    """One account: traits, rolled-up scores, members."""
    accounts = optional("engine.accounts_view")
    if accounts is None:
        raise _unavailable("accounts show")
    steps = _path_steps(request, 2)
    if len(steps) != 1:
        raise _no_path(request)
    account_id = steps[0]

    def work() -> dict[str, Any]:
        with service.engine.connect() as connection:
            try:
                result: dict[str, Any] = accounts.account_view(connection, account_id)
            except LookupError as exc:
                raise HttpError(404, "not_found", str(exc)) from None
            return result

    return json_response(await service.blocking(work))


def _workflow_rows(service: Service) -> list[dict[str, Any]]:
    with service.engine.connect() as connection:
        return deployed_workflows(connection)


@_endpoint
async def list_workflows(request: Request, service: Service) -> Response:
    """Deployed workflows and models: newest version, paused or not, active runs."""
    return json_response(await service.blocking(_workflow_rows, service))


@_endpoint
async def deploy_workflows(request: Request, service: Service) -> Response:
    """Validate and deploy one document or a list of them (workflows and models). 201 with
    what was deployed; 422 with the problems (file, pointer, message); 409 when an id and
    version is already deployed with another document."""
    data = parse_json(await read_body(request, BODY_LIMIT))
    documents = data if isinstance(data, list) else [data]
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise HttpError(400, "invalid_request", "expected a workflow document or a list of them")

    def work() -> Response:
        flow = Leadflow(engine=service.engine, clock=service.clock)
        try:
            with service.gate.short():
                results = flow.deploy(documents)
        except InvalidWorkflow as exc:
            problems = [
                p.as_json() if hasattr(p, "as_json") else {"message": str(p)} for p in exc.problems
            ]
            return api_error(
                HttpError(422, "invalid_workflow", f"{len(problems)} problem(s)"),
                {"problems": problems},
            )
        except DeployConflict as exc:
            return api_error(HttpError(409, "conflict", str(exc)))
        service.reload()
        return json_response(
            {
                "deployed": [
                    {"id": r.workflow_id, "version": r.version, "status": r.status} for r in results
                ]
            },
            201,
        )

    result: Response = await service.blocking(work)
    return result


@_endpoint
async def segment(request: Request, service: Service) -> Response:
    """Contacts matching ``where`` (a condition as JSON), ``limit``, ``hashed``, ``score``,
    ``sort`` (e.g. ``score:SCORE``), ``order`` (desc|asc), as ``leadflow segment`` gives."""
    segments = optional("engine.segments")
    if segments is None:
        raise _unavailable("segment export")
    params = request.query_params
    try:
        where = segments.parse_where(params["where"]) if params.get("where") else None
    except ValueError as exc:
        pointer = getattr(exc, "pointer", "")
        error = HttpError(422, "invalid_condition", getattr(exc, "message", str(exc)))
        error.message = f"where: {pointer or '/'}: {error.message}"
        raise error from None
    kwargs: dict[str, Any] = {
        "where": where,
        "limit": _limit(params.get("limit", "1000")),
        "hashed": params.get("hashed", "false").lower() in ("1", "true", "yes"),
        "score": params.get("score", "SCORE"),
        "descending": params.get("order", "desc") != "asc",
    }
    if params.get("sort"):
        subject, _, name = params["sort"].partition(":")
        if subject not in ("score", "grade") or not name:
            raise HttpError(400, "invalid_request", "sort is score:NAME or grade:NAME")
        kwargs["sort"] = segments.Sort(subject, name)

    def work() -> list[dict[str, Any]]:
        query = segments.SegmentQuery(**kwargs)
        with service.engine.connect() as connection:
            return list(segments.select_contacts(connection, query, service.clock.now()))

    records = await service.blocking(work)
    return json_response({"count": len(records), "contacts": records})


@_endpoint
async def list_outbox(request: Request, service: Service) -> Response:
    """Outbox messages (``?status=pending|sent|failed|dead``, ``?limit=``), newest first."""
    status = request.query_params.get("status")
    limit = _limit(request.query_params.get("limit", "100"))

    def work() -> list[dict[str, Any]]:
        query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if status:
            query = query.where(outbox.c.status == status)
        with service.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    rows = await service.blocking(work)
    return json_response({"count": len(rows), "messages": rows})


@_endpoint
async def retry_outbox(request: Request, service: Service) -> Response:
    """Re-queue an outbox message now, with a fresh dead-letter budget (as ``leadflow
    outbox retry``); 404 when there is no such message or it is being sent right now."""
    delivery = optional("engine.messaging.delivery")
    requeue = getattr(delivery, "requeue", None) if delivery else None
    if requeue is None:
        raise _unavailable("outbox retry")
    message_id = int(request.path_params["message_id"])

    def work() -> bool:
        with service.gate.short(), writer(service.engine).begin() as connection:
            return bool(requeue(connection, message_id, service.clock.now()))

    if not await service.blocking(work):
        raise HttpError(
            404, "not_found", f"no outbox message {message_id}, or it is being sent right now"
        )
    return json_response({"id": message_id, "status": "pending"})


@_endpoint
async def report(request: Request, service: Service) -> Response:
    """Everything ``simulate --json`` prints, for this store: contacts, accounts, messages,
    rejected input."""

    def work() -> dict[str, Any]:
        with service.engine.connect() as connection:
            return summary(connection)

    return json_response(await service.blocking(work))


@_endpoint
async def inbox_status(request: Request, service: Service) -> Response:
    """Accepted HTTP messages not applied yet."""
    rows, messages = await service.blocking(service.inbox.pending)
    return json_response({"rows": rows, "messages": messages})


@_endpoint
async def inbox_apply(request: Request, service: Service) -> Response:
    """Apply the inbox now and report what was taken, deduplicated and rejected."""
    runner_report = await service.blocking(_apply_now, service)
    return json_response(runner_report)


def _apply_now(service: Service) -> dict[str, int]:
    report = service.inbox.apply_all(Runner(service.engine, service.clock, service.templates))
    return {"taken": report.taken, "duplicates": report.duplicates, "rejected": report.rejected}


# --- health and metrics ----------------------------------------------------------------


async def health(request: Request) -> Response:
    """Liveness and the store's reachability (no key needed)."""
    service = service_of(request)

    def work() -> bool:
        with service.engine.connect() as connection:
            connection.scalar(select(1))
        return True

    try:
        await service.blocking(work)
    except Exception as exc:
        return json_response({"status": "unavailable", "store": repr(exc)[:300]}, 503)
    pending = None
    if service.applier is not None:
        pending = service.applier.failures
    return json_response({"status": "ok", "store": "ok", "apply_failures": pending})


def _gauge(lines: list[str], name: str, help_text: str, value: float, kind: str = "gauge") -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"{name} {value:g}")


def metrics_text(service: Service) -> str:
    now = service.clock.now()
    lines: list[str] = []
    pending_rows, pending_messages = service.inbox.pending()
    with service.engine.connect() as connection:
        taken = connection.scalar(select(func.count()).select_from(events)) or 0
        refused = connection.scalar(select(func.count()).select_from(rejected)) or 0
        run_states: dict[str, int] = dict(
            connection.execute(
                select(runs.c.state, func.count()).where(RUN_IN_FLIGHT).group_by(runs.c.state)
            ).all()
        )
        due = (
            connection.scalar(select(func.count()).select_from(waits).where(waits.c.due_at <= now))
            or 0
        )
        by_status: dict[str, int] = dict(
            connection.execute(
                select(outbox.c.status, func.count()).group_by(outbox.c.status)
            ).all()
        )
        latencies: list[float] = []
        if "sent_at" in outbox.c:
            recent = connection.execute(
                select(outbox.c.created_at, outbox.c.sent_at)
                .where(outbox.c.sent_at.is_not(None))
                .order_by(outbox.c.sent_at.desc())
                .limit(1000)
            )
            latencies = sorted(
                max(0.0, (sent - created).total_seconds()) for created, sent in recent
            )
    _gauge(lines, "leadflow_events_taken_total", "Events stored (after dedupe).", taken, "counter")
    _gauge(
        lines, "leadflow_rejected_total", "Input messages rejected and kept.", refused, "counter"
    )
    lines.append("# HELP leadflow_runs_active Workflow runs not ended, by state.")
    lines.append("# TYPE leadflow_runs_active gauge")
    for state in ("active", "waiting"):
        lines.append(f'leadflow_runs_active{{state="{state}"}} {int(run_states.get(state, 0))}')
    _gauge(lines, "leadflow_waits_due", "Waits whose moment has come.", due)
    _gauge(
        lines,
        "leadflow_outbox_pending",
        "Outbox messages waiting to be delivered.",
        by_status.get("pending", 0),
    )
    lines.append("# HELP leadflow_outbox_messages Outbox messages by status.")
    lines.append("# TYPE leadflow_outbox_messages gauge")
    for status, count in sorted(by_status.items()):
        lines.append(f'leadflow_outbox_messages{{status="{status}"}} {int(count)}')
    _gauge(
        lines,
        "leadflow_inbox_messages",
        "Accepted HTTP messages not applied yet.",
        pending_messages,
    )
    _gauge(lines, "leadflow_inbox_rows", "Accepted HTTP requests not applied yet.", pending_rows)
    lines.append(
        "# HELP leadflow_delivery_latency_seconds From outbox row to sent, last 1000 sent."
    )
    lines.append("# TYPE leadflow_delivery_latency_seconds summary")
    for q in (0.5, 0.9, 0.99):
        value = latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
        lines.append(f'leadflow_delivery_latency_seconds{{quantile="{q}"}} {value:g}')
    lines.append(f"leadflow_delivery_latency_seconds_sum {sum(latencies):g}")
    lines.append(f"leadflow_delivery_latency_seconds_count {len(latencies)}")
    with service.counter_lock:
        accepted = service.accepted
        requests = sorted(service.requests.items())
    _gauge(
        lines,
        "leadflow_http_messages_accepted_total",
        "Messages accepted over HTTP by this process.",
        accepted,
        "counter",
    )
    lines.append("# HELP leadflow_http_requests_total HTTP requests by route and status.")
    lines.append("# TYPE leadflow_http_requests_total counter")
    for (route, code), count in requests:
        lines.append(f'leadflow_http_requests_total{{route="{route}",status="{code}"}} {count}')
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    """Prometheus text format (no key needed)."""
    service = service_of(request)
    text = await service.blocking(metrics_text, service)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    # ids may hold an encoded slash: the endpoints read them from the raw path
    Route("/api/contacts/{contact_id:path}/explain", explain_contact, methods=["GET"]),
    Route("/api/contacts/{contact_id:path}", get_contact, methods=["GET"]),
    Route("/api/accounts/{account_id:path}", get_account, methods=["GET"]),
    Route("/api/workflows", list_workflows, methods=["GET"]),
    Route("/api/workflows", deploy_workflows, methods=["POST"]),
    Route("/api/segment", segment, methods=["GET"]),
    Route("/api/outbox", list_outbox, methods=["GET"]),
    Route("/api/outbox/{message_id:int}/retry", retry_outbox, methods=["POST"]),
    Route("/api/report", report, methods=["GET"]),
    Route("/api/inbox", inbox_status, methods=["GET"]),
    Route("/api/inbox/apply", inbox_apply, methods=["POST"]),
]
