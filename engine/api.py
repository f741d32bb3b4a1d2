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

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from engine.catalog import DeployResult, deploy
from engine.clock import Clock, SystemClock, format_timestamp
from engine.errors import InvalidWorkflow
from engine.runner import IngestReport, Runner
from engine.segment import Message, Rejection, parse_message, read_lines
from engine.store.db import open_engine, writer
from engine.templates import TemplateCatalog
from engine.validation import validate_documents, validate_paths
from engine.views import contact_view


class Leadflow:
    """One store, one clock. Cheap to create; share one per process or thread."""

    def __init__(
        self,
        url: str | None = None,
        clock: Clock | None = None,
        templates: Iterable[Path] = (),
        engine: Engine | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.engine = engine or open_engine(url)
        self.runner = Runner(self.engine, self.clock, TemplateCatalog(templates))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Leadflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- workflows ---------------------------------------------------------------------

    def deploy(self, sources: Iterable[str | Path | Mapping[str, Any]]) -> list[DeployResult]:
        """Validate and store workflows (paths or documents); raises InvalidWorkflow."""
        items = list(sources)
        documents = [s for s in items if isinstance(s, Mapping)]
        paths = [Path(s) for s in items if not isinstance(s, Mapping)]
        validation = validate_paths(paths) if paths else None
        problems = list(validation.problems) if validation else []
        workflows: list[Any] = [*validation.workflows, *validation.models] if validation else []
        if documents:
            checked = validate_documents((f"<document {i}>", d) for i, d in enumerate(documents))
            problems.extend(checked.problems)
            workflows.extend([*checked.workflows, *checked.models])
        if problems:
            raise InvalidWorkflow(problems)
        with writer(self.engine).begin() as connection:
            results = deploy(connection, workflows, self.clock.now())
        self.runner.reload()
        return results

    # --- events ------------------------------------------------------------------------

    def send(self, messages: Iterable[Mapping[str, Any]], source: str = "api") -> IngestReport:
        """Segment-spec messages as dicts; bad ones are rejected and kept, not raised."""
        now = self.clock.now()
        items: list[Message | Rejection] = []
        for number, data in enumerate(messages, start=1):
            try:
                items.append(parse_message(dict(data), now, number))
            except ValueError as exc:
                items.append(Rejection(number, repr(dict(data))[:2000], str(exc)))
        return self.runner.ingest(items, source)

    def ingest_lines(self, lines: Iterable[str | bytes], source: str = "-") -> IngestReport:
        return self.runner.ingest(read_lines(lines, self.clock.now()), source)

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
            "properties": dict(properties or {}),
        }
        return self.send([_stamp(message, timestamp, message_id)])

    def identify(
        self,
        user_id: str,
        traits: Mapping[str, Any],
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> IngestReport:
        message: dict[str, Any] = {"type": "identify", "userId": user_id, "traits": dict(traits)}
        return self.send([_stamp(message, timestamp, message_id)])

    # --- time --------------------------------------------------------------------------

    def run_due(self, now: datetime | None = None) -> int:
        """Resume due waits, fire quiet spells and schedules due at ``now`` (default: the
        clock's now). Returns how many runs were resumed or entered."""
        return self.runner.run_timers(now or self.clock.now())

    # --- reading -----------------------------------------------------------------------

    def contact(self, contact_id: str, history: bool = False) -> dict[str, Any]:
        with self.engine.connect() as connection:
            return contact_view(connection, contact_id, history)


def _stamp(
    message: dict[str, Any], timestamp: datetime | None, message_id: str | None
) -> dict[str, Any]:
    if timestamp is not None:
        message["timestamp"] = format_timestamp(timestamp)
    if message_id is not None:
        message["messageId"] = message_id
    return message
