"""Who may be written to, and when; the unsubscribe and double opt-in confirmation.

The rules, checked for every email and SMS when it is about to be delivered (so the latest
state of the contact counts, not the state when the run queued it):

1. No address, no message: email goes to the ``email``/``EMAIL`` attribute, else to the
   contact id when it is an address (one ``@``, a dotted domain, nothing that could change
   a header); SMS to ``SMS``/``sms``/``phone``/``PHONE`` (digits, ``+``, separators).
   Otherwise the message is *suppressed* ("no email address").
2. Unsubscribed contacts get nothing, marketing or transactional: ``UNSUBSCRIBED`` true
   (what :func:`unsubscribe` sets), or Brevo's ``emailBlacklisted`` (email) /
   ``smsBlacklisted`` (SMS) true. Suppressed.
3. Marketing (every SMS, and every email whose template has no ``Category: transactional``
   header) needs consent: ``CONSENT`` false suppresses it; a contact with no ``CONSENT``
   attribute at all is written to, unless the setting ``consent.require_explicit`` is on
   (then only ``CONSENT`` true counts). Transactional email (the double opt-in
   confirmation) is what asks for consent, so it does not need it.
4. Quiet hours (setting ``quiet_hours``, e.g. ``21:00-08:00``, in the contact's
   ``timezone`` attribute, an IANA name, else ``quiet_hours.default_timezone``): marketing
   waits until they end. The row's ``next_attempt_at`` moves; it is not an attempt.
5. Frequency cap per channel (setting ``frequency_caps``, e.g. ``{"email": {"max": 3,
   "per": "P7D"}}``): marketing beyond the cap waits until the oldest message in the
   window leaves it. Transactional email and webhooks are never capped.

Consent values are read leniently: true/"true"/"yes"/1 are true, false/"false"/"no"/0 are
false, anything else counts as not set.

Webhooks are calls to systems, not messages to people: no rule applies to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, select

from engine.clock import format_timestamp
from engine.messaging.render import MARKETING
from engine.messaging.settings import MessagingSettings, secret
from engine.messaging.tokens import CONFIRM, UNSUBSCRIBE, InvalidToken, read_token
from engine.segment import Message
from engine.store.sql import chunks, insert_for
from engine.store.tables import consents, contacts, suppressed_addresses

if TYPE_CHECKING:
    from engine.runner import Runner

SEND = "send"
SUPPRESS = "suppress"
POSTPONE = "postpone"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str
    reason: str = ""
    until: datetime | None = None


ALLOW = Verdict(SEND)


def flag(value: Any) -> bool | None:
    """A consent-like attribute as true, false or not set."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "y", "1", "on"):
            return True
        if text in ("false", "no", "n", "0", "off"):
            return False
    return None


_EMAIL = re.compile(r"[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+")
"""An address that can go in a header as it is: one @, a dotted domain, no spaces or
characters that would change the header's meaning."""
_PHONE = re.compile(r"\+?[0-9().-]{3,20}")


def address(channel: str, contact_id: str, attributes: Mapping[str, Any]) -> str | None:
    if channel == "email":
        for value in (attributes.get("email"), attributes.get("EMAIL"), contact_id):
            if isinstance(value, str) and _EMAIL.fullmatch(value.strip()):
                return value.strip()
        return None
    if channel == "sms":
        for key in ("SMS", "sms", "phone", "PHONE"):
            value = attributes.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                number = "".join(str(value).split())
                if _PHONE.fullmatch(number):
                    return number
        return None
    return None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a folder of the tz database ("America") or a name too long for a path
        return None


def quiet_until(
    settings: MessagingSettings, attributes: Mapping[str, Any], now: datetime
) -> datetime | None:
    """When the contact's quiet hours end, if ``now`` is inside them."""
    quiet = settings.quiet_hours
    if quiet is None:
        return None
    name = attributes.get("timezone") or attributes.get("TIMEZONE")
    zone = (_zone(name) if isinstance(name, str) else None) or _zone(settings.default_timezone)
    local = now.astimezone(zone)
    if not quiet.contains(local.time()):
        return None
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end = (local + timedelta(days=1)).replace(
            hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0
        )
    # wall-clock arithmetic in the zone, then back to UTC (a DST change is respected)
    return end.astimezone(now.tzinfo)


def check(
    channel: str,
    category: str,
    contact_id: str,
    attributes: Mapping[str, Any] | None,
    settings: MessagingSettings,
    now: datetime,
    recent: Sequence[datetime] = (),
) -> Verdict:
    """The rules above for one message. ``recent``: when this contact's marketing messages
    on this channel went out within the cap's window (in-flight ones at ``now``)."""
    if channel not in ("email", "sms"):
        return ALLOW
    if attributes is None:
        return Verdict(SUPPRESS, f"unknown contact {contact_id}")
    if address(channel, contact_id, attributes) is None:
        return Verdict(SUPPRESS, "no email address" if channel == "email" else "no phone number")
    if flag(attributes.get("UNSUBSCRIBED")):
        return Verdict(SUPPRESS, "unsubscribed")
    blacklisted = "emailBlacklisted" if channel == "email" else "smsBlacklisted"
    if flag(attributes.get(blacklisted)):
        return Verdict(SUPPRESS, f"unsubscribed ({blacklisted})")
    if category != MARKETING:
        return ALLOW
    consent = flag(attributes.get("CONSENT"))
    if consent is False:
        return Verdict(SUPPRESS, "no consent (CONSENT is false)")
    if consent is None and settings.require_explicit_consent:
        return Verdict(SUPPRESS, "no consent (CONSENT not given; consent.require_explicit is on)")
    until = quiet_until(settings, attributes, now)
    if until is not None:
        return Verdict(POSTPONE, f"quiet hours ({settings.quiet_hours.text})", until)  # type: ignore[union-attr]
    cap = settings.frequency_caps.get(channel)
    if cap is not None:
        since = cap.per.before(now)
        inside = sorted(t for t in recent if t > since)
        if len(inside) >= cap.max:
            # wait until enough of the window's messages have aged out of it
            oldest = inside[len(inside) - cap.max]
            until = cap.per.after(oldest)
            if until <= now:
                until = now + timedelta(seconds=1)
            return Verdict(
                POSTPONE, f"frequency cap ({cap.max} {channel} per {cap.per.text})", until
            )
    return ALLOW


# --- addresses unsubscribed whoever holds them ----------------------------------------------


def suppression_key(where: str) -> str:
    """An email address as ``suppressed_addresses`` keeps it (case does not matter)."""
    return where.strip().lower()


def _address_of(connection: Connection, contact_id: str) -> str | None:
    """The email address of a contact (of the one it was merged into), as a key."""
    for _ in range(3):
        row = connection.execute(
            select(contacts.c.attributes, contacts.c.merged_into).where(contacts.c.id == contact_id)
        ).first()
        if row is None:
            break
        if row.merged_into is None:
            where = address("email", contact_id, row.attributes or {})
            return None if where is None else suppression_key(where)
        contact_id = row.merged_into
    where = address("email", contact_id, {})
    return None if where is None else suppression_key(where)


def suppressed(connection: Connection, wanted: Iterable[str]) -> dict[str, str]:
    """Of these email addresses, the unsubscribed ones, with the contact that did it."""
    keys = sorted({suppression_key(w) for w in wanted})
    found: dict[str, str] = {}
    for part in chunks(keys):
        query = select(suppressed_addresses.c.address, suppressed_addresses.c.contact_id).where(
            suppressed_addresses.c.channel == "email", suppressed_addresses.c.address.in_(part)
        )
        found.update((row.address, row.contact_id) for row in connection.execute(query))
    return found


# --- the links in the emails -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentResult:
    contact_id: str
    action: str
    """``confirmed`` or ``unsubscribed``."""
    at: datetime
    already: bool
    """The same confirmation was recorded before, or the contact was already unsubscribed."""
    source: str


def confirm(
    runner: Runner,
    token: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> ConsentResult:
    """Confirm a double opt-in subscription from the link in the confirmation email.

    Stores the proof (time, source, IP and user agent when given) in ``consents`` and sends
    a ``Subscription Confirmed`` event through the normal ingestion path, so a workflow
    waiting for it (the shipped double-opt-in playbook) goes on. Raises
    :class:`~engine.messaging.tokens.InvalidToken` for a bad or expired link. Clicking the
    link again is harmless (``already`` is true)."""
    now = runner.clock.now()
    with runner.writer.begin() as connection:
        settings = MessagingSettings.load(connection)
        found = read_token(secret(connection), token, CONFIRM)
        if settings.confirm_valid.after(found.issued_at) < now:
            raise InvalidToken(
                f"the confirmation link expired (sent {format_timestamp(found.issued_at)}, "
                f"valid for {settings.confirm_valid.text})"
            )
        source = f"double opt-in link ({found.source})" if found.source else "double opt-in link"
        recorded = (
            connection.execute(
                insert_for(connection, consents).on_conflict_do_nothing().returning(consents.c.id),
                {
                    "contact_id": found.contact_id,
                    "action": "confirmed",
                    "at": now,
                    "source": source[:300],
                    "ip": ip[:64] if ip else None,
                    "user_agent": user_agent,
                    "ref": found.signature,
                    "detail": {"link_sent_at": format_timestamp(found.issued_at)},
                },
            ).first()
            is not None
        )
        where = _address_of(connection, found.contact_id)
        if recorded and where is not None:  # the address asked to be written to again
            connection.execute(
                suppressed_addresses.delete().where(
                    suppressed_addresses.c.channel == "email",
                    suppressed_addresses.c.address == where,
                )
            )
    if recorded:
        properties = {"source": source, "method": "double opt-in"}
        runner.ingest(
            [
                Message(
                    type="track",
                    contact_id=found.contact_id,
                    timestamp=now,
                    message_id=f"confirm:{found.signature}",
                    event="Subscription Confirmed",
                    properties=properties,
                )
            ],
            source="consent",
        )
    return ConsentResult(found.contact_id, "confirmed", now, not recorded, source)


def unsubscribe(
    runner: Runner,
    token: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    method: str = "link",
) -> ConsentResult:
    """Unsubscribe the contact of an unsubscribe link (``method``: ``link`` for a click,
    ``one-click`` for an RFC 8058 POST from a mailbox provider).

    Sets ``UNSUBSCRIBED`` true and ``CONSENT`` false through the normal ingestion path (so
    both changes are audited and may trigger workflows), sends an ``Unsubscribed`` event,
    and keeps the request (time, source, IP, user agent) in ``consents``. Links do not
    expire. Raises :class:`~engine.messaging.tokens.InvalidToken` for a bad link."""
    now = runner.clock.now()
    with runner.writer.begin() as connection:
        found = read_token(secret(connection), token, UNSUBSCRIBE)
        # the contact the link's id is now (an alias may have merged it into another)
        current, seen = found.contact_id, set()
        while True:  # merges of merges too, however many (a cycle would never end)
            seen.add(current)
            row = connection.execute(
                select(contacts.c.attributes, contacts.c.merged_into).where(
                    contacts.c.id == current
                )
            ).first()
            if row is None or row.merged_into is None or row.merged_into in seen:
                break
            current = row.merged_into
        already = row is not None and row.merged_into is None
        already = already and flag(row.attributes.get("UNSUBSCRIBED")) is True  # type: ignore[union-attr]
        source = f"unsubscribe {method} ({found.source})" if found.source else method
        where = _address_of(connection, found.contact_id)
        if where is not None:  # whichever contact holds this address from now on
            connection.execute(
                insert_for(connection, suppressed_addresses).on_conflict_do_nothing(),
                {
                    "channel": "email",
                    "address": where,
                    "contact_id": found.contact_id,
                    "at": now,
                    "reason": source[:300],
                },
            )
        if not already:
            # on_conflict: a second click in the same second (a scanner and the person)
            # has the same ref; it is the same request, not an error
            connection.execute(
                insert_for(connection, consents).on_conflict_do_nothing(),
                {
                    "contact_id": found.contact_id,
                    "action": "unsubscribed",
                    "at": now,
                    "source": source[:300],
                    "ip": ip[:64] if ip else None,
                    "user_agent": user_agent,
                    "ref": f"{found.signature}:{format_timestamp(now)}"[:100],
                    "detail": {"method": method, "link_sent_at": format_timestamp(found.issued_at)},
                },
            )
    if not already:
        stamp = format_timestamp(now)
        runner.ingest(
            [
                Message(
                    type="identify",
                    contact_id=found.contact_id,
                    timestamp=now,
                    message_id=f"unsubscribe:{found.signature}:{stamp}",
                    traits={"UNSUBSCRIBED": True, "CONSENT": False},
                ),
                Message(
                    type="track",
                    contact_id=found.contact_id,
                    timestamp=now,
                    message_id=f"unsubscribed:{found.signature}:{stamp}",
                    event="Unsubscribed",
                    properties={"channel": "email", "method": method, "source": source},
                ),
            ],
            source="consent",
        )
    return ConsentResult(found.contact_id, "unsubscribed", now, already, source)
