"""Messaging settings: the ``settings`` table, overridden by the environment.

Every setting has a key in the table (``smtp.host``), a type, a default, and for the ones a
deployment usually injects, an environment variable (``LEADFLOW_SMTP_HOST``) that wins over
the table. ``leadflow outbox settings`` lists and changes them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, select

from engine.durations import Duration
from engine.errors import LeadflowError
from engine.store.sql import insert_for, upsert
from engine.store.tables import settings as settings_table

SECRET_KEY = "messaging.secret"
"""The HMAC secret of unsubscribe and confirmation links, created on first use."""


class BadSetting(LeadflowError):
    """A setting has a value of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``max`` marketing messages per ``per`` on one channel."""

    max: int
    per: Duration


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in which marketing messages wait; ``start > end`` spans midnight."""

    start: time
    end: time
    text: str

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    """Attribute of :class:`MessagingSettings`."""
    key: str
    """Key in the ``settings`` table."""
    kind: str
    default: Any
    """Raw default, coerced like a stored value."""
    help: str
    env: str | None = None


SPECS: tuple[Spec, ...] = (
    Spec("smtp_host", "smtp.host", "str", None,
         "SMTP server; unset: email waits for it (looked at every 10 minutes).",
         "LEADFLOW_SMTP_HOST"),
    Spec("smtp_port", "smtp.port", "int", 25, "SMTP port.", "LEADFLOW_SMTP_PORT"),
    Spec("smtp_user", "smtp.user", "str", None, "SMTP login.", "LEADFLOW_SMTP_USER"),
    Spec("smtp_password", "smtp.password", "secret", None, "SMTP password.",
         "LEADFLOW_SMTP_PASSWORD"),
    Spec("smtp_starttls", "smtp.starttls", "bool", False, "Upgrade with STARTTLS.",
         "LEADFLOW_SMTP_STARTTLS"),
    Spec("smtp_ssl", "smtp.ssl", "bool", False, "Implicit TLS (port 465).", "LEADFLOW_SMTP_SSL"),
    Spec("smtp_from", "smtp.from", "str", "leadflow@localhost", "From address.",
         "LEADFLOW_SMTP_FROM"),
    Spec("smtp_timeout", "smtp.timeout", "float", 30.0, "Seconds per SMTP command."),
    Spec("public_url", "public_url", "str", "http://127.0.0.1:8000",
         "Base URL of `leadflow serve` for unsubscribe and confirmation links.",
         "LEADFLOW_PUBLIC_URL"),
    Spec("unsubscribe_mailto", "unsubscribe.mailto", "str", None,
         "Address for a mailto: List-Unsubscribe beside the link."),
    Spec("sms_url", "sms.url", "str", None,
         "SMS gateway URL (HTTP POST, JSON body); unset: SMS waits for it.",
         "LEADFLOW_SMS_URL"),
    Spec("sms_auth_header", "sms.auth_header", "secret", None,
         "Header sent to the SMS gateway, 'Name: value'.", "LEADFLOW_SMS_AUTH_HEADER"),
    Spec("sms_body", "sms.body", "json", {"to": "{{ to }}", "text": "{{ text }}"},
         "JSON body template; its texts see to, text, sender, contact_id, key."),
    Spec("sms_from", "sms.from", "str", None, "Sender id, as {{ sender }} in sms.body."),
    Spec("webhook_headers", "webhook.headers", "headers", {},
         "Extra headers by URL prefix: {'https://crm.example/': {'Authorization': '...'}}."),
    Spec("http_timeout", "http.timeout", "float", 10.0, "Seconds per HTTP call."),
    Spec("max_attempts", "delivery.max_attempts", "int", 8,
         "Failed attempts before a message is dead."),
    Spec("backoff_base", "delivery.backoff_seconds", "float", 30.0,
         "First retry delay; doubles with each attempt, with jitter."),
    Spec("backoff_max", "delivery.backoff_max_seconds", "float", 6 * 3600.0,
         "Longest retry delay."),
    Spec("lease_seconds", "delivery.lease_seconds", "float", 300.0,
         "How long a claimed row is held before another worker may take it over."),
    Spec("batch", "delivery.batch", "int", 100, "Rows claimed per transaction."),
    Spec("require_explicit_consent", "consent.require_explicit", "bool", False,
         "Marketing needs CONSENT true (not just no CONSENT attribute)."),
    Spec("confirm_valid", "consent.confirm_valid", "duration", "P7D",
         "How long a double opt-in link works."),
    Spec("quiet_hours", "quiet_hours", "quiet", None,
         "Local hours marketing email and SMS wait out, e.g. '21:00-08:00'."),
    Spec("default_timezone", "quiet_hours.default_timezone", "zone", "UTC",
         "Time zone of contacts without a valid 'timezone' attribute."),
    Spec("frequency_caps", "frequency_caps", "caps", {},
         "Marketing messages per channel: {'email': {'max': 3, 'per': 'P7D'}}."),
)  # fmt: skip
BY_KEY = {spec.key: spec for spec in SPECS}


class MessagingSettings:
    """Effective settings: environment, else the ``settings`` table, else the default."""

    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_starttls: bool
    smtp_ssl: bool
    smtp_from: str
    smtp_timeout: float
    public_url: str
    unsubscribe_mailto: str | None
    sms_url: str | None
    sms_auth_header: str | None
    sms_body: Any
    sms_from: str | None
    webhook_headers: dict[str, dict[str, str]]
    http_timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    lease_seconds: float
    batch: int
    require_explicit_consent: bool
    confirm_valid: Duration
    quiet_hours: QuietHours | None
    default_timezone: str
    frequency_caps: dict[str, Cap]

    def __init__(self, **values: Any) -> None:
        self.sources: dict[str, str] = {}
        for spec in SPECS:
            if spec.name in values:
                setattr(self, spec.name, values[spec.name])
                self.sources[spec.key] = "given"
            else:
                setattr(self, spec.name, coerce(spec.key, spec.kind, spec.default))
                self.sources[spec.key] = "default"

    @classmethod
    def load(
        cls, connection: Connection, environ: Mapping[str, str] | None = None
    ) -> MessagingSettings:
        stored = dict(
            connection.execute(select(settings_table.c.key, settings_table.c.value)).all()
        )
        return cls.from_values(stored, os.environ if environ is None else environ)

    @classmethod
    def from_values(
        cls, stored: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> MessagingSettings:
        environ = environ or {}
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for spec in SPECS:
            if spec.env and environ.get(spec.env, "") != "":
                try:
                    values[spec.name] = coerce(spec.key, spec.kind, environ[spec.env])
                except BadSetting as exc:  # say where the value came from
                    raise BadSetting(f"{exc} (from the environment variable {spec.env})") from None
                origin[spec.key] = f"env {spec.env}"
            elif spec.key in stored:
                values[spec.name] = coerce(spec.key, spec.kind, stored[spec.key], strict=False)
                origin[spec.key] = "settings table"
        made = cls(**values)
        made.sources.update(origin)
        return made

    def describe(self) -> list[dict[str, Any]]:
        """Each setting with its effective value (secrets masked) and where it comes from."""
        out = []
        for spec in SPECS:
            value = getattr(self, spec.name)
            if spec.kind == "secret" and value:
                value = "***"
            elif isinstance(value, Duration | QuietHours):
                value = value.text
            elif spec.kind == "caps":
                value = {k: {"max": c.max, "per": c.per.text} for k, c in value.items()}
            out.append(
                {
                    "key": spec.key,
                    "value": value,
                    "from": self.sources[spec.key],
                    "env": spec.env,
                    "help": spec.help,
                }
            )
        return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_QUIET = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


DAY = 86_400.0
RANGES: dict[str, tuple[float, float]] = {
    "smtp.port": (1, 65_535),
    "smtp.timeout": (0.001, DAY),
    "http.timeout": (0.001, DAY),
    "delivery.max_attempts": (1, 1_000),
    "delivery.backoff_seconds": (0, 30 * DAY),
    "delivery.backoff_max_seconds": (0, 365 * DAY),
    "delivery.lease_seconds": (1, 30 * DAY),
    "delivery.batch": (1, 100_000),
}
"""What each number setting may be: a value past these (a port of 99999999, a timeout of
Infinity, a batch of 1e300) was stored and then broke every delivery round."""


def _shown(bound: float) -> str:
    return f"{bound:,.0f}" if bound == int(bound) else f"{bound:g}"


def coerce(key: str, kind: str, raw: Any, strict: bool = True) -> Any:
    """A stored or environment value as the setting's type; BadSetting names the key.
    ``strict=False`` (a value already stored) skips the checks added after it was set."""
    try:
        value = _coerce(kind, raw)
    except (ZoneInfoNotFoundError, IsADirectoryError):
        raise BadSetting(f"setting {key}: unknown time zone {raw!r}") from None
    except (ValueError, TypeError, KeyError, OverflowError, OSError) as exc:
        raise BadSetting(f"setting {key}: {exc}") from None
    if value is not None and strict:
        problem = _unworkable(key, value)
        if problem is not None:
            raise BadSetting(f"setting {key}: {problem}, found {raw!r}")
    bounds = RANGES.get(key)
    if bounds is not None and value is not None:
        low, high = bounds
        if not low <= value <= high:  # NaN fails this too
            raise BadSetting(
                f"setting {key}: expected {_shown(low)} to {_shown(high)}, found {raw!r}"
            )
    return value


_MAILBOX = re.compile(r"[^@\s<>,;:\"()\[\]\\?]+@[^@\s<>,;:\"()\[\]\\?]+\.[^@\s<>,;:\"()\[\]\\?]+")


def _unworkable(key: str, value: Any) -> str | None:
    """Why a well-shaped value still cannot work (it would fail or do nothing at every
    delivery), or None."""
    from urllib.parse import urlsplit

    if key in ("public_url", "sms.url"):
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return "expected an absolute http:// or https:// URL"
    if key == "unsubscribe.mailto" and not _MAILBOX.fullmatch(str(value)):
        return "expected an email address"
    if key == "sms.auth_header":
        name, sep, _ = str(value).partition(":")
        if not sep or not name.strip() or any(c in str(value) for c in "\r\n"):
            return "expected 'Name: value'"
    if key == "consent.confirm_valid" and not (value.months or value.delta):
        return "expected a duration longer than zero"
    if key == "frequency_caps":
        for channel, cap in value.items():
            if channel not in ("email", "sms"):
                return f"{channel}: only email and sms are capped"
            if not (cap.per.months or cap.per.delta):
                return f"{channel}: per: expected a duration longer than zero"
    if key == "sms.body":
        from engine.errors import ActionFailed
        from engine.messaging.render import render_string
        from engine.messaging.values import render_json

        sample = {"to": "+1", "text": "t", "sender": "", "contact_id": "c", "key": "k"}
        try:
            render_json(value, lambda text, where: render_string(text, sample, where))
        except ActionFailed as exc:
            return f"the template does not render ({exc})"
    return None


def _coerce(kind: str, raw: Any) -> Any:
    if raw is None:
        return None
    if kind in ("str", "secret"):
        return str(raw)
    if kind == "int":
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected a whole number, found {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number, found {raw!r}") from None
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, found {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, found {raw!r}") from None
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, found {raw!r}")
    if kind == "json":
        return raw
    if kind == "duration":
        return Duration.parse(raw)
    if kind == "zone":
        ZoneInfo(str(raw))  # raises for an unknown zone
        return str(raw)
    if kind == "quiet":
        return parse_quiet_hours(raw)
    if kind == "caps":
        if not isinstance(raw, Mapping):
            raise ValueError("expected {channel: {max: N, per: DURATION}}")
        caps = {}
        for channel, cap in raw.items():
            shape = f"{channel}: expected {{max: N, per: DURATION}}"
            if not isinstance(cap, Mapping):
                raise ValueError(shape)
            missing = [key for key in ("max", "per") if key not in cap]
            if missing:
                raise ValueError(f"{shape}; {' and '.join(missing)} missing")
            most = cap["max"]
            if isinstance(most, bool) or not isinstance(most, int | str):
                raise ValueError(f"{channel}: max: expected a whole number, found {most!r}")
            most = int(most)
            if most < 1:  # a cap of 0 broke every delivery round (an IndexError)
                raise ValueError(
                    f"{channel}: max: expected 1 or more, found {most} (to send no "
                    "marketing on a channel, leave it out of the workflows)"
                )
            caps[str(channel)] = Cap(most, Duration.parse(cap["per"]))
        return caps
    if kind == "headers":
        shape = "expected {URL prefix: {header name: value}}"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{shape}, found {raw!r}")
        for prefix, extra in raw.items():
            if not isinstance(extra, Mapping) or not all(
                isinstance(v, str | int | float) and not isinstance(v, bool) for v in extra.values()
            ):
                raise ValueError(f"{prefix}: {shape}, found {extra!r}")
        return raw
    raise ValueError(f"unknown kind {kind}")  # pragma: no cover


def parse_quiet_hours(text: Any) -> QuietHours | None:
    if text in (None, "", False):
        return None
    match = _QUIET.fullmatch(str(text))
    if match is None:
        raise ValueError(f"expected quiet hours as HH:MM-HH:MM, found {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = time(h1, m1), time(h2, m2)
    if start == end:
        raise ValueError(f"quiet hours start and end at the same time: {text!r}")
    return QuietHours(start, end, str(text).strip())


def set_setting(connection: Connection, key: str, value: Any) -> None:
    """Store one setting after checking its shape (``None`` removes it)."""
    spec = BY_KEY.get(key)
    if spec is None:
        known = ", ".join(sorted(BY_KEY))
        raise BadSetting(f"unknown setting {key!r}; known: {known}")
    coerce(key, spec.kind, value)
    if value is None:
        connection.execute(settings_table.delete().where(settings_table.c.key == key))
        return
    upsert(connection, settings_table, [{"key": key, "value": value}], ["key"], ["value"])


def public_url(connection: Connection, environ: Mapping[str, str] | None = None) -> str:
    """Just the base URL of the links (rendering needs nothing else, so a bad unrelated
    setting never fails a run)."""
    spec = BY_KEY["public_url"]
    environ = os.environ if environ is None else environ
    if spec.env and environ.get(spec.env):
        return environ[spec.env]
    stored = connection.scalar(
        select(settings_table.c.value).where(settings_table.c.key == spec.key)
    )
    return str(stored) if stored else str(spec.default)


def secret(connection: Connection) -> bytes:
    """The signing secret, created on first use (every worker then reads the same one)."""
    value = connection.scalar(
        select(settings_table.c.value).where(settings_table.c.key == SECRET_KEY)
    )
    if value is None:
        connection.execute(
            insert_for(connection, settings_table).on_conflict_do_nothing(),
            {"key": SECRET_KEY, "value": secrets.token_hex(32)},
        )
        value = connection.scalar(
            select(settings_table.c.value).where(settings_table.c.key == SECRET_KEY)
        )
    return bytes.fromhex(str(value))
