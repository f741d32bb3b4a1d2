"""Segment-spec input: parsing every message type, every reason a line is rejected, and
ingestion into a store (duplicates, rejected lines kept, anonymous contacts merged)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import PAUSE_THEN_SCORE, at
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.errors import UnknownContact
from engine.segment import Message, Rejection, first_of_each_id, parse_message, read_lines
from engine.store.tables import audit, contacts, events, rejected, runs, waits

NOW = at("2026-01-05 12:00")


def one(line: str) -> Message | Rejection:
    (item,) = list(read_lines([line], NOW))
    return item


def reason(line: str) -> str:
    item = one(line)
    assert isinstance(item, Rejection), item
    return item.reason


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "track", "userId": "ann"', "invalid JSON: "),
        ("not json at all", "invalid JSON: "),
        ("[1, 2]", "expected a JSON object, found a list"),
        ('"track"', 'expected a JSON object, found text "track"'),
        (
            '{"type": "purchase", "userId": "ann"}',
            "unknown message type 'purchase' (expected one of identify, track, group, alias, "
            "page, screen)",
        ),
        (
            '{"userId": "ann", "event": "X"}',
            "the message has no 'type' (expected one of identify, track, group, alias, "
            "page, screen)",
        ),
        ('{"type": "track", "event": "X"}', "track message needs 'userId' or 'anonymousId'"),
        (
            '{"type": "identify", "userId": "", "anonymousId": null}',
            "identify message needs 'userId' or 'anonymousId'",
        ),
        (
            '{"type": "track", "userId": true, "event": "X"}',
            "'userId' must be text, found a boolean true",
        ),
        ('{"type": "track", "userId": "ann"}', "track message needs 'event'"),
        ('{"type": "track", "userId": "ann", "event": ""}', "track message needs 'event'"),
        ('{"type": "track", "userId": "ann", "event": 7}', "track message needs 'event'"),
        ('{"type": "group", "userId": "ann"}', "group message needs 'groupId'"),
        ('{"type": "group", "userId": "ann", "groupId": ""}', "group message needs 'groupId'"),
        ('{"type": "group", "userId": "ann", "groupId": true}', "group message needs 'groupId'"),
        (
            '{"type": "track", "userId": "ann", "event": "X", "timestamp": "yesterday"}',
            "expected an ISO-8601 timestamp, found 'yesterday'",
        ),
        (
            '{"type": "track", "userId": "ann", "event": "X", "timestamp": 1767607200}',
            "expected an ISO-8601 timestamp string, found 1767607200",
        ),
        (
            '{"type": "track", "userId": "ann", "event": "X", '
            '"timestamp": "0001-01-01T00:00:00+01:00"}',
            "expected an ISO-8601 timestamp, found '0001-01-01T00:00:00+01:00'",
        ),
        (
            '{"type": "identify", "userId": "ann", "traits": ["a"]}',
            "'traits' must be an object, found a list",
        ),
        (
            '{"type": "group", "userId": "ann", "groupId": "acme", "traits": "Acme"}',
            "'traits' must be an object, found text \"Acme\"",
        ),
        (
            '{"type": "track", "userId": "ann", "event": "X", "properties": 3}',
            "'properties' must be an object, found a number 3",
        ),
        (
            '{"type": "track", "userId": "ann", "event": "X", "messageId": {"a": 1}}',
            "'messageId' must be text, found an object",
        ),
        (
            '{"type": "track", "userId": "ann", "event": "X", "messageId": false}',
            "'messageId' must be text, found a boolean false",
        ),
        ('{"type": "alias", "userId": "ann"}', "alias message needs 'previousId' and 'userId'"),
        (
            '{"type": "alias", "anonymousId": "a-1", "previousId": "a-0"}',
            "alias message needs 'previousId' and 'userId'",
        ),
    ],
)
def test_every_reason_a_line_is_rejected(line: str, expected: str) -> None:
    assert reason(line).startswith(expected)
    if not expected.endswith(": "):
        assert reason(line) == expected


def test_rejections_keep_their_line_number_and_text() -> None:
    lines = [
        '{"type": "track", "userId": "ann", "event": "A"}\n',
        "\n",
        "   \n",
        '{"type": "track", "userId": "ann"}\n',
        b'{"type": "track", "userId": "bob", "event": "B"}\n',
        b"\xff\xfe garbage\n",
    ]
    items = list(read_lines(lines, NOW))
    assert [type(i).__name__ for i in items] == ["Message", "Rejection", "Message", "Rejection"]
    assert items[0].line == 1
    assert items[1] == Rejection(
        4, '{"type": "track", "userId": "ann"}', "track message needs 'event'"
    )
    assert items[2].line == 5
    assert items[3].line == 6
    assert items[3].reason == "not UTF-8 (byte 1 of the line, 0xff: invalid start byte)"
    numbered = list(read_lines(['{"type": "track"}'], NOW, first_line=41))
    assert numbered[0].line == 41


def test_track_identify_group_alias_page_screen() -> None:
    track = one(
        '{"type": "track", "userId": "ann", "event": "Quote Requested", "messageId": 17, '
        '"properties": {"seats": 25}, "timestamp": "2026-01-05T12:30:00+02:00"}'
    )
    assert track == Message(
        type="track",
        contact_id="ann",
        timestamp=datetime(2026, 1, 5, 10, 30, tzinfo=UTC),
        message_id="17",
        event="Quote Requested",
        properties={"seats": 25},
        line=1,
    )
    naive = one(
        '{"type": "track", "userId": "ann", "event": "X", "timestamp": "2026-01-05T08:00:00"}'
    )
    assert isinstance(naive, Message)
    assert naive.timestamp == datetime(2026, 1, 5, 8, tzinfo=UTC)
    identify = one('{"type": "identify", "userId": "ann", "traits": {"job_title": "CEO"}}')
    assert isinstance(identify, Message)
    assert (identify.type, identify.traits, identify.merge_from) == (
        "identify",
        {"job_title": "CEO"},
        None,
    )
    both = one('{"type": "identify", "userId": "ann", "anonymousId": "anon-1"}')
    assert isinstance(both, Message)
    assert (both.contact_id, both.merge_from) == ("ann", "anon-1")
    same = one('{"type": "identify", "userId": "ann", "anonymousId": "ann"}')
    assert isinstance(same, Message) and same.merge_from is None
    anonymous = one('{"type": "track", "anonymousId": "anon-1", "event": "X"}')
    assert isinstance(anonymous, Message) and anonymous.contact_id == "anon-1"
    group = one('{"type": "group", "userId": "ann", "groupId": 42, "traits": {"name": "Acme"}}')
    assert isinstance(group, Message)
    assert (group.group_id, group.traits) == ("42", {"name": "Acme"})
    alias = one('{"type": "alias", "userId": "ann", "previousId": "anon-9"}')
    assert isinstance(alias, Message)
    assert (alias.type, alias.contact_id, alias.merge_from) == ("alias", "ann", "anon-9")
    page = one(
        '{"type": "page", "userId": "ann", "name": "Pricing", "properties": {"url": "/pricing"}}'
    )
    assert isinstance(page, Message)
    assert (page.type, page.event, page.properties) == (
        "track",
        "Page Viewed",
        {"url": "/pricing", "name": "Pricing"},
    )
    screen = one('{"type": "screen", "userId": "ann"}')
    assert isinstance(screen, Message)
    assert (screen.type, screen.event) == ("track", "Screen Viewed")


def test_missing_timestamp_means_now() -> None:
    message = parse_message({"type": "track", "userId": "ann", "event": "X"}, NOW)
    assert message.timestamp == NOW
    null = parse_message({"type": "track", "userId": "ann", "event": "X", "timestamp": None}, NOW)
    assert null.timestamp == NOW


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(), st.binary())))
def test_read_lines_never_raises_and_yields_one_item_per_line(lines: list[Any]) -> None:
    items = list(read_lines(lines, NOW))
    texts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in lines]
    assert len(items) == sum(1 for t in texts if t.strip())


ZONES = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_messages = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "userId",
            "anonymousId",
            "event",
            "traits",
            "properties",
            "groupId",
            "previousId",
            "timestamp",
            "messageId",
            "name",
        ]
    ),
    st.one_of(
        _values,
        st.sampled_from(["identify", "track", "group", "alias", "page", "screen"]),
        st.datetimes(timezones=st.sampled_from(ZONES)).map(lambda d: d.isoformat()),
    ),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_messages, max_size=5))
def test_read_lines_on_message_shaped_objects_never_raises(messages: list[Any]) -> None:
    items = list(read_lines([json.dumps(m) for m in messages], NOW))
    assert len(items) == len(messages)
    for item in items:
        if isinstance(item, Message):
            assert item.timestamp.tzinfo is not None
            assert item.contact_id


# --- ingestion into a store ---------------------------------------------------------------

POINTS = {
    "id": "points",
    "version": 1,
    "triggers": [{"type": "event", "event": "Act"}],
    "reentry": "always",
    "start": "add",
    "nodes": {"add": {"type": "update_score", "add": 10}},
}
LISTS = {
    "id": "lists",
    "version": 1,
    "triggers": [{"type": "event", "event": "Join"}],
    "reentry": "always",
    "start": "join",
    "nodes": {
        "join": {
            "type": "set_attribute",
            "attribute": "joined",
            "from_property": "list",
            "next": "a",
        },
        "a": {
            "type": "condition",
            "if": {"property": "list", "eq": "A"},
            "then": "to-a",
            "else": "to-b",
        },
        "to-a": {"type": "add_to_list", "list": "A"},
        "to-b": {"type": "add_to_list", "list": "B"},
    },
}


def track(user: str, event: str, minute: int, message_id: str | None = None, **props: Any) -> str:
    data: dict[str, Any] = {
        "type": "track",
        "event": event,
        "properties": props,
        "timestamp": f"2026-01-05T10:{minute:02d}:00Z",
    }
    data["anonymousId" if user.startswith("anon") else "userId"] = user
    if message_id is not None:
        data["messageId"] = message_id
    return json.dumps(data)


@pytest.fixture
def flow(store_url: str) -> Any:
    engine = Leadflow(store_url, VirtualClock(at("2026-01-05 12:00")))
    engine.deploy([POINTS, LISTS])
    yield engine
    engine.close()


def test_duplicates_rejections_and_counts(flow: Leadflow) -> None:
    lines = [
        track("ann", "Act", 0, "m-1"),
        track("ann", "Act", 1, "m-2"),
        track("ann", "Act", 2, "m-1"),  # repeated within the batch
        '{"type": "track", "userId": "ann"}',
        "{broken",
        track("ann", "Act", 3),  # no messageId: never a duplicate
    ]
    report = flow.ingest_lines(lines, source="batch-1.jsonl")
    assert (report.taken, report.duplicates, report.rejected) == (3, 1, 2)
    assert flow.contact("ann")["scores"] == {"SCORE": 30}
    again = flow.ingest_lines(lines, source="batch-2.jsonl")
    assert (again.taken, again.duplicates, again.rejected) == (1, 3, 2)
    assert flow.contact("ann")["scores"] == {"SCORE": 40}
    with flow.engine.connect() as connection:
        rows = connection.execute(
            select(rejected.c.source, rejected.c.line, rejected.c.raw, rejected.c.reason).order_by(
                rejected.c.id
            )
        ).all()
        stored = connection.scalar(select(func.count()).select_from(events))
    assert [(r.source, r.line) for r in rows] == [
        ("batch-1.jsonl", 4),
        ("batch-1.jsonl", 5),
        ("batch-2.jsonl", 4),
        ("batch-2.jsonl", 5),
    ]
    assert rows[0].raw == '{"type": "track", "userId": "ann"}'
    assert rows[0].reason == "track message needs 'event'"
    assert rows[1].raw == "{broken"
    assert rows[1].reason.startswith("invalid JSON")
    assert stored == 4


def test_duplicates_across_small_batches(flow: Leadflow) -> None:
    lines = [track("ann", "Act", i % 60, f"m-{i % 7}") for i in range(30)]
    report = flow.runner.ingest(read_lines(lines, NOW), batch_size=4)
    assert (report.taken, report.duplicates, report.rejected) == (7, 23, 0)
    assert flow.contact("ann")["scores"] == {"SCORE": 70}


def test_send_rejects_bad_dicts_and_keeps_the_rest(flow: Leadflow) -> None:
    report = flow.send(
        [
            {"type": "track", "userId": "ann", "event": "Act", "messageId": "s-1"},
            {"type": "track", "event": "Act"},
            {"type": "track", "userId": "ann", "event": "Act", "messageId": "s-1"},
        ]
    )
    assert (report.taken, report.duplicates, report.rejected) == (1, 1, 1)
    assert [r.line for r in report.rejections] == [2]
    assert flow.contact("ann")["scores"] == {"SCORE": 10}


def _contact_rows(flow: Leadflow, contact_id: str, table: Any) -> int:
    with flow.engine.connect() as connection:
        return int(
            connection.scalar(
                select(func.count()).select_from(table).where(table.c.contact_id == contact_id)
            )
            or 0
        )


def test_identify_with_both_ids_merges_the_anonymous_contact(flow: Leadflow) -> None:
    lines = [
        track("ann", "Act", 0, "k-1"),
        track("ann", "Join", 1, "k-2", list="B"),
        '{"type": "identify", "userId": "ann", "traits": {"plan": "pro"}, '
        '"timestamp": "2026-01-05T10:01:30Z", "messageId": "k-2b"}',
        track("anon-1", "Act", 2, "k-3"),
        track("anon-1", "Act", 3, "k-4"),
        track("anon-1", "Join", 4, "k-5", list="A"),
        '{"type": "identify", "anonymousId": "anon-1", "traits": {"plan": "free", "city": "Oslo"},'
        ' "timestamp": "2026-01-05T10:04:30Z", "messageId": "k-5b"}',
        '{"type": "identify", "userId": "ann", "anonymousId": "anon-1", '
        '"timestamp": "2026-01-05T10:05:00Z", "messageId": "k-6"}',
        track("anon-1", "Act", 6, "k-7"),  # the anonymous id now lands on ann
    ]
    report = flow.ingest_lines(lines)
    assert (report.taken, report.duplicates, report.rejected) == (9, 0, 0)
    ann = flow.contact("ann", history=True)
    assert ann["scores"] == {"SCORE": 10 + 20 + 10}
    assert ann["lists"] == ["A", "B"]
    # the known contact's attributes win; the anonymous one's fill the gaps
    assert ann["attributes"] == {"joined": "B", "plan": "pro", "city": "Oslo"}
    assert flow.contact("anon-1")["scores"] == ann["scores"]  # redirected to ann
    assert _contact_rows(flow, "ann", events) == 9
    assert _contact_rows(flow, "anon-1", events) == 0
    assert _contact_rows(flow, "anon-1", runs) == 0
    assert _contact_rows(flow, "anon-1", audit) == 0
    # history is kept: the anonymous contact's own changes, then the merge, then ann's
    assert [(c["old"], c["new"], c["cause"]) for c in ann["score_history"]] == [
        (0, 10, "track Act (k-1)"),
        (0, 10, "track Act (k-3)"),
        (10, 20, "track Act (k-4)"),
        (10, 30, "merge of anon-1"),
        (30, 40, "track Act (k-7)"),
    ]
    with flow.engine.connect() as connection:
        merged = connection.scalar(select(contacts.c.merged_into).where(contacts.c.id == "anon-1"))
    assert merged == "ann"


def test_a_merged_contacts_waiting_run_resumes_on_the_known_contact(flow: Leadflow) -> None:
    """Waits have no index by contact (revision 0006): a merge finds them through their
    runs, and the wait then resumes for the known contact."""
    flow.deploy([PAUSE_THEN_SCORE])
    flow.ingest_lines(
        [
            track("anon-9", "Signed Up", 0, "w-1"),
            track("dan", "Act", 1, "w-2"),
            '{"type": "alias", "userId": "dan", "previousId": "anon-9", '
            '"timestamp": "2026-01-05T10:02:00Z", "messageId": "w-3"}',
        ]
    )
    assert _contact_rows(flow, "dan", waits) == 1
    assert _contact_rows(flow, "anon-9", waits) == 0
    assert flow.run_due(at("2026-01-06 10:00")) == 1
    assert flow.contact("dan")["scores"] == {"SCORE": 10 + 5}
    assert _contact_rows(flow, "dan", waits) == 0


def test_a_merge_stamped_in_the_future_resumes_only_the_waits_due_now(flow: Leadflow) -> None:
    """A merge runs the contacts' due waits first, but only those due by the clock: an
    alias from a client whose clock is a week ahead resumes nothing early (review)."""
    flow.deploy([PAUSE_THEN_SCORE])
    flow.ingest_lines(
        [
            track("dan", "Signed Up", 0, "f-1"),
            '{"type": "alias", "userId": "dan", "previousId": "anon-7", '
            '"timestamp": "2026-01-12T00:00:00Z", "messageId": "f-2"}',
        ]
    )
    assert _contact_rows(flow, "dan", waits) == 1
    assert flow.contact("dan")["scores"] == {}
    assert flow.run_due(at("2026-01-06 10:00")) == 1
    assert flow.contact("dan")["scores"] == {"SCORE": 5}


def test_a_merge_rolls_the_account_up_at_the_merge_moment(flow: Leadflow) -> None:
    """The anonymous contact's points reach the known one's account, stamped with the
    moment of the merge, whether or not a wait was resumed on the way (review: without
    a wait the roll-up was lost, with one it took the wait's moment)."""
    from engine.store.tables import account_scores

    for waited in (False, True):
        who, anon = f"ann{waited}", f"anon-{waited}"
        lines = [
            json.dumps(
                {
                    "type": "group",
                    "userId": who,
                    "groupId": f"acme{waited}",
                    "timestamp": "2026-01-05T10:00:00Z",
                    "messageId": f"g{waited}",
                }
            ),
            track(who, "Act", 0, f"a{waited}"),
            track(anon, "Act", 0, f"b{waited}"),
        ]
        if waited:
            flow.deploy([PAUSE_THEN_SCORE])
            lines.append(
                json.dumps(
                    {
                        "type": "track",
                        "event": "Signed Up",
                        "userId": who,
                        "timestamp": "2026-01-04T09:00:00Z",
                        "messageId": f"s{waited}",
                    }
                )
            )
        lines.append(
            json.dumps(
                {
                    "type": "alias",
                    "userId": who,
                    "previousId": anon,
                    "timestamp": "2026-01-05T11:00:00Z",
                    "messageId": f"m{waited}",
                }
            )
        )
        flow.ingest_lines(lines)
        score = 25 if waited else 20
        assert flow.contact(who)["scores"] == {"SCORE": score}
        with flow.engine.connect() as connection:
            value, moment = connection.execute(
                select(account_scores.c.value, account_scores.c.updated_at).where(
                    account_scores.c.account_id == f"acme{waited}"
                )
            ).one()
        assert value == score
        assert moment.astimezone(UTC) == at("2026-01-05 11:00")


def test_an_identify_with_two_new_ids_creates_the_known_contact_as_new(
    store_url: str,
) -> None:
    """``contact_created`` fires for the known id of an identify that carries both ids,
    neither seen before, as it does without the anonymous id (review: the merge created
    the row first, so the message found it old)."""
    created = {
        "id": "created",
        "version": 1,
        "triggers": [{"type": "contact_created"}],
        "start": "p",
        "nodes": {"p": {"type": "update_score", "score": "NEW", "add": 1}},
    }
    flow = Leadflow(store_url, VirtualClock(at("2026-01-05 12:00")))
    try:
        flow.deploy([created])
        for user, anon in (("eve", None), ("fay", "anon-f")):
            message = {
                "type": "identify",
                "userId": user,
                "traits": {"name": user},
                "timestamp": "2026-01-05T10:00:00Z",
                "messageId": f"i-{user}",
            }
            if anon:
                message["anonymousId"] = anon
            flow.ingest_lines([json.dumps(message)])
            assert flow.contact(user)["scores"] == {"NEW": 1}, user
    finally:
        flow.close()


def test_a_merge_keeps_the_anonymous_contacts_entries_for_re_entry_rules(
    flow: Leadflow,
) -> None:
    """anon-1 joined VIP and was welcomed (re-entry never). Merged into ann, who never
    entered the welcome, ann gains VIP from the merge: the person behind both ids was
    welcomed already, so she is not welcomed again (found by review in session 9: the
    source's last entry was kept only where the target had one already)."""
    join = {
        "id": "join",
        "version": 1,
        "triggers": [{"type": "event", "event": "Go"}],
        "reentry": "always",
        "start": "add",
        "nodes": {"add": {"type": "add_to_list", "list": "VIP"}},
    }
    welcome = {
        "id": "welcome",
        "version": 1,
        "triggers": [{"type": "list_added", "list": "VIP"}],
        "reentry": "never",
        "start": "points",
        "nodes": {"points": {"type": "update_score", "score": "WELCOMED", "add": 1}},
    }
    flow.deploy([join, welcome])
    flow.ingest_lines(
        [
            track("anon-1", "Go", 0, "v-1"),
            track("ann", "Act", 1, "v-2"),
            '{"type": "identify", "userId": "ann", "anonymousId": "anon-1", '
            '"timestamp": "2026-01-05T10:05:00Z", "messageId": "v-3"}',
        ]
    )
    ann = flow.contact("ann")
    assert ann["lists"] == ["VIP"]
    assert ann["scores"]["WELCOMED"] == 1
    with flow.engine.connect() as connection:
        welcomed = connection.scalar(
            select(func.count()).select_from(runs).where(runs.c.workflow_id == "welcome")
        )
    assert welcomed == 1


def test_alias_merges_and_later_messages_follow(flow: Leadflow) -> None:
    lines = [
        track("anon-2", "Act", 0, "a-1"),
        track("anon-2", "Join", 1, "a-2", list="A"),
        track("bob", "Act", 2, "a-3"),
        '{"type": "alias", "userId": "bob", "previousId": "anon-2", '
        '"timestamp": "2026-01-05T10:03:00Z", "messageId": "a-4"}',
        track("anon-2", "Act", 4, "a-5"),
        # a second alias of the same pair changes nothing
        '{"type": "alias", "userId": "bob", "previousId": "anon-2", '
        '"timestamp": "2026-01-05T10:05:00Z", "messageId": "a-6"}',
    ]
    flow.ingest_lines(lines)
    bob = flow.contact("bob")
    assert bob["scores"] == {"SCORE": 30}
    assert bob["lists"] == ["A"]
    assert _contact_rows(flow, "bob", events) == 6


def test_identify_merges_into_a_contact_not_seen_before(flow: Leadflow) -> None:
    lines = [
        track("anon-3", "Act", 0, "n-1"),
        track("anon-3", "Join", 1, "n-2", list="B"),
        '{"type": "identify", "userId": "cid", "anonymousId": "anon-3", '
        '"traits": {"name": "Cid"}, "timestamp": "2026-01-05T10:02:00Z", "messageId": "n-3"}',
    ]
    flow.ingest_lines(lines)
    cid = flow.contact("cid")
    assert cid["scores"] == {"SCORE": 10}
    assert cid["lists"] == ["B"]
    assert cid["attributes"] == {"joined": "B", "name": "Cid"}
    with pytest.raises(UnknownContact):
        flow.contact("nobody")


@given(
    ids=st.lists(st.one_of(st.none(), st.sampled_from("abcde")), max_size=30),
    before=st.sets(st.sampled_from("abcde")),
)
def test_first_of_each_id_keeps_the_first_of_every_message_id(
    ids: list[str | None], before: set[str]
) -> None:
    """The contract's rule, shared by ingestion, calibrate and simulation: a messageId
    counts once, the first wins; messages without one always count."""
    moment = datetime(2026, 1, 5, tzinfo=UTC)
    messages = [Message("track", f"c{n}", moment, i, "Email Opened") for n, i in enumerate(ids)]
    seen = set(before)
    kept = first_of_each_id(messages, seen)
    positions = [next(n for n, m in enumerate(messages) if m is k) for k in kept]
    assert positions == sorted(positions)  # in their order
    named = [k.message_id for k in kept if k.message_id is not None]
    assert len(named) == len(set(named)) and not set(named) & before  # each id once, new
    for n, message in enumerate(messages):
        if message.message_id is None:
            assert n in positions  # no id, always kept
        elif n not in positions:  # dropped: taken before, or by an earlier message
            assert message.message_id in before or any(
                messages[p].message_id == message.message_id for p in positions if p < n
            )
    assert seen == before | set(named)
