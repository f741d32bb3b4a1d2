"""Rendering message content while a run executes.

Templates run in Jinja2's sandbox with strict undefined variables: a template that names
an attribute the contact does not have fails the run with the variable's name, and nothing
reaches the outbox. (``{{ contact.attributes.FIRSTNAME | default('there') }}`` is how a
template says a value is optional.)

What a template sees:

- ``contact``: ``id``, ``attributes``, ``scores`` (whole numbers print without ``.0``),
  ``grades``, ``grade`` (the first grade, or none), ``lists`` (sorted names), ``account_id``;
- ``account``: ``id`` and ``traits`` of the contact's account (empty without one);
- ``unsubscribe_url`` and ``confirm_url``: signed links to ``leadflow serve``;
- ``workflow`` (its id) and ``now`` (the run's moment, ISO-8601).

An email template is ``NAME.txt``: a header block (``Subject: ...`` and optionally
``Category: transactional``), a blank line and the text body; ``NAME.html`` beside it, if
present, is the HTML part (autoescaped). A template without a Subject line takes the node's
``subject``, or goes out without one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from engine.clock import format_timestamp
from engine.errors import ActionFailed
from engine.messaging.settings import public_url, secret
from engine.messaging.tokens import (
    CONFIRM,
    CONFIRM_PATH,
    UNSUBSCRIBE,
    UNSUBSCRIBE_PATH,
    link,
    make_token,
)

if TYPE_CHECKING:
    from engine.runner import RunContext, Wake

MARKETING = "marketing"
TRANSACTIONAL = "transactional"
CATEGORIES = (MARKETING, TRANSACTIONAL)

_HEADER = re.compile(r"(?i)(subject|category)[ \t]*:[ \t]?(.*)")


class _Scope(dict[str, Any]):
    """A dict that knows its place (``contact.attributes``) for error messages."""

    __slots__ = ("_lf_path",)

    def __init__(self, path: str, items: Mapping[str, Any]) -> None:
        super().__init__(items)
        self._lf_path = path


class _Missing(StrictUndefined):
    """StrictUndefined whose message names the variable the way a template writes it."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        path = getattr(self._undefined_obj, "_lf_path", None)
        if path is not None and self._undefined_hint is None:
            return f"{path}.{self._undefined_name} is not set for this contact"
        if self._undefined_hint is None and self._undefined_obj is missing:
            return f"{self._undefined_name} is not a template variable"
        return str(super()._undefined_message)


def _environment(html: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=_Missing, autoescape=html, keep_trailing_newline=True, auto_reload=False
    )


_TEXT = _environment(html=False)
_HTML = _environment(html=True)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A compiled template, what :meth:`jinja2.Template.render` would otherwise work out on
    every call, and the output of a template that is plain text (no tags at all)."""

    template: Template
    names: frozenset[str]
    """The top-level names it reads."""
    globals: dict[str, Any]
    """The template's globals, copied once: ``render`` copied them from a ``ChainMap``
    (slow to read) for every call, which was two thirds of a short template's time."""
    globals_keys: frozenset[str]
    constant: str | None
    """The output, when it cannot depend on the variables (only text, no tags)."""


@lru_cache(maxsize=1024)
def _compile(source: str, html: bool) -> _Compiled:
    """A compiled template and the top-level names it reads (compiling costs ~1 ms)."""
    env = _HTML if html else _TEXT
    parsed = env.parse(source)
    names = frozenset(meta.find_undeclared_variables(parsed))
    template = env.from_string(source)
    values = dict(template.globals)
    compiled = _Compiled(template, names, values, frozenset(values), None)
    plain = all(
        isinstance(node, nodes.Output)
        and all(isinstance(part, nodes.TemplateData) for part in node.nodes)
        for node in parsed.body
    )
    if plain:
        compiled = _Compiled(template, names, values, frozenset(values), _render(compiled, {}))
    return compiled


def _render(compiled: _Compiled, context: Mapping[str, Any]) -> str:
    """``compiled.template.render(context)``, step by step as Jinja 3.1 does it, with the
    globals copied once instead of on every call."""
    if compiled.constant is not None:
        return compiled.constant
    template = compiled.template
    env = template.environment
    parent = dict(compiled.globals, **dict(context))
    ctx = env.context_class(env, parent, template.name, template.blocks)
    ctx.globals_keys = set(compiled.globals_keys)
    try:
        return env.concat(template.root_render_func(ctx))
    except Exception:
        env.handle_exception()
    raise AssertionError("handle_exception always raises")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ParsedTemplate:
    subject: str | None
    category: str
    body: str
    body_line: int
    """Line of the file where the body starts (for error messages)."""


@lru_cache(maxsize=512)
def parse_template(source: str) -> ParsedTemplate:
    """Split a ``NAME.txt`` template into its header block and body."""
    lines = source.removeprefix("\ufeff").splitlines(keepends=True)
    headers: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = _HEADER.fullmatch(lines[index].rstrip("\r\n"))
        if match is None:
            break
        headers[match.group(1).lower()] = match.group(2).strip()
        index += 1
    if headers and index < len(lines) and not lines[index].strip():
        index += 1
    category = headers.get("category", MARKETING).lower() or MARKETING
    if category not in CATEGORIES:
        raise ValueError(f"Category must be marketing or transactional, found {category!r}")
    return ParsedTemplate(headers.get("subject"), category, "".join(lines[index:]), index + 1)


def render_string(
    source: str, context: Mapping[str, Any], what: str, html: bool = False, first_line: int = 1
) -> str:
    """Render with the strict sandbox; any problem is an :class:`ActionFailed` naming
    ``what`` (the template, the SMS text, the webhook body field)."""
    try:
        return _render(_compile(source, html), context)
    except TemplateSyntaxError as exc:
        line = exc.lineno + first_line - 1
        raise ActionFailed(f"{what}: syntax error on line {line}: {exc.message}") from None
    except TemplateError as exc:  # undefined variables, sandbox violations
        raise ActionFailed(f"{what}: {exc.message or exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise ActionFailed(f"{what}: {type(exc).__name__}: {exc}") from None


def check_syntax(source: str) -> None:
    """Raise TemplateSyntaxError when ``source`` does not parse as a template."""
    _compile(source, False)


def names_used(source: str, html: bool = False) -> frozenset[str]:
    try:
        return _compile(source, html).names
    except TemplateSyntaxError:
        return frozenset()


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# --- what a run renders with -------------------------------------------------------------


class _Links:
    """Per transaction: settings and the signing secret, read once."""

    def __init__(self, wake: Wake) -> None:
        self.public_url = public_url(wake.connection)
        self.secret = secret(wake.connection)


_links: WeakKeyDictionary[Wake, _Links] = WeakKeyDictionary()


def _links_for(wake: Wake) -> _Links:
    found = _links.get(wake)
    if found is None:
        found = _links[wake] = _Links(wake)
    return found


def unsubscribe_url(ctx: RunContext) -> str:
    links = _links_for(ctx.wake)
    token = make_token(links.secret, UNSUBSCRIBE, ctx.state.id, ctx.moment, ctx.workflow.id)
    return link(links.public_url, UNSUBSCRIBE_PATH, token)


def confirm_url(ctx: RunContext) -> str:
    links = _links_for(ctx.wake)
    token = make_token(links.secret, CONFIRM, ctx.state.id, ctx.moment, ctx.workflow.id)
    return link(links.public_url, CONFIRM_PATH, token)


def _account(ctx: RunContext) -> dict[str, Any]:
    account_id = ctx.state.account_id
    traits: Mapping[str, Any] = {}
    if account_id is not None:
        row = ctx.wake.batch.account_rows.get(account_id)
        if row is not None:
            traits = row["traits"]
        else:
            from sqlalchemy import select

            from engine.store.tables import accounts

            traits = (
                ctx.wake.connection.scalar(
                    select(accounts.c.traits).where(accounts.c.id == account_id)
                )
                or {}
            )
    return {"id": account_id, "traits": _Scope("account.traits", traits)}


def context(ctx: RunContext, names: frozenset[str]) -> dict[str, Any]:
    """The variables a template sees; links, the account and ``now`` only when it uses
    them (``names``: every top-level name the templates rendered with it read)."""
    state = ctx.state
    grades = _Scope("contact.grades", state.grades)
    values: dict[str, Any] = {
        "contact": {
            "id": state.id,
            "attributes": _Scope("contact.attributes", state.attributes),
            "scores": _Scope("contact.scores", {k: _number(v) for k, v in state.scores.items()}),
            "grades": grades,
            "grade": next(iter(grades.values()), None),
            "lists": sorted(state.lists),
            "account_id": state.account_id,
        },
        "workflow": ctx.workflow.id,
    }
    if "now" in names:  # a template cannot see a variable it does not name
        values["now"] = format_timestamp(ctx.moment)
    if "account" in names:
        values["account"] = _account(ctx)
    if "unsubscribe_url" in names:
        values["unsubscribe_url"] = unsubscribe_url(ctx)
    if "confirm_url" in names:
        values["confirm_url"] = confirm_url(ctx)
    return values


def _collapse(text: str) -> str:
    """A header value on one line (no header injection through a subject)."""
    return " ".join(text.split())


def render_email(ctx: RunContext, template: str, subject: str | None) -> dict[str, Any]:
    """Subject, text, optional HTML, category and the unsubscribe link of one email."""
    catalog = ctx.wake.runner.templates
    source = catalog.sources.get(template)
    if template in catalog.unreadable:
        raise ActionFailed(f"email template {template!r}: {catalog.unreadable[template]}")
    if source is None:
        raise ActionFailed(f"unknown email template {template!r}")
    what = f"email template {template!r}"
    try:
        parsed = parse_template(source)
    except ValueError as exc:
        raise ActionFailed(f"{what}: {exc}") from None
    html_source = catalog.html.get(template)
    names = names_used(parsed.body) | names_used(subject or parsed.subject or "")
    if html_source is not None:
        names |= names_used(html_source, html=True)
    values = context(ctx, names | {"unsubscribe_url"})
    subject_source = subject if subject is not None else parsed.subject
    rendered: dict[str, Any] = {
        "category": parsed.category,
        "subject": _collapse(render_string(subject_source or "", values, f"{what} subject")),
        "text": render_string(parsed.body, values, what, first_line=parsed.body_line),
        "unsubscribe_url": values["unsubscribe_url"],
    }
    if html_source is not None:
        rendered["html"] = render_string(html_source, values, f"{what} (HTML)", html=True)
    return rendered


def render_text(ctx: RunContext, text: str, what: str = "text") -> str:
    return render_string(text, context(ctx, names_used(text)), what)
