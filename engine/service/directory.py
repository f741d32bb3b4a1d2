"""Numbers for things Leadflow names by text: the numeric contact ids and list ids that the
Brevo API shows. Allocated on first need, never reused (autoincrement on SQLite and
PostgreSQL alike), so an id a client stored keeps pointing at the same contact or list."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select

from engine.store.sql import chunks, insert_ignore
from engine.store.tables import contact_numbers, contacts, list_members, lists

DEFAULT_FOLDER = 1


def number_of(connection: Connection, contact_id: str, now: datetime) -> int:
    """The contact's number, allocated when it has none (a write: use a write transaction)."""
    found = connection.scalar(
        select(contact_numbers.c.number).where(contact_numbers.c.contact_id == contact_id)
    )
    if found is not None:
        return int(found)
    insert_ignore(connection, contact_numbers, [{"contact_id": contact_id, "created_at": now}])
    number = connection.scalar(
        select(contact_numbers.c.number).where(contact_numbers.c.contact_id == contact_id)
    )
    assert number is not None
    return int(number)


def set_ext_id(connection: Connection, contact_id: str, ext_id: str, now: datetime) -> None:
    number_of(connection, contact_id, now)
    connection.execute(
        contact_numbers.update()
        .where(contact_numbers.c.contact_id == contact_id)
        .values(ext_id=ext_id)
    )


def ext_id_of(connection: Connection, contact_id: str) -> str | None:
    value = connection.scalar(
        select(contact_numbers.c.ext_id).where(contact_numbers.c.contact_id == contact_id)
    )
    return None if value is None else str(value)


def contact_by_number(connection: Connection, number: int) -> str | None:
    value = connection.scalar(
        select(contact_numbers.c.contact_id).where(contact_numbers.c.number == number)
    )
    return None if value is None else str(value)


def contact_by_ext_id(connection: Connection, ext_id: str) -> str | None:
    value = connection.scalar(
        select(contact_numbers.c.contact_id).where(contact_numbers.c.ext_id == ext_id)
    )
    return None if value is None else str(value)


def live_contact(connection: Connection, contact_id: str) -> str | None:
    """The id itself, or the contact it was merged into; None when there is no such contact."""
    seen: set[str] = set()
    current = contact_id
    while current not in seen:
        seen.add(current)
        row = connection.execute(
            select(contacts.c.id, contacts.c.merged_into).where(contacts.c.id == current)
        ).first()
        if row is None:
            return None
        if row.merged_into is None:
            return str(row.id)
        current = str(row.merged_into)
    return None


def list_ids(connection: Connection, names: Iterable[str], now: datetime) -> dict[str, int]:
    """Numbers for list names, allocated for names that have none."""
    wanted = sorted(set(names))
    found: dict[str, int] = {}
    for part in chunks(wanted):
        found.update(
            (str(name), int(number))
            for name, number in connection.execute(
                select(lists.c.name, lists.c.id).where(lists.c.name.in_(part))
            )
        )
    missing = [name for name in wanted if name not in found]
    if missing:
        insert_ignore(
            connection,
            lists,
            [{"name": n, "folder_id": DEFAULT_FOLDER, "created_at": now} for n in missing],
        )
        for part in chunks(missing):
            found.update(
                (str(name), int(number))
                for name, number in connection.execute(
                    select(lists.c.name, lists.c.id).where(lists.c.name.in_(part))
                )
            )
    return found


def list_names(connection: Connection, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    names: dict[int, str] = {}
    for part in chunks(wanted):
        names.update(
            (int(number), str(name))
            for number, name in connection.execute(
                select(lists.c.id, lists.c.name).where(lists.c.id.in_(part))
            )
        )
    return names


def all_lists(connection: Connection, now: datetime) -> list[tuple[int, str, int]]:
    """Every list, (id, name, folder), including lists workflows made that have no number
    yet (they get one now)."""
    used = set(connection.scalars(select(list_members.c.list_name).distinct()))
    known = set(connection.scalars(select(lists.c.name)))
    if used - known:
        list_ids(connection, used - known, now)
    return [
        (int(row.id), str(row.name), int(row.folder_id))
        for row in connection.execute(select(lists).order_by(lists.c.id))
    ]
