"""A Brevo-compatible subset under ``/v3``, so code written against Brevo's API moves over by
changing the host: events, contacts (create, read, update) and lists.

- Auth: the ``api-key`` header. ``POST /v3/events`` takes an ``ingest`` key; the contact
  and list calls need ``admin``.
- Errors: ``{"code": ..., "message": ...}`` with Brevo's codes (``unauthorized``,
  ``permission_denied``, ``bad_request``, ``invalid_parameter``, ``missing_parameter``,
  ``duplicate_parameter``, ``document_not_found``).
- Contacts are Leadflow contacts: one created with an email is the contact whose id is that
  email in lower case (so Segment ``userId``\\ s and Brevo emails meet); with only an
  ``ext_id``, the ext id; with only ``attributes.SMS``, the number. Brevo's numeric contact
  ids and list ids are allocated on first need (:mod:`engine.service.directory`).
- Attribute and list changes go through :meth:`engine.runner.Runner.update_contacts`:
  audited, and triggers (``attribute_changed``, ``list_added``, ...) fire. Events go through
  the inbox and ``Runner.ingest``, as Segment messages do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.clock import ensure_utc, parse_timestamp
from engine.problems import describe_json
from engine.runner import ContactUpdate
from engine.segment import MAX_ID, MAX_NAME, nul_pointer
from engine.service import directory
from engine.service.http import HttpError, json_response, parse_json, read_body
from engine.service.inbox import with_message_id
from engine.service.state import Service, service_of
from engine.store.db import writer
from engine.store.order import by_code_point
from engine.store.tables import contact_numbers, contacts, list_members, lists, outbox
from engine.views import contact_views

BODY_LIMIT = 1024 * 1024
MAX_LIST_CHANGE = 150
"""Brevo's limit on contacts per list add or remove call."""
IDENTIFIER_TYPES = (
    "email_id",
    "contact_id",
    "ext_id",
    "phone_id",
    "whatsapp_id",
    "landline_number_id",
)
_BREVO_CODES = {
    "invalid_json": "bad_request",
    "invalid_gzip": "bad_request",
    "unsupported_encoding": "bad_request",
    "payload_too_large": "bad_request",
    "invalid_request": "bad_request",
}


def brevo_error(error: HttpError) -> Response:
    code = _BREVO_CODES.get(error.code, error.code)
    return json_response({"code": code, "message": error.message}, error.status)


def _endpoint(
    scope: str,
) -> Callable[[Callable[[Request, Service], Any]], Callable[[Request], Any]]:
    """Authorise, run, and render :class:`HttpError` the Brevo way."""

    def wrap(handler: Callable[[Request, Service], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            service = service_of(request)
            try:
                if request.headers.get("api-key") is None:
                    raise HttpError(401, "unauthorized", "Key not found")
                await service.authorize(request, scope)
                result: Response = await handler(request, service)
                return result
            except HttpError as error:
                return brevo_error(error)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


LARGEST_ID = 2**31 - 1
"""The largest contact number, list id and folder id a store keeps: their columns are
INTEGER, 32 bits on PostgreSQL (a larger number there is an "integer out of range")."""


def _number(text: str) -> int | None:
    """The id a path or query gives in ASCII digits, or None (``'²'.isdigit()`` is true, and
    int() refuses it)."""
    return int(text) if text.isascii() and text.isdigit() else None


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object, refused whole if a text in it holds a NUL character, as /v1 does:
    no store keeps one (PostgreSQL refuses it, and an event's would be rejected later,
    after a 204 that promised it would be applied)."""
    data = parse_json(await read_body(request, BODY_LIMIT))
    if not isinstance(data, dict):
        raise HttpError(400, "bad_request", "the body must be a JSON object")
    where = nul_pointer(data)
    if where is not None:
        raise HttpError(400, "invalid_parameter", f"{where or '/'}: a NUL character in the text")
    return data


def _text(
    data: Mapping[str, Any], key: str, required: bool = False, longest: int = MAX_ID
) -> str | None:
    """A non-empty string of at most ``longest`` characters (the store's column)."""
    value = data.get(key)
    if value is None:
        if required:
            raise HttpError(400, "missing_parameter", f"{key} is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, "invalid_parameter", f"{key} must be a non-empty string")
    if len(value.strip()) > longest:
        raise HttpError(400, "invalid_parameter", f"{key} is longer than {longest} characters")
    return value.strip()


def _mapping(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HttpError(400, "invalid_parameter", f"{key} must be an object")
    return dict(value)


def _int_list(data: Mapping[str, Any], key: str) -> list[int]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= LARGEST_ID for v in value
    ):
        raise HttpError(400, "invalid_parameter", f"{key} must be a list of list ids")
    return list(value)


def _list_id(request: Request) -> int:
    """The list id in the path; one past what a store keeps names no list (PostgreSQL
    would refuse the number with a 500)."""
    list_id = int(request.path_params["list_id"])
    if not 0 <= list_id <= LARGEST_ID:
        raise HttpError(404, "document_not_found", "List ID does not exist")
    return list_id


def _email(value: str) -> str:
    if "@" not in value or value.startswith("@") or value.endswith("@"):
        raise HttpError(400, "invalid_parameter", f"Invalid email address {value!r}")
    return value.strip().lower()


def _bool(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise HttpError(400, "invalid_parameter", f"{key} must be true or false")
    return value


def _timestamp(moment: datetime) -> str:
    """Brevo's form: ``2026-01-05T10:00:00.000Z``."""
    moment = ensure_utc(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- finding contacts ----------------------------------------------------------------


def resolve(connection: Connection, identifier: str, kind: str | None = None) -> str | None:
    """The live contact an identifier names (email, numeric id, ext id, phone), or None."""
    if kind is not None and kind not in IDENTIFIER_TYPES:
        raise HttpError(
            400,
            "invalid_parameter",
            f"identifierType must be one of {', '.join(IDENTIFIER_TYPES)}",
        )
    found: str | None = None
    number = _number(identifier)
    if kind == "contact_id" or (kind is None and number is not None):
        if number is None:
            raise HttpError(400, "invalid_parameter", "a contact_id is a number")
        if number <= LARGEST_ID:
            found = directory.contact_by_number(connection, number)
        if found is None and kind is None:
            found = directory.live_contact(connection, identifier)
    elif kind == "email_id" or (kind is None and "@" in identifier):
        found = directory.live_contact(connection, identifier) or directory.live_contact(
            connection, identifier.strip().lower()
        )
    elif kind == "ext_id":
        found = directory.contact_by_ext_id(connection, identifier)
    elif kind is not None:
        found = directory.live_contact(connection, identifier)
    else:
        found = directory.live_contact(connection, identifier) or directory.contact_by_ext_id(
            connection, identifier
        )
    return None if found is None else directory.live_contact(connection, found)


def _find(service: Service, identifier: str, kind: str | None) -> str:
    if "\x00" in identifier or len(identifier) > MAX_ID:  # no contact has such an id
        raise HttpError(404, "document_not_found", "Contact does not exist")
    with service.engine.connect() as connection:
        found = resolve(connection, identifier, kind)
    if found is None:
        raise HttpError(404, "document_not_found", "Contact does not exist")
    return found


def _list_names(service: Service, ids: list[int], status: int = 400) -> dict[int, str]:
    if not ids:
        return {}
    with service.engine.connect() as connection:
        names = directory.list_names(connection, ids)
    missing = [i for i in ids if i not in names]
    if missing:
        if status == 404:
            raise HttpError(404, "document_not_found", "List ID does not exist")
        raise HttpError(400, "invalid_parameter", f"List ID does not exist: {missing[0]}")
    return names


# --- consent (engine.messaging owns it; used when it is there) -------------------------


def _consent() -> Any:
    try:
        return importlib.import_module("engine.messaging.consent")
    except ImportError:
        return None


def _flag(value: Any) -> bool:
    consent = _consent()
    if consent is not None and hasattr(consent, "flag"):
        return consent.flag(value) is True
    return value is True


def _blacklisted(attributes: Mapping[str, Any], channel: str) -> bool:
    """As :mod:`engine.messaging.consent` decides: unsubscribed (``UNSUBSCRIBED``) or
    Brevo's ``emailBlacklisted`` / ``smsBlacklisted`` attribute."""
    own = "emailBlacklisted" if channel == "email" else "smsBlacklisted"
    return _flag(attributes.get("UNSUBSCRIBED")) or _flag(attributes.get(own))


# --- contacts ----------------------------------------------------------------------------


def contact_document(service: Service, contact_id: str) -> dict[str, Any]:
    """GET /v3/contacts/{identifier}: Brevo's contact, with the ``statistics`` object its
    SDKs expect (messages Leadflow sent are listed as sent and delivered)."""
    now = service.clock.now()

    def read(connection: Connection) -> tuple[Any, dict[str, Any], int | None, dict[str, int]]:
        row = connection.execute(select(contacts).where(contacts.c.id == contact_id)).one()
        view = contact_views(connection, [contact_id])[contact_id]
        number = connection.scalar(
            select(contact_numbers.c.number).where(contact_numbers.c.contact_id == contact_id)
        )
        ids = {
            str(name): int(number)
            for name, number in connection.execute(
                select(lists.c.name, lists.c.id).where(lists.c.name.in_(view["lists"]))
            )
        }
        return row, view, number, ids

    with service.engine.connect() as connection:
        row, view, number, ids = read(connection)
    if number is None or len(ids) < len(view["lists"]):
        with service.gate.short(), writer(service.engine).begin() as connection:
            directory.number_of(connection, contact_id, now)
            directory.list_ids(connection, view["lists"], now)
        with service.engine.connect() as connection:
            row, view, number, ids = read(connection)
    with service.engine.connect() as connection:
        ext_id = directory.ext_id_of(connection, contact_id)
        sent = [
            {"campaignId": int(r.id), "eventTime": _timestamp(r.sent_at)}
            for r in connection.execute(
                select(outbox.c.id, outbox.c.sent_at)
                .where(
                    outbox.c.contact_id == contact_id,
                    outbox.c.channel == "email",
                    outbox.c.sent_at.is_not(None),
                )
                .order_by(outbox.c.id)
                .limit(1000)
            )
        ]
    attributes = dict(view["attributes"])
    if ext_id is not None:
        attributes.setdefault("EXT_ID", ext_id)
    email = contact_id if "@" in contact_id else attributes.get("email") or attributes.get("EMAIL")
    return {
        "email": email,
        "id": number,
        "emailBlacklisted": _blacklisted(view["attributes"], "email"),
        "smsBlacklisted": _blacklisted(view["attributes"], "sms"),
        "whatsappBlacklisted": False,
        "createdAt": _timestamp(row.created_at),
        "modifiedAt": _timestamp(row.updated_at),
        "attributes": attributes,
        "listIds": sorted(ids[name] for name in view["lists"] if name in ids),
        "listUnsubscribed": [],
        "statistics": {
            "messagesSent": sent,
            "delivered": sent,
            "hardBounces": [],
            "softBounces": [],
            "complaints": [],
            "unsubscriptions": {"userUnsubscription": [], "adminUnsubscription": []},
            "opened": [],
            "clicked": [],
            "transacAttributes": [],
        },
        # Leadflow's own view, beside Brevo's fields
        "scores": view["scores"],
        "grades": view["grades"],
    }


def _apply(service: Service, changes: Mapping[str, ContactUpdate], cause: str) -> set[str]:
    with service.runner() as runner:
        return runner.update_contacts(changes, service.clock.now(), cause)


def _after_write(service: Service, contact_id: str, ext_id: str | None) -> int:
    """Number (and ext id) of a contact just written; 400 when the ext id is taken."""
    now = service.clock.now()
    try:
        with service.gate.short(), writer(service.engine).begin() as connection:
            number = directory.number_of(connection, contact_id, now)
            if ext_id is not None:
                directory.set_ext_id(connection, contact_id, ext_id, now)
    except IntegrityError:
        raise HttpError(
            400, "duplicate_parameter", "ext_id is already associated with another Contact"
        ) from None
    return number


def _flags(data: Mapping[str, Any]) -> dict[str, bool]:
    """Brevo's blacklist flags, kept as attributes of those names (consent reads them)."""
    flags = {}
    for key in ("emailBlacklisted", "smsBlacklisted"):
        value = _bool(data, key)
        if value is not None:
            flags[key] = value
    return flags


@_endpoint("admin")
async def create_contact(request: Request, service: Service) -> Response:
    """Create a contact (201 with its id), or update it with updateEnabled (204)."""
    data = await _body(request)
    email = _text(data, "email")
    ext_id = _text(data, "ext_id") or _text(data, "extId")
    attributes = _mapping(data, "attributes")
    list_ids = _int_list(data, "listIds")
    update_enabled = bool(_bool(data, "updateEnabled"))
    attributes.update(_flags(data))
    sms = attributes.get("SMS")
    if email is not None:
        contact_id = _email(email)
    elif ext_id is not None:
        contact_id = ext_id
    elif isinstance(sms, str | int) and str(sms).strip():
        contact_id = str(sms).strip()
    else:
        raise HttpError(
            400,
            "missing_parameter",
            "Unable to create contact, email, SMS or ext_id is mandatory",
        )
    names = await service.blocking(_list_names, service, list_ids)

    def work() -> Response:
        with service.engine.connect() as connection:
            existing = directory.live_contact(connection, contact_id)
            if existing is None and ext_id is not None:
                existing = directory.contact_by_ext_id(connection, ext_id)
        if existing is not None and not update_enabled:
            raise HttpError(
                400,
                "duplicate_parameter",
                "Unable to create contact, email is already associated with another Contact",
            )
        target = existing or contact_id
        change = ContactUpdate(attributes=attributes, add_lists=tuple(names[i] for i in list_ids))
        _apply(service, {target: change}, "brevo POST /v3/contacts")
        number = _after_write(service, target, ext_id)
        if existing is not None:
            return Response(status_code=204)
        return json_response({"id": number}, 201)

    result: Response = await service.blocking(work)
    return result


@_endpoint("admin")
async def get_contact(request: Request, service: Service) -> Response:
    """A contact by email, numeric id or ext id (``identifierType`` to say which)."""
    identifier = request.path_params["identifier"]
    kind = request.query_params.get("identifierType")

    def work() -> dict[str, Any]:
        return contact_document(service, _find(service, identifier, kind))

    return json_response(await service.blocking(work))


@_endpoint("admin")
async def update_contact(request: Request, service: Service) -> Response:
    """Change attributes, lists (listIds, unlinkListIds), ext_id, emailBlacklisted."""
    identifier = request.path_params["identifier"]
    kind = request.query_params.get("identifierType")
    data = await _body(request)
    attributes = _mapping(data, "attributes")
    add = _int_list(data, "listIds")
    remove = _int_list(data, "unlinkListIds")
    ext_id = _text(data, "ext_id") or _text(data, "extId")
    attributes.update(_flags(data))
    names = await service.blocking(_list_names, service, add + remove)

    def work() -> None:
        contact_id = _find(service, identifier, kind)
        change = ContactUpdate(
            attributes=attributes,
            add_lists=tuple(names[i] for i in add),
            remove_lists=tuple(names[i] for i in remove),
        )
        _apply(service, {contact_id: change}, "brevo PUT /v3/contacts")
        _after_write(service, contact_id, ext_id)

    await service.blocking(work)
    return Response(status_code=204)


# --- lists -------------------------------------------------------------------------------


def _members(connection: Connection, name: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return set(
        connection.scalars(
            select(list_members.c.contact_id).where(
                list_members.c.list_name == name, list_members.c.contact_id.in_(ids)
            )
        )
    )


def _list_change(request_body: dict[str, Any], adding: bool) -> tuple[str, list[Any]]:
    given = [
        (key, request_body[key])
        for key in ("emails", "ids", "extIds")
        if request_body.get(key) not in (None, [])
    ]
    if not given:
        if not adding and request_body.get("all") is True:
            return "all", []
        raise HttpError(400, "missing_parameter", "emails, ids or extIds is required")
    if len(given) > 1:
        raise HttpError(400, "invalid_parameter", "give only one of emails, ids and extIds")
    key, values = given[0]
    if not isinstance(values, list):
        raise HttpError(400, "invalid_parameter", f"{key} must be a list")
    if len(values) > MAX_LIST_CHANGE:
        raise HttpError(
            400, "out_of_range", f"at most {MAX_LIST_CHANGE} contacts per call, found {len(values)}"
        )
    for value in values:
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if key == "ids"
            else isinstance(value, str) and bool(value.strip())
        )
        if not ok:
            raise HttpError(
                400,
                "invalid_parameter",
                f"{key} must hold {'integers' if key == 'ids' else 'strings'}, found "
                f"{describe_json(value)}",
            )
    return key, values


def _change_list(
    request_body: dict[str, Any], service: Service, list_id: int, adding: bool
) -> Response:
    name = _list_names(service, [list_id], status=404)[list_id]
    key, values = _list_change(request_body, adding)
    with service.engine.connect() as connection:
        if key == "all":
            everyone = list(
                connection.scalars(
                    select(list_members.c.contact_id)
                    .where(list_members.c.list_name == name)
                    .order_by(by_code_point(list_members.c.contact_id))
                )
            )
            targets = {c: c for c in everyone}
            values = everyone
        else:
            kinds = {"emails": "email_id", "ids": "contact_id", "extIds": "ext_id"}
            targets = {}
            for value in values:
                found = resolve(connection, str(value), kinds[key])
                if found is not None:
                    targets[value] = found
        members = _members(connection, name, sorted(set(targets.values())))
    success: list[Any] = []
    failure: list[Any] = []
    changes: dict[str, ContactUpdate] = {}
    for value in values:
        contact_id = targets.get(value)
        if contact_id is None or (contact_id in members) == adding or contact_id in changes:
            failure.append(value)
            continue
        success.append(value)
        changes[contact_id] = (
            ContactUpdate(add_lists=(name,)) if adding else ContactUpdate(remove_lists=(name,))
        )
    if not success and key != "all":
        raise HttpError(
            400,
            "invalid_parameter",
            "Contact already in list and/or does not exist"
            if adding
            else "Contact not in list and/or does not exist",
        )
    verb = "add" if adding else "remove"
    _apply(service, changes, f"brevo POST /v3/contacts/lists/{list_id}/contacts/{verb}")
    answer: dict[str, Any] = {"success": success, "failure": failure}
    if key == "all":
        answer["total"] = len(success)
    return json_response({"contacts": answer}, 201)


@_endpoint("admin")
async def add_to_list(request: Request, service: Service) -> Response:
    """Add existing contacts to a list by emails, ids or extIds (at most 150)."""
    data = await _body(request)
    result: Response = await service.blocking(_change_list, data, service, _list_id(request), True)
    return result


@_endpoint("admin")
async def remove_from_list(request: Request, service: Service) -> Response:
    """Remove contacts from a list by emails, ids or extIds, or everyone with all: true."""
    data = await _body(request)
    result: Response = await service.blocking(_change_list, data, service, _list_id(request), False)
    return result


def _list_rows(service: Service, list_id: int | None = None) -> list[dict[str, Any]]:
    now = service.clock.now()
    with service.gate.short(), writer(service.engine).begin() as connection:
        known = directory.all_lists(connection, now)
    with service.engine.connect() as connection:
        counts: dict[str, int] = dict(
            connection.execute(
                select(list_members.c.list_name, func.count()).group_by(list_members.c.list_name)
            ).all()
        )
        created = dict(connection.execute(select(lists.c.id, lists.c.created_at)).all())
    return [
        {
            "id": number,
            "name": name,
            "totalBlacklisted": 0,
            "totalSubscribers": int(counts.get(name, 0)),
            "uniqueSubscribers": int(counts.get(name, 0)),
            "folderId": folder,
            "createdAt": _timestamp(created[number]),
            "dynamicList": False,
        }
        for number, name, folder in known
        if list_id is None or number == list_id
    ]


def _query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(key)
    if text is None:
        return default
    if _number(text) is None or not low <= int(text) <= high:
        raise HttpError(400, "out_of_range", f"{key} must be a number from {low} to {high}")
    return int(text)


@_endpoint("admin")
async def get_lists(request: Request, service: Service) -> Response:
    """All lists with numeric ids, newest first unless sort=asc (limit up to 50)."""
    limit = _query_int(request, "limit", 10, 0, 50)
    offset = _query_int(request, "offset", 0, 0, 2**31)
    sort = request.query_params.get("sort", "desc")
    if sort not in ("asc", "desc"):
        raise HttpError(400, "invalid_parameter", "sort must be asc or desc")
    rows = await service.blocking(_list_rows, service)
    rows.sort(key=lambda r: r["id"], reverse=sort == "desc")
    for row in rows:
        del row["createdAt"], row["dynamicList"]
    return json_response({"lists": rows[offset : offset + limit], "count": len(rows)})


@_endpoint("admin")
async def get_list(request: Request, service: Service) -> Response:
    """One list's details."""
    list_id = _list_id(request)
    rows = await service.blocking(_list_rows, service, list_id)
    if not rows:
        raise HttpError(404, "document_not_found", "List ID does not exist")
    return json_response(rows[0])


@_endpoint("admin")
async def create_list(request: Request, service: Service) -> Response:
    """Create a list (name, folderId); 201 with its id."""
    data = await _body(request)
    name = _text(data, "name", required=True, longest=MAX_NAME)
    assert name is not None
    folder = data.get("folderId", directory.DEFAULT_FOLDER)
    if not isinstance(folder, int) or isinstance(folder, bool):
        raise HttpError(400, "invalid_parameter", "folderId must be an integer")
    if not 0 <= folder <= LARGEST_ID:
        raise HttpError(400, "invalid_parameter", f"folderId must be at most {LARGEST_ID}")

    def work() -> int:
        now = service.clock.now()
        with service.gate.short(), writer(service.engine).begin() as connection:
            if connection.scalar(select(lists.c.id).where(lists.c.name == name)) is not None:
                raise HttpError(400, "duplicate_parameter", f"a list named {name!r} exists")
            result = connection.execute(
                lists.insert().values(name=name, folder_id=folder, created_at=now)
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    return json_response({"id": await service.blocking(work)}, 201)


# --- events ------------------------------------------------------------------------------


def _event_contact(service: Service, identifiers: Mapping[str, Any]) -> str:
    number = identifiers.get("contact_id")
    if number is not None:
        if not isinstance(number, int) or isinstance(number, bool):
            raise HttpError(400, "invalid_parameter", "identifiers.contact_id must be an integer")
        if not 0 <= number <= LARGEST_ID:
            raise HttpError(404, "document_not_found", "Contact does not exist")
        with service.engine.connect() as connection:
            found = directory.contact_by_number(connection, number)
        if found is None:
            raise HttpError(404, "document_not_found", "Contact does not exist")
        return found
    for key in ("email_id", "ext_id", "phone_id", "whatsapp_id", "landline_number_id"):
        value = identifiers.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise HttpError(400, "invalid_parameter", f"identifiers.{key} must be a string")
        if len(value.strip()) > MAX_ID:
            raise HttpError(
                400, "invalid_parameter", f"identifiers.{key} is longer than {MAX_ID} characters"
            )
        with service.engine.connect() as connection:
            found = resolve(connection, value.strip(), key)
        if found is not None:
            return found
        return _email(value) if key == "email_id" else value.strip()
    raise HttpError(
        400,
        "missing_parameter",
        "identifiers needs one of email_id, ext_id, contact_id, phone_id, whatsapp_id",
    )


@_endpoint("ingest")
async def create_event(request: Request, service: Service) -> Response:
    """Track an event (Brevo's body: event_name, identifiers, contact_properties,
    event_properties, event_date); 204. Applied like a Segment identify plus track."""
    data = await _body(request)
    name = _text(data, "event_name", required=True, longest=MAX_NAME)
    assert name is not None
    identifiers = data.get("identifiers")
    if identifiers is None:
        raise HttpError(400, "missing_parameter", "identifiers is missing")
    if not isinstance(identifiers, dict):
        raise HttpError(400, "invalid_parameter", "identifiers must be an object")
    traits = _mapping(data, "contact_properties")
    properties = _mapping(data, "event_properties")
    date = data.get("event_date")
    stamp: dict[str, Any] = {}
    if date is not None:
        try:
            parse_timestamp(date)
        except ValueError as exc:
            raise HttpError(400, "invalid_parameter", f"event_date: {exc}") from None
        stamp["timestamp"] = date
    contact_id = await service.blocking(_event_contact, service, identifiers)
    messages: list[dict[str, Any]] = []
    if traits:
        messages.append({"type": "identify", "userId": contact_id, "traits": traits, **stamp})
    messages.append(
        {"type": "track", "userId": contact_id, "event": name, "properties": properties, **stamp}
    )
    messages = [with_message_id(m) for m in messages]
    service.admit()
    await service.blocking(service.inbox.put, messages, "http /v3/events")
    service.accepted_messages("http /v3/events", len(messages))
    return Response(status_code=204)


routes = [
    Route("/v3/events", create_event, methods=["POST"]),
    Route("/v3/contacts", create_contact, methods=["POST"]),
    Route("/v3/contacts/lists", get_lists, methods=["GET"]),
    Route("/v3/contacts/lists", create_list, methods=["POST"]),
    Route("/v3/contacts/lists/{list_id:int}", get_list, methods=["GET"]),
    Route("/v3/contacts/lists/{list_id:int}/contacts/add", add_to_list, methods=["POST"]),
    Route("/v3/contacts/lists/{list_id:int}/contacts/remove", remove_from_list, methods=["POST"]),
    Route("/v3/contacts/{identifier}", get_contact, methods=["GET"]),
    Route("/v3/contacts/{identifier}", update_contact, methods=["PUT"]),
]
