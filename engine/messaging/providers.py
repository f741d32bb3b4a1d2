"""Talking to the outside: SMTP for email, HTTP POST for SMS gateways and webhooks.

A provider's ``send`` returns the provider's response as text or raises
:class:`DeliveryError`, which says whether trying again can help (``permanent``).
Every outgoing message carries its outbox idempotency key: webhooks and SMS gateways get an
``Idempotency-Key`` header, email a Message-ID derived from it (SMTP has no idempotency:
after a crash between the send and its record, the email goes out again with the same
Message-ID; see engine/messaging/delivery.py).
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.quoprimime import body_encode
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

import orjson

from engine.clock import Clock
from engine.messaging.settings import MessagingSettings

USER_AGENT = "leadflow-outbox/1"


class DeliveryError(Exception):
    """A send that did not go through. ``permanent``: retrying cannot help (a refused
    recipient, a 4xx from a webhook), so the message is dead at once."""

    def __init__(self, message: str, permanent: bool = False, response: str | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.response = response


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One claimed outbox row, ready to send."""

    id: int
    key: str
    channel: str
    contact_id: str
    to: str
    """Email address, phone number or URL."""
    payload: Mapping[str, Any]
    attempt: int
    retry_from: int = 0
    """Attempts made before the last hand re-queue (the dead-letter limit counts after)."""

    @property
    def rendered(self) -> Mapping[str, Any]:
        value = self.payload.get("rendered")
        return value if isinstance(value, Mapping) else {}


def message_id(key: str, sender: str) -> str:
    """A Message-ID that is the same on every attempt of one outbox row."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "leadflow.invalid"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}.outbox@{domain}>"


_CRLF = "\r\n"


def _header_text(value: str) -> str:
    """An unstructured header value: plain when it is printable ASCII, else RFC 2047
    encoded words (the value is on one line already: subjects are collapsed)."""
    value = " ".join(value.split())
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8", header_name="Subject").encode(linesep=_CRLF)


def _mailbox(value: str) -> str:
    """``Name <address>`` with a non-ASCII name encoded; the address stays as it is."""
    name, addr = parseaddr(" ".join(value.split()))
    if not name:
        return addr or value
    if name.isascii():
        return formataddr((name, addr))
    return f"{Header(name, 'utf-8').encode(linesep=_CRLF)} <{addr}>"


def _part(text: str, subtype: str) -> list[str]:
    """Headers and body of one text part: 7bit when it can be, quoted-printable else."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if text.isascii() and all(len(line) <= 990 for line in lines):
        encoding, body = "7bit", _CRLF.join(lines)
    else:
        raw = text.encode("utf-8").decode("latin-1")  # quoprimime works on byte values
        encoding, body = "quoted-printable", body_encode(raw, 76, _CRLF)
    if not body.endswith(_CRLF):
        body += _CRLF
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {encoding}",
        "",
        body,
    ]


def email_bytes(item: Outgoing, settings: MessagingSettings, clock: Clock) -> bytes:
    """The message as it goes over the wire: CRLF line ends, 7-bit (no server needs
    8BITMIME), a text part and an HTML alternative when there is one.

    Written by hand rather than with :mod:`email.message` (about ten times slower): the
    headers are few and known, and long ones (List-Unsubscribe) must not be folded into
    encoded words that mailbox providers would not read."""
    rendered = item.rendered
    headers = [
        f"From: {_mailbox(settings.smtp_from)}",
        f"To: {item.to}",
        f"Subject: {_header_text(str(rendered.get('subject', '')))}",
        f"Date: {format_datetime(clock.now())}",
        f"Message-ID: {message_id(item.key, settings.smtp_from)}",
        f"X-Leadflow-Key: {item.key}",
    ]
    unsubscribe = str(rendered.get("unsubscribe_url") or "")
    if rendered.get("category", "marketing") == "marketing":
        targets = [f"<{unsubscribe}>"] if unsubscribe else []
        if settings.unsubscribe_mailto:
            targets.append(f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe>")
        if targets:
            headers.append(f"List-Unsubscribe: {', '.join(targets)}")
        if unsubscribe:
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append("MIME-Version: 1.0")
    text = _part(str(rendered.get("text", "")), "plain")
    html = rendered.get("html")
    if not html:
        lines = headers + text
    else:
        alternative = _part(str(html), "html")
        boundary = f"=_lf_{hashlib.sha256(item.key.encode()).hexdigest()[:24]}"
        # "=_" cannot occur in quoted-printable text; 7bit text is checked
        while any(boundary in part for part in (text[-1], alternative[-1])):
            boundary += "_"
        lines = [
            *headers,
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            f"--{boundary}",
            *text,
            f"--{boundary}",
            *alternative,
            f"--{boundary}--",
            "",
        ]
    return _CRLF.join(lines).encode("utf-8")  # only an SMTPUTF8 address is not ASCII


class SmtpProvider:
    """One SMTP connection, opened on the first send and reused for the batch."""

    def __init__(self, settings: MessagingSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if not s.smtp_host:
            raise DeliveryError("email is not configured: set LEADFLOW_SMTP_HOST or smtp.host")
        try:
            smtp: smtplib.SMTP
            if s.smtp_ssl:
                smtp = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=_tls()
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
            smtp.ehlo()
            if s.smtp_starttls and not s.smtp_ssl:
                smtp.starttls(context=_tls())
                smtp.ehlo()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP login refused: {_smtp_text(exc)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot reach SMTP server {s.smtp_host}:{s.smtp_port}: {exc}"
            ) from None
        return smtp

    def send(self, item: Outgoing) -> str:
        data = email_bytes(item, self.settings, self.clock)
        sender = parseaddr(self.settings.smtp_from)[1] or self.settings.smtp_from
        fresh = self._smtp is None
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            return self._transaction(self._smtp, sender, item.to, data)
        except _Stale:
            # the reused connection was closed by the server before MAIL FROM: nothing was
            # sent yet, so one fresh connection is safe
            self.close()
            if fresh:
                raise DeliveryError("SMTP server closed the connection") from None
            self._smtp = self._connect()
            try:
                return self._transaction(self._smtp, sender, item.to, data)
            except _Stale:
                self.close()
                raise DeliveryError("SMTP server closed the connection") from None

    def _transaction(self, smtp: smtplib.SMTP, sender: str, to: str, data: bytes) -> str:
        options = []
        if not (sender + to).isascii():
            if not smtp.has_extn("smtputf8"):
                raise DeliveryError(f"SMTP server cannot take the address {to!r}", True)
            options.append("SMTPUTF8")
        try:
            code, reply = smtp.mail(sender, options)
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            raise _Stale from None
        if code == 421:  # "closing the channel" (a per-session limit): nothing sent yet
            self.close()
            raise _Stale
        try:
            if code != 250:
                # Refusing the sender (530 authentication required, 550 not allowed to
                # send as this address) is about the server's settings, the same for
                # every message, never about this one: retried, as a wrong password is,
                # so a fix to the settings sends them all instead of finding them dead.
                raise _refused("sender refused", code, reply, permanent=False)
            code, reply = smtp.rcpt(to)
            if code not in (250, 251):
                raise _refused(f"recipient {to} refused", code, reply)
            code, reply = smtp.data(data)
            if code != 250:
                raise _refused("message refused", code, reply)
        except DeliveryError:
            self._reset()
            raise
        except smtplib.SMTPResponseException as exc:
            self._reset()
            raise _refused("SMTP error", exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryError(f"SMTP connection failed: {exc}") from None
        return f"{code} {reply.decode('utf-8', 'replace')}"

    def _reset(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


class _Stale(Exception):
    pass


def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _smtp_text(exc: smtplib.SMTPResponseException) -> str:
    error = exc.smtp_error
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    return f"{exc.smtp_code} {text}"


def _refused(
    what: str, code: int, reply: bytes | str, permanent: bool | None = None
) -> DeliveryError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    response = f"{code} {text}"
    final = 500 <= code < 600 if permanent is None else permanent
    return DeliveryError(f"{what}: {response}", permanent=final, response=response)


# --- HTTP ---------------------------------------------------------------------------------

_RETRY_STATUS = {408, 409, 425, 429}
"""4xx answers that mean "not now" (timeout, a request with the same key in flight,
too early, rate limited): retried like 5xx. Every other 4xx is permanent."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a POST must not silently turn into a GET elsewhere


_opener = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: Any, headers: Mapping[str, str], timeout: float) -> str:
    """POST ``body`` as JSON; the response's status and start of its body, or DeliveryError."""
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            text = response.read(2000).decode("utf-8", "replace")
            return f"{response.status} {text}".strip()
    except urllib.error.HTTPError as exc:
        text = ""
        if exc.fp is not None:
            text = exc.read(2000).decode("utf-8", "replace")
            exc.close()
        answer = f"{exc.code} {text}".strip()
        permanent = 300 <= exc.code < 500 and exc.code not in _RETRY_STATUS
        moved = exc.headers.get("Location") if 300 <= exc.code < 400 and exc.headers else None
        if moved:  # not followed (a POST is not replayed elsewhere): say where to point it
            answer = f"{answer}; redirected to {moved}: set the webhook's url to it"
        raise DeliveryError(f"HTTP {answer[:300]}", permanent, answer) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach {url}: {reason}") from None


def header_pair(text: str | None) -> dict[str, str]:
    """``'Authorization: Bearer x'`` as a one-entry dict."""
    if not text:
        return {}
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise DeliveryError(f"auth header setting must read 'Name: value', found {text!r}")
    return {name.strip(): value.strip()}


class WebhookProvider:
    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings

    def send(self, item: Outgoing) -> str:
        body = item.rendered.get("body")
        if body is None:
            body = {
                "contact_id": item.contact_id,
                "workflow": item.payload.get("workflow"),
                "node": item.payload.get("node"),
                "at": item.payload.get("at"),
            }
        headers = {"Idempotency-Key": item.key}
        for prefix, extra in (self.settings.webhook_headers or {}).items():
            if item.to.startswith(prefix) and isinstance(extra, Mapping):
                headers.update({str(k): str(v) for k, v in extra.items()})
        return post_json(item.to, body, headers, self.settings.http_timeout)

    def close(self) -> None:
        pass


class SmsProvider:
    """An HTTP SMS gateway: ``sms.url``, ``sms.auth_header`` and the ``sms.body`` template
    (JSON whose texts are rendered with ``to``, ``text``, ``sender``, ``contact_id``,
    ``key``)."""

    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings

    def send(self, item: Outgoing) -> str:
        from engine.errors import ActionFailed
        from engine.messaging.render import render_string
        from engine.messaging.values import render_json

        s = self.settings
        if not s.sms_url:
            raise DeliveryError("SMS is not configured: set LEADFLOW_SMS_URL or sms.url")
        variables = {
            "to": item.to,
            "text": str(item.rendered.get("text", "")),
            "sender": s.sms_from or "",
            "contact_id": item.contact_id,
            "key": item.key,
        }
        try:
            body = render_json(
                s.sms_body,
                lambda text, where: render_string(text, variables, f"setting sms.body {where}"),
            )
        except ActionFailed as exc:
            raise DeliveryError(str(exc)) from None
        headers = {"Idempotency-Key": item.key, **header_pair(s.sms_auth_header)}
        return post_json(s.sms_url, body, headers, s.http_timeout)

    def close(self) -> None:
        pass


class Providers:
    """The providers of one delivery batch, created on first use and closed at its end."""

    def __init__(self, settings: MessagingSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._smtp: SmtpProvider | None = None
        self._webhook = WebhookProvider(settings)
        self._sms = SmsProvider(settings)

    def send(self, item: Outgoing) -> str:
        if item.channel == "email":
            if self._smtp is None:
                self._smtp = SmtpProvider(self.settings, self.clock)
            return self._smtp.send(item)
        if item.channel == "sms":
            return self._sms.send(item)
        if item.channel == "webhook":
            return self._webhook.send(item)
        raise DeliveryError(f"unknown channel {item.channel!r}", permanent=True)

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
