"""The embedding API: open an engine on a URL, deploy workflows, feed events, read
contacts, run due work with a clock of your choosing.

    from engine.api import Leadflow
    flow = Leadflow("sqlite:///leads.db")
    flow.deploy(["workflows/consideration-stage.json"])
    flow.track("ann@acme.com", "Quote Requested")
    flow.contact("ann@acme.com")["scores"]          # {'SCORE': 30}
    flow.run_due()                                  # resume waits that came due
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from engine.catalog import DeployResult, catalog_stamp, deploy, deployed_workflow_ids
from engine.clock import Clock, SystemClock, format_timestamp
from engine.errors import InvalidWorkflow
from engine.problems import describe_json
from engine.runner import IngestReport, Runner
from engine.scoring.reapply import reapply_models
from engine.segment import Message, Rejection, parse_message, read_lines
from engine.store.db import open_engine, upgrade, writer
from engine.templates import TemplateCatalog
from engine.validation import validate_documents, validate_paths
from engine.views import contact_view


class Leadflow:
    """One store, one clock. Cheap to create; share one per process or thread.

    Deploys, pauses and resumes made through another object or process take effect at
    this one's next call (it compares :func:`~engine.catalog.catalog_stamp`, two small
    queries), as ``leadflow worker`` picks them up every 15 s."""

    def __init__(
        self,
        url: str | None = None,
        clock: Clock | None = None,
        templates: Iterable[str | Path] | str | Path = (),
        engine: Engine | None = None,
    ) -> None:
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url: expected a database URL as text, found {url!r}")
        self.clock = clock or SystemClock()
        self._owns_engine = engine is None
        if engine is None:
            self.engine = open_engine(url)
        else:  # the caller's engine, brought up to date as a URL would be, never disposed
            upgrade(engine)
            self.engine = engine
        self.runner = Runner(self.engine, self.clock, TemplateCatalog(_paths(templates)))
        self._stamp: tuple[int, tuple[str, ...]] | None = None

    def close(self) -> None:
        """Close the connections this object opened (an engine passed in stays open)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Leadflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- workflows ---------------------------------------------------------------------

    def deploy(
        self, sources: Iterable[str | Path | Mapping[str, Any]] | str | Path | Mapping[str, Any]
    ) -> list[DeployResult]:
        """Validate and store workflows (paths or documents, or one of them); raises
        InvalidWorkflow."""
        one = isinstance(sources, str | Path | Mapping)
        items: list[Any] = [sources] if one else list(sources)  # type: ignore[arg-type]
        documents = [s for s in items if isinstance(s, Mapping)]
        paths = [Path(s) for s in items if not isinstance(s, Mapping)]
        # a start_workflow may name a workflow deployed before, or given in this call
        with self.engine.connect() as connection:
            known = deployed_workflow_ids(connection)
        known |= {d["id"] for d in documents if isinstance(d.get("id"), str)}
        validation = validate_paths(paths, known=known) if paths else None
        problems = list(validation.problems) if validation else []
        workflows: list[Any] = [*validation.workflows, *validation.models] if validation else []
        if validation is not None:
            known |= {w.id for w in validation.workflows}
        if documents:
            checked = validate_documents(
                ((f"<document {i}>", d) for i, d in enumerate(documents)), known=known
            )
            problems.extend(checked.problems)
            workflows.extend([*checked.workflows, *checked.models])
        if problems:
            raise InvalidWorkflow(problems)
        with writer(self.engine).begin() as connection:
            results = deploy(connection, workflows, self.clock.now())
        self._stamp = None
        self._current()
        fresh = [r.workflow_id for r in results if r.status == "deployed"]
        reapply_models(self.runner, fresh, _aware(self.clock.now(), "the clock's now()"))
        return results

    # --- events ------------------------------------------------------------------------

    def send(self, messages: Iterable[Mapping[str, Any]], source: str = "api") -> IngestReport:
        """Segment-spec messages as dicts; bad ones (values JSON cannot hold, such as a
        datetime or NaN, included) are rejected and kept, not raised.

        Messages are written 10,000 to a transaction: if ``messages`` raises part way,
        the batches before are kept. Give each message a ``messageId`` and send them all
        again: the ones already taken count as duplicates."""
        now = _aware(self.clock.now(), "the clock's now()")
        self._current()
        items: list[Message | Rejection] = []
        for number, data in enumerate(messages, start=1):
            if not isinstance(data, Mapping):
                found = describe_json(data)
                items.append(
                    Rejection(
                        number, repr(data)[:2000], f"expected a message object, found {found}"
                    )
                )
                continue
            message = dict(data)
            try:
                json.dumps(message, allow_nan=False)
            except (TypeError, ValueError) as exc:
                reason = f"the message is not JSON: {exc}"
                items.append(Rejection(number, repr(message)[:2000], reason))
                continue
            try:
                items.append(parse_message(message, now, number))
            except ValueError as exc:
                items.append(Rejection(number, repr(message)[:2000], str(exc)))
        return self.runner.ingest(items, source)

    def ingest_lines(self, lines: Iterable[str | bytes], source: str = "-") -> IngestReport:
        """JSON Lines, as ``leadflow ingest`` reads them; written as :meth:`send` writes."""
        now = _aware(self.clock.now(), "the clock's now()")
        self._current()
        return self.runner.ingest(read_lines(lines, now), source)

    def track(
        self,
        user_id: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> IngestReport:
        message: dict[str, Any] = {
            "type": "track",
            "userId": user_id,
            "event": event,
            "properties": _object(properties),
        }
        return self.send([_stamp(message, timestamp, message_id)])

    def identify(
        self,
        user_id: str,
        traits: Mapping[str, Any],
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> IngestReport:
        message: dict[str, Any] = {"type": "identify", "userId": user_id, "traits": _object(traits)}
        return self.send([_stamp(message, timestamp, message_id)])

    # --- time --------------------------------------------------------------------------

    def run_due(self, now: datetime | None = None) -> int:
        """Resume due waits, fire quiet spells, schedules and decay ticks due at ``now``
        (an aware datetime; default: the clock's now). Returns how much was done: runs
        resumed or entered, plus scores lowered by decay."""
        moment = _aware(self.clock.now() if now is None else now, "now")
        self._current()
        return self.runner.run_timers(moment)

    # --- reading -----------------------------------------------------------------------

    def contact(self, contact_id: str, history: bool = False) -> dict[str, Any]:
        if not isinstance(contact_id, str):
            raise TypeError(f"contact_id: expected text, found {contact_id!r}")
        with self.engine.connect() as connection:
            return contact_view(connection, contact_id, history)

    def _current(self) -> None:
        """Read the catalog again if another object or process changed what is deployed."""
        with self.engine.connect() as connection:
            stamp = catalog_stamp(connection)
        if stamp != self._stamp:
            self.runner.reload()
            self._stamp = stamp


def _aware(moment: Any, what: str) -> datetime:
    """A moment from the caller, refused before any work if it has no time zone: compared
    with stored moments it raised half way through a batch of due waits."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{what}: expected a datetime, found {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{what}: expected an aware datetime (with a time zone, such as "
            f"datetime.now(UTC)), found the naive {moment.isoformat()}"
        )
    return moment


def _object(value: Mapping[str, Any] | None) -> Any:
    """Properties or traits as a dict; anything else goes on as it is, so the message is
    rejected with the reason, as a bad line would be."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else value


def _paths(value: Iterable[str | Path] | str | Path) -> list[Path]:
    """One path or several: a text is one path, not a list of one-letter names."""
    return [Path(value)] if isinstance(value, str | Path) else [Path(v) for v in value]


def _stamp(
    message: dict[str, Any], timestamp: datetime | str | None, message_id: str | None
) -> dict[str, Any]:
    if isinstance(timestamp, datetime):
        message["timestamp"] = format_timestamp(_aware(timestamp, "timestamp"))
    elif timestamp is not None:  # text is checked as a message's timestamp is
        message["timestamp"] = timestamp
    if message_id is not None:
        message["messageId"] = message_id
    return message
