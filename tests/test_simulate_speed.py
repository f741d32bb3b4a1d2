"""What simulate and backtest do to run faster and in less memory must not change a single
result: the streaming file reader, letting messages go once applied, the non-durable
throwaway store, the summary's shared strings, and the cheaper template rendering."""

from __future__ import annotations

import gc
import json
import weakref
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Template
from sqlalchemy import Connection, func, select, text

from engine.backtest import replay
from engine.clock import SystemClock, VirtualClock, format_timestamp
from engine.errors import ActionFailed
from engine.messaging import render
from engine.runner import Runner
from engine.segment import Message, Rejection, read_lines
from engine.simulate import _SPENT, read_event_file, run_history, simulate, simulation_store
from engine.store.db import open_engine
from engine.store.tables import (
    account_scores,
    accounts,
    audit,
    contacts,
    list_members,
    outbox,
    rejected,
    runs,
    scores,
)
from engine.validation import validate_paths
from engine.views import _Share, summary

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
EXAMPLES = WORKFLOWS / "examples" / "events.jsonl"


# --- reading the file -----------------------------------------------------------------------


def _read_whole(path: Path) -> tuple[list[Message], list[Rejection]]:
    """How read_event_file read a file before it streamed it: every line at once."""
    with path.open("rb") as handle:
        raw = handle.readlines()
    probe = SystemClock().now()
    anchor = probe
    for item in read_lines(raw, probe):
        if isinstance(item, Message) and item.timestamp != probe:
            anchor = item.timestamp
            break
    messages: list[Message] = []
    rejections: list[Rejection] = []
    for item in read_lines(raw, anchor):
        (rejections if isinstance(item, Rejection) else messages).append(item)  # type: ignore[arg-type]
    messages.sort(key=lambda m: m.timestamp)
    return messages, rejections


def test_streamed_file_reads_as_the_whole_file_did(tmp_path: Path) -> None:
    lines = [
        b'{"type": "track", "userId": "a", "event": "Later", "timestamp": "2026-01-07T00:00:00Z"}',
        b'{"type": "track", "userId": "b", "event": "No time"}',
        b"",
        b"   ",
        b"not json",
        b'{"type": "identify", "userId": "c", "anonymousId": "x", "traits": {"n": 1},'
        b' "timestamp": "2026-01-05T10:00:00+02:00"}\r',
        b'{"type": "track", "userId": "d", "event": "Bad \xff byte",'
        b' "timestamp": "2026-01-06T00:00:00Z"}',
        b'{"type": "alias", "userId": "e", "previousId": "x", "timestamp": "2026-01-05T00:00:00Z"}',
        b'{"type": "track", "userId": "f", "event": "Same moment",'
        b' "timestamp": "2026-01-05T00:00:00Z", "messageId": 7}',
        b'{"type": "group", "userId": "f", "groupId": "", "timestamp": "2026-01-05T00:00:00Z"}',
        b'{"type": "page", "anonymousId": "g", "name": "Home"}',
    ]
    for ending in (b"\n", b"\r\n"):
        path = tmp_path / "events.jsonl"
        path.write_bytes(ending.join(lines))  # no newline after the last line
        assert read_event_file(path) == _read_whole(path)
    assert read_event_file(EXAMPLES) == _read_whole(EXAMPLES)


def test_a_file_without_any_timestamp_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "track", "userId": "a", "event": "E"}\n')
    messages, rejections = read_event_file(path)
    old_messages, old_rejections = _read_whole(path)
    assert rejections == old_rejections == []
    assert [(m.contact_id, m.event) for m in messages] == [("a", "E")]
    # "now" differs between the two reads: only its kind is compared
    assert messages[0].timestamp.tzinfo == old_messages[0].timestamp.tzinfo


# --- the summary ----------------------------------------------------------------------------


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 6)


def _old_summary(connection: Connection) -> dict[str, Any]:
    """engine.views.summary before its strings were shared (the reference)."""
    ids = list(
        connection.scalars(
            select(contacts.c.id).where(contacts.c.merged_into.is_(None)).order_by(contacts.c.id)
        )
    )
    views: dict[str, dict[str, Any]] = {}
    for row in connection.execute(select(contacts).where(contacts.c.id.in_(ids))):
        views[row.id] = {
            "scores": {},
            "grade": row.grades.get("GRADE"),
            "grades": dict(row.grades),
            "lists": [],
            "attributes": dict(row.attributes),
            "account": row.account_id,
        }
    for row in connection.execute(select(scores).where(scores.c.contact_id.in_(ids))):
        views[row.contact_id]["scores"][row.name] = _number(row.value)
    members = select(list_members.c.contact_id, list_members.c.list_name)
    for contact_id, name in connection.execute(members.where(list_members.c.contact_id.in_(ids))):
        views[contact_id]["lists"].append(name)
    for view in views.values():
        view["lists"].sort()
        view["scores"] = dict(sorted(view["scores"].items()))
    rolled: dict[str, dict[str, float]] = defaultdict(dict)
    for row in connection.execute(select(account_scores)):
        rolled[row.account_id][row.name] = _number(row.value)
    account_map = {
        row.id: {"scores": dict(sorted(rolled.get(row.id, {}).items())), "traits": dict(row.traits)}
        for row in connection.execute(select(accounts).order_by(accounts.c.id))
    }
    messages = []
    for row in connection.execute(select(outbox).order_by(outbox.c.created_at, outbox.c.id)):
        entry: dict[str, Any] = {"contact": row.contact_id, "channel": row.channel}
        rendered = row.payload.get("rendered") or {}
        for key in ("template", "subject", "text", "url"):
            # an SMS's text and a subject as the contact gets them; an email's subject
            # from its template's Subject line when the node sets none
            if key in row.payload or (key == "subject" and rendered.get("subject")):
                shown = key in ("subject", "text") and key in rendered
                entry[key] = rendered[key] if shown else row.payload[key]
        entry["workflow"] = row.payload.get("workflow")
        entry["at"] = format_timestamp(row.created_at)
        messages.append(entry)
    rejections = [
        {"line": row.line, "error": row.reason}
        for row in connection.execute(select(rejected).order_by(rejected.c.id))
    ]
    return {
        "contacts": views,
        "accounts": account_map,
        "messages": messages,
        "rejected": rejections,
    }


def _replayed(tmp_path: Path, name: str, consume: bool) -> Any:
    validation = validate_paths([WORKFLOWS])
    assert validation.ok, validation.problems
    messages, rejections = read_event_file(EXAMPLES)
    url = f"sqlite:///{tmp_path / name}"
    engine = replay(validation, [WORKFLOWS], messages, rejections, url, consume=consume)
    return engine, messages


def test_summary_equals_the_reference_and_consuming_changes_nothing(tmp_path: Path) -> None:
    kept, messages = _replayed(tmp_path, "kept.db", consume=False)
    spent, consumed = _replayed(tmp_path, "spent.db", consume=True)
    try:
        assert messages and _SPENT not in messages
        # the store's whole history is written first; the replay then runs (and lets go
        # of) a deduplicated copy, so the caller's list is let go of at once
        assert consumed == []
        with kept.connect() as one, spent.connect() as two:
            reference = _old_summary(one)
            assert reference["contacts"] and reference["messages"]
            assert json.dumps(summary(one)) == json.dumps(reference)
            assert json.dumps(summary(two)) == json.dumps(reference)
    finally:
        kept.dispose()
        spent.dispose()


def test_simulate_equals_the_reference_summary(tmp_path: Path) -> None:
    outcome = simulate([WORKFLOWS], EXAMPLES)
    engine, messages = _replayed(tmp_path, "store.db", consume=False)
    try:
        with engine.connect() as connection:
            assert json.dumps(outcome.result) == json.dumps(_old_summary(connection))
        assert outcome.events == len(messages)
        assert outcome.started == messages[0].timestamp
    finally:
        engine.dispose()


def test_a_throwaway_store_keeps_only_what_the_run_reads(tmp_path: Path) -> None:
    """A throwaway simulation store writes no audit rows and no runs of ``reentry:
    always`` workflows that ended as they began (nothing reads them back), and that
    changes nothing else; a store given as ``database_url`` keeps all of it."""
    paths = [WORKFLOWS, WORKFLOWS / "models"]  # the models decay scores, with audit rows
    validation = validate_paths(paths)
    assert any(model.decay for model in validation.models)
    always = {w.id for w in validation.workflows if w.reentry.mode == "always"}
    assert always and always != {w.id for w in validation.workflows}
    results, audit_rows, run_rows = [], [], []
    for url in (None, f"sqlite:///{tmp_path / 'kept.db'}"):
        messages, rejections = read_event_file(EXAMPLES)
        start = messages[0].timestamp
        with simulation_store(validation, paths, start, url) as (runner, clock):
            assert runner.history is (url is not None)
            run_history(runner, clock, messages, rejections, None, None, "-", complete=False)
            with runner.engine.connect() as connection:
                results.append(json.dumps(summary(connection)))
                audit_rows.append(connection.scalar(select(func.count()).select_from(audit)))
                run_rows.append(
                    Counter(connection.execute(select(runs.c.workflow_id, runs.c.state)))
                )
    assert results[0] == results[1]
    assert audit_rows[0] == 0 and audit_rows[1] > 100
    thrown, kept = run_rows
    # run ids are random: the runs are compared by workflow and state
    assert {k: n for k, n in kept.items() if k[0] not in always} == {
        k: n for k, n in thrown.items() if k[0] not in always
    }
    assert not thrown - kept  # an always workflow's run that waited is written as ever
    left_out = kept - thrown
    assert left_out and {w for w, _ in left_out} <= always
    assert all(state not in ("active", "waiting") for _, state in left_out)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_replay_pauses_the_collector_and_sweeps_between_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a step the cyclic collector is off; garbage a step leaves in a cycle is
    gone by the next step (a sweep ran in between); afterwards the collector is on."""
    validation = validate_paths([WORKFLOWS])
    messages, rejections = read_event_file(EXAMPLES)
    seen: list[tuple[bool, bool]] = []  # (collector on, the last step's cycle still alive)
    left: list[weakref.ref[_Cycle]] = []
    ingest = Runner.ingest

    def watched(self: Runner, *args: Any, **kwargs: Any) -> Any:
        seen.append((gc.isenabled(), bool(left) and left[-1]() is not None))
        left.append(weakref.ref(_Cycle()))  # garbage only the collector can free
        return ingest(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "ingest", watched)
    monkeypatch.setattr("engine.simulate.BATCH_SIZE", 10)  # many steps
    assert gc.isenabled()
    with simulation_store(validation, [WORKFLOWS], messages[0].timestamp, None) as (runner, clock):
        run_history(runner, clock, messages, rejections, None, None, "-", complete=False)
    assert len(seen) > 5
    assert seen[0] == (False, False)
    assert all(state == (False, False) for state in seen[1:])
    assert gc.isenabled()


def test_share_keeps_values_and_shares_equal_strings() -> None:
    share = _Share()
    one = share("".join(["SCO", "RE"]))
    two = share("".join(["SC", "ORE"]))
    assert one == "SCORE" and one is two
    assert share(None) is None and share(3) == 3
    first = share.mapping({"k" + "ey": "va" + "lue", "n": 1.5, "l": [1]})
    second = share.mapping({"ke" + "y": "val" + "ue", "n": 2})
    assert first == {"key": "value", "n": 1.5, "l": [1]}
    assert list(first) == ["key", "n", "l"]
    assert first["key"] is second["key"]
    assert next(iter(first)) is next(iter(second))


# --- the throwaway store --------------------------------------------------------------------


def test_only_the_throwaway_store_gives_up_durability(tmp_path: Path) -> None:
    durable = open_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    throwaway = open_engine(f"sqlite:///{tmp_path / 'sim.db'}", durable=False)
    try:
        with durable.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA page_size")).scalar() == 16384
            # kept stores cache more pages (engine.store.db); only the worker's checkpoint
            # less often than SQLite's default
            assert connection.execute(text("PRAGMA cache_size")).scalar() == -32768
            assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
        with throwaway.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 0  # OFF
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "truncate"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA page_size")).scalar() == 16384
        # rolling back still works
        with throwaway.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(RuntimeError), throwaway.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError
        with throwaway.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        durable.dispose()
        throwaway.dispose()


# --- rendering ------------------------------------------------------------------------------


TEMPLATES = [
    "Plain text, no tags at all.\n",
    "",
    "Hi {{ contact.attributes.FIRSTNAME | default('there') }},\n\n{{ unsubscribe_url }}\n",
    "{{ contact.scores.SCORE }} {{ contact.lists | join(', ') }} {{ workflow }} {{ now }}",
    "{% for i in range(3) %}{{ i }}{% endfor %} {{ dict(a=1).a }} {{ namespace(x=2).x }}",
    "{{ contact.attributes.missing }}",
    "{{ nothing }}",
    "{{ contact.__class__ }}",
    "{{ contact.attributes.items() | list | length }} {{ contact.attributes.keys is callable }}",
    "{% set x = 5 %}{{ x * contact.scores.SCORE }}{# comment #}",
    "{{ 1 / 0 }}",
    "{% raw %}{{ not rendered }}{% endraw %}",
    "a\r\nb\rc\n",
    "{{ '<b>' }} <i>",
    "{% if",
]


def _values() -> dict[str, Any]:
    return {
        "contact": {
            "id": "c1",
            "attributes": render._Scope("contact.attributes", {"FIRSTNAME": "Ada <&>"}),
            "scores": render._Scope("contact.scores", {"SCORE": 12}),
            "grades": render._Scope("contact.grades", {}),
            "grade": None,
            "lists": ["A", "B"],
            "account_id": None,
        },
        "workflow": "w",
        "now": "2026-01-05T00:00:00Z",
        "unsubscribe_url": "https://x.test/unsubscribe/t",
    }


def _reference(source: str, html: bool) -> tuple[bool, str]:
    """render_string as it was: ``Template.render`` with Jinja's own context set-up."""
    try:
        template: Template = (render._HTML if html else render._TEXT).from_string(source)
        return True, template.render(_values())
    except Exception as exc:
        return False, str(getattr(exc, "message", None) or exc)


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize("source", TEMPLATES)
def test_render_string_renders_as_jinja_does(source: str, html: bool) -> None:
    ok, expected = _reference(source, html)
    for _ in range(2):  # compiled once, then cached
        try:
            got = render.render_string(source, _values(), "t", html=html)
        except ActionFailed as exc:
            assert not ok, exc
            assert str(exc).startswith("t: ") and expected in str(exc)
            continue
        assert ok and got == expected


def test_plain_text_is_rendered_once() -> None:
    source = "Subject only, the same for everyone " + "x" * 7
    compiled = render._compile(source, False)
    assert compiled.constant == source
    assert render.render_string(source, {}, "t") == source
    assert render._compile("Hi {{ contact.id }}", False).constant is None
    assert render._compile("{{ 'x' }}", False).constant is None


def test_render_errors_keep_their_messages() -> None:
    with pytest.raises(ActionFailed, match=r"contact.attributes.missing is not set"):
        render.render_string("{{ contact.attributes.missing }}", _values(), "t")
    with pytest.raises(ActionFailed, match=r"nothing is not a template variable"):
        render.render_string("{{ nothing }}", _values(), "t")
    with pytest.raises(ActionFailed, match=r"t: syntax error on line 3"):
        render.render_string("{% if", _values(), "t", first_line=3)
    with pytest.raises(ActionFailed, match=r"ZeroDivisionError"):
        render.render_string("{{ 1 / 0 }}", _values(), "t")
    with pytest.raises(ActionFailed, match=r"unsafe|access to attribute"):
        render.render_string("{{ contact.__class__.__mro__ }}", _values(), "t")


# --- the whole history written first ---------------------------------------------------------

_EVENT_NAMES = (
    "Signed Up",
    "Subscription Confirmed",
    "Email Opened",
    "Email Clicked",
    "Ebook Downloaded",
    "Page Viewed",
    "Video Watched",
    "Event Attended",
    "Quote Requested",
    "Contact Sales Requested",
    "Order Completed",
    "NPS Answered",
)


def _history(people: int, seed: int) -> list[bytes]:
    """Identifies, groups, track events of every name the shipped workflows react to,
    anonymous visitors later aliased or identified with both ids, and resent messageIds,
    over four months, one moment per message (none shared)."""
    import random
    from datetime import timedelta

    from engine.clock import parse_timestamp

    rng = random.Random(seed)
    start = parse_timestamp("2026-01-05T08:00:00Z")
    moments = rng.sample(range(120 * 24 * 60), people * 12)
    moments.sort()
    lines: list[bytes] = []
    sent: list[bytes] = []
    for number, minute in enumerate(moments):
        who = rng.randrange(people)
        user = f"p{who:04d}@example.test"
        stamp = format_timestamp(start + timedelta(minutes=minute))
        message: dict[str, Any] = {"timestamp": stamp, "messageId": f"h{number:06d}"}
        roll = rng.random()
        if roll < 0.08:
            message |= {
                "type": "identify",
                "userId": user,
                "traits": {
                    "email": user,
                    "job_title": rng.choice(["VP Marketing", "Student", "Engineer", "CEO"]),
                    "company_size": rng.choice([5, 50, 500, 5000]),
                    "country": rng.choice(["US", "DE", "FR"]),
                },
            }
        elif roll < 0.11:
            message |= {"type": "group", "userId": user, "groupId": f"acct{who % 17}"}
        elif roll < 0.14:
            message |= {"type": "alias", "userId": user, "previousId": f"anon-{who}"}
        elif roll < 0.16:
            message |= {"type": "identify", "userId": user, "anonymousId": f"anon-{who}"}
        else:
            name = rng.choice(_EVENT_NAMES)
            properties: dict[str, Any] = {"path": rng.choice(["/pricing", "/blog", "/careers"])}
            if name == "Video Watched":
                properties["percent"] = rng.choice([10, 50, 90])
            if name == "NPS Answered":
                properties["score"] = rng.randrange(11)
            if rng.random() < 0.15:
                message |= {"anonymousId": f"anon-{who}"}
            else:
                message |= {"userId": user}
            message |= {"type": "track", "event": name, "properties": properties}
        line = json.dumps(message).encode()
        lines.append(line)
        if rng.random() < 0.03:
            sent.append(line)
        if sent and rng.random() < 0.03:
            lines.append(sent.pop(0))  # the same message again, later in the file
    return lines


def _dump(connection: Connection) -> dict[str, list[str]]:
    """Every row that a replay writes, without the columns that differ by chance (row
    ids, run ids, the moment an event was received)."""
    from engine.store.tables import audit, events, runs, waits

    volatile = {"id", "run_id", "received_at", "idempotency_key", "lease_owner", "lease_until"}
    dump: dict[str, list[str]] = {}
    for table in (contacts, scores, list_members, accounts, account_scores, events, audit):
        dump[table.name] = sorted(
            json.dumps([str(v) for k, v in row._mapping.items() if k not in volatile])
            for row in connection.execute(select(table))
        )
    for table in (runs, waits, outbox):
        dump[table.name] = sorted(
            json.dumps(
                [str(v) for k, v in row._mapping.items() if k not in volatile and k != "payload"]
            )
            for row in connection.execute(select(table))
        )
    return dump


@pytest.mark.parametrize("seed", [1, 2])
def test_writing_the_history_first_changes_no_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The store's whole history written at once (``store_history``) and then only run,
    against the same messages ingested batch by batch: every row the replays wrote is
    the same, across many batches (60 messages each) and waits that fall between them."""
    import engine.simulate as simulation
    from engine.catalog import deploy
    from engine.clock import VirtualClock
    from engine.runner import Runner
    from engine.store.db import writer

    monkeypatch.setattr(simulation, "BATCH_SIZE", 60)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=60, seed=seed)) + b"\n")
    validation = validate_paths([WORKFLOWS])
    dumps = []
    for stored in (False, True):
        messages, rejections = read_event_file(path)
        assert not rejections
        engine = open_engine(f"sqlite:///{tmp_path / f'{stored}.db'}", durable=False)
        try:
            clock = VirtualClock(messages[0].timestamp)
            with writer(engine).begin() as connection:
                deploy(connection, [*validation.workflows, *validation.models], clock.now())
            runner = Runner(engine, clock)
            if stored:
                before = len(messages)
                messages = simulation.store_history(engine, messages, None)
                assert len(messages) < before  # the resent messageIds are gone
            simulation.run_clock(runner, clock, messages, None, stored=stored)
            with engine.connect() as connection:
                dumps.append(_dump(connection))
                merged = connection.scalar(
                    text("SELECT count(*) FROM contacts WHERE merged_into IS NOT NULL")
                )
                waited = connection.scalar(
                    text("SELECT count(*) FROM runs WHERE ended_at > entered_at")
                )
        finally:
            engine.dispose()
    plain, written = dumps
    # the history does what it is meant to: merges, waits that end later, emails sent
    assert merged and waited and plain["outbox"] and plain["audit"]
    for name in plain:
        assert written[name] == plain[name], name


def test_store_history_keeps_the_first_of_each_id_and_stores_only_up_to_until(
    tmp_path: Path,
) -> None:
    import engine.simulate as simulation
    from engine.clock import parse_timestamp
    from engine.segment import first_of_each_id
    from engine.store.tables import events

    def at(day: int) -> Any:
        return parse_timestamp(f"2026-01-0{day}T10:00:00Z")

    messages = [
        Message("track", "ann", at(1), "a", "Signed Up"),
        Message("track", "bob", at(2), "b", "Signed Up"),
        Message("track", "ann", at(2), "a", "Email Clicked"),  # resent: "a" again
        Message("track", "bob", at(3), None, "Email Opened"),
        Message("track", "ann", at(4), "c", "Email Opened"),
    ]
    seen = {"b"}
    assert [m.message_id for m in first_of_each_id(messages, seen)] == ["a", None, "c"]
    assert seen == {"a", "b", "c"}
    engine = open_engine(f"sqlite:///{tmp_path / 'h.db'}", durable=False)
    try:
        kept = simulation.store_history(engine, messages, until=at(3))
        assert [m.message_id for m in kept] == ["a", "b", None, "c"]
        with engine.connect() as connection:
            stored = connection.execute(
                select(events.c.message_id, events.c.name).order_by(events.c.timestamp)
            ).all()
        assert [tuple(row) for row in stored] == [
            ("a", "Signed Up"),
            ("b", "Signed Up"),
            (None, "Email Opened"),
        ]
    finally:
        engine.dispose()


def test_only_the_worker_lets_its_log_grow_between_checkpoints(tmp_path: Path) -> None:
    """The worker's store checkpoints at WORKER_CHECKPOINT_PAGES; the HTTP inbox's side
    file, which commits one page per accepted request, keeps SQLite's 1,000 pages: with
    synchronous=NORMAL its log is fsync'd only at checkpoints, and a bigger interval would
    let thousands of acknowledged requests wait for one. (Found by a reviewing helper.)"""
    from engine.service.inbox import Inbox, WriteGate
    from engine.store.db import WORKER_CHECKPOINT_PAGES

    url = f"sqlite:///{tmp_path / 'store.db'}"
    worker = open_engine(url, checkpoint_pages=WORKER_CHECKPOINT_PAGES)
    store = open_engine(url)
    inbox = Inbox(store, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC)), WriteGate(store))
    try:
        with worker.connect() as connection:
            pages = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar()
            assert pages == WORKER_CHECKPOINT_PAGES == 32768
        for n in range(1500):
            message = {"type": "track", "userId": f"u{n}", "event": "E", "messageId": f"m{n}"}
            inbox.put([message], "t")
        log = (tmp_path / "store.db-inbox-wal").stat().st_size
        assert log <= 1100 * 16384, f"{log / 2**20:.1f} MiB of inbox log"
    finally:
        inbox.close()
        store.dispose()
        worker.dispose()


def test_the_example_simulates_alike_on_every_backend(store_url: str) -> None:
    """The workflows one signal triggers are entered in workflow id order on both
    backends (PostgreSQL's GROUP BY came back in hash order: quote-request-fast-track
    then ran before consideration-stage set the score it reads, and 2 messages fewer
    went out)."""
    until = datetime(2026, 3, 21, tzinfo=UTC)
    throwaway = simulate([WORKFLOWS], EXAMPLES, until)
    stored = simulate([WORKFLOWS], EXAMPLES, until, database_url=store_url)
    assert json.dumps(stored.result) == json.dumps(throwaway.result)


def _workflow(workflow_id: str, trigger: str, nodes: dict[str, Any], start: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "version": 1,
        "name": workflow_id,
        "triggers": [{"type": "event", "event": trigger}],
        "reentry": "never",
        "start": start,
        "nodes": nodes,
    }


def test_runs_resume_in_the_order_they_were_made_on_every_backend(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs wait for one event: the one made first resumes first, so the other sees
    what it set, on both backends and across batches. PostgreSQL handed a contact's runs
    back in whatever order its plan read them (here by workflow id), and the reader ran
    first (found by review)."""
    wait = {"type": "wait_for_event", "event": "Go", "timeout": "P30D", "on_timeout": "done"}
    setter = _workflow(
        "zz-setter",
        "Signup",
        {
            "await": wait | {"next": "mark"},
            "mark": {"type": "set_attribute", "attribute": "FLAG", "value": "set", "next": "done"},
            "done": {"type": "exit"},
        },
        "await",
    )
    reader = _workflow(
        "aa-reader",
        "Later",
        {
            "await": wait | {"next": "check"},
            "check": {
                "type": "condition",
                "if": {"attribute": "FLAG", "eq": "set"},
                "then": "yes",
                "else": "no",
            },
            "yes": {"type": "set_attribute", "attribute": "SAW", "value": "yes", "next": "done"},
            "no": {"type": "set_attribute", "attribute": "SAW", "value": "no", "next": "done"},
            "done": {"type": "exit"},
        },
        "await",
    )
    folder = tmp_path / "workflows"
    folder.mkdir()
    for document in (setter, reader):
        (folder / f"{document['id']}.json").write_text(json.dumps(document))
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {"type": "track", "userId": "u1", "event": name, "messageId": f"m{n}"}
                | {"timestamp": f"2026-01-01T0{n}:00:00Z"}
            )
            + "\n"
            for n, name in enumerate(["Signup", "Later", "Go"], start=1)
        )
    )
    monkeypatch.setattr("engine.simulate.BATCH_SIZE", 1)  # each message a batch of its own
    outcome = simulate([folder], events, database_url=store_url, jobs=1)
    assert outcome.result["contacts"]["u1"]["attributes"] == {"FLAG": "set", "SAW": "yes"}
