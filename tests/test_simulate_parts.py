"""A simulation split over processes (``simulate(jobs=N)``, ``leadflow simulate --jobs``)
gives the same outcome as one process, and the split keeps contacts that can meet
together: merged ones, members of one account, senders of one messageId."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_simulate_speed import EXAMPLES, WORKFLOWS, _history

import engine.simulate
import engine.simulate_parts as simulate_parts
from engine.cli import main
from engine.clock import parse_timestamp
from engine.segment import Message, parse_message, read_lines
from engine.shards import plan_shards
from engine.simulate import simulate
from engine.simulate_parts import SimulationPartFailed


def _lines(*messages: dict[str, Any] | str) -> list[bytes]:
    return [(m if isinstance(m, str) else json.dumps(m)).encode() for m in messages]


def _part(plan: Any, line: int) -> int:
    return int(plan.line_part[line - 1])


# --- the split ------------------------------------------------------------------------------


def test_linked_contacts_share_a_part_and_unreadable_lines_go_to_part_0() -> None:
    lines = _lines(
        {"type": "track", "userId": "a", "event": "X", "messageId": "1"},
        {"type": "track", "userId": "b", "event": "X", "messageId": "2"},
        {"type": "track", "userId": "c", "event": "X", "messageId": "3"},
        {"type": "track", "userId": "d", "event": "X", "messageId": "4"},
        {"type": "track", "userId": "e", "event": "X", "messageId": "5"},
        {"type": "track", "userId": "f", "event": "X", "messageId": "6"},
        {"type": "alias", "userId": "a", "previousId": "b"},
        {"type": "identify", "userId": "c", "anonymousId": "d"},
        {"type": "group", "userId": "e", "groupId": "acct-1"},
        {"type": "group", "anonymousId": "f", "groupId": "acct-1"},
        "{not json",
        {"type": "track", "event": "no contact"},
        "",
        {"type": "track", "userId": "b", "event": "X", "messageId": "6"},  # f's messageId
    )
    plan = plan_shards(lines, 8)
    assert plan.parts == 2  # {a, b, e, f} (b and f share messageId 6) and {c, d}
    assert _part(plan, 1) == _part(plan, 2) == _part(plan, 5) == _part(plan, 6)
    assert _part(plan, 3) == _part(plan, 4) != _part(plan, 1)
    assert _part(plan, 11) == _part(plan, 12) == _part(plan, 13) == 0
    assert sorted(plan.messages) == [3, 8]


def test_lines_with_bad_bytes_or_odd_whitespace_are_read_as_the_reader_reads_them() -> None:
    """A no-break space around the JSON (stripped): the reader takes the line, so the split
    must see its ids too. A byte that is not UTF-8 makes the reader reject its line (it
    took it with the byte replaced until session 12); the split may still join its ids,
    which costs nothing but balance."""
    lines = [
        b'{"type": "track", "userId": "a", "event": "X", "properties": {"p": "\xff"}}',
        b'\xc2\xa0{"type": "alias", "userId": "a", "previousId": "b"}\xc2\xa0',
        b'{"type": "track", "userId": "b", "event": "X"}',
        b'{"type": "track", "userId": "c", "event": "X"}',
        b'{"type": "track", "userId": "c", "event": "X"}',
        b'{"type": "track", "userId": "c", "event": "X"}',
    ]
    assert [
        (r.line, r.reason)
        for r in read_lines(lines, parse_timestamp("2026-01-05T00:00:00Z"))
        if not isinstance(r, Message)
    ] == [(1, "not UTF-8 (byte 69 of the line, 0xff: invalid start byte)")]
    plan = plan_shards(lines, 2)
    assert plan.parts == 2
    assert _part(plan, 1) == _part(plan, 2) == _part(plan, 3) != _part(plan, 4)


def test_parts_are_balanced_and_kept_to_a_least_size() -> None:
    lines = _lines(
        *(
            {"type": "track", "userId": f"u{n % 40}", "event": "X", "messageId": str(n)}
            for n in range(400)
        )
    )
    plan = plan_shards(lines, 4)
    assert plan.parts == 4 and plan.messages == [100, 100, 100, 100]
    assert plan_shards(lines, 4, least=150).parts == 2
    assert plan_shards(lines, 4, least=1000).parts == 1
    assert plan_shards(lines[:1], 4).parts == 1


_ids = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", 7, "", None, True])


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any] | str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["", "   ", "{", "[1]", '"text"', "null"]))
    message: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "identify", "alias", "group", "page", "odd"]))
    }
    for key in ("userId", "anonymousId", "previousId", "groupId", "messageId"):
        if draw(st.booleans()):
            message[key] = draw(_ids)
    return message


@settings(max_examples=300, deadline=None)
@given(st.lists(_message(), max_size=40), st.integers(1, 5))
def test_every_link_stays_inside_a_part(messages: list[dict[str, Any] | str], jobs: int) -> None:
    """Whatever the lines hold, the ids that the reader (``parse_message``) finds in a
    line it accepts (the contact, the contact it merges, the account, the messageId) are
    all in one part; a line it cannot read as JSON is part 0's."""
    plan = plan_shards(_lines(*messages), jobs)
    assert 1 <= plan.parts <= jobs
    home: dict[str, int] = {}
    now = parse_timestamp("2026-01-05T00:00:00Z")
    for number, data in enumerate(messages):
        part = int(plan.line_part[number])
        assert part < plan.parts
        if not isinstance(data, dict):
            assert part == 0
            continue
        try:
            message = parse_message(data, now)
        except ValueError:
            continue  # rejected wherever it goes: it changes nothing
        keys = ["contact:" + message.contact_id]
        if message.merge_from is not None:
            keys.append("contact:" + message.merge_from)
        if message.group_id is not None:
            keys.append("account:" + message.group_id)
        if message.message_id is not None:
            keys.append("id:" + message.message_id)
        for key in keys:
            assert home.setdefault(key, part) == part, key


# --- the same outcome -----------------------------------------------------------------------


def _outcome(path: Path, jobs: int, until: str | None = None) -> str:
    moment = parse_timestamp(until) if until else None
    outcome = simulate([WORKFLOWS], path, moment, jobs=jobs)
    return json.dumps(
        [outcome.result, outcome.events, str(outcome.started), str(outcome.ended)],
        default=str,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_a_split_simulation_gives_the_outcome_of_one_process(tmp_path: Path, seed: int) -> None:
    """Every shipped workflow and model (cron fan-outs, quiet spells, decay, waits both
    ways, score bands, accounts), merges and resent messageIds, with bad lines, blank
    lines and messages without a timestamp among them."""
    lines = _history(people=60, seed=seed)
    lines[5:5] = [b"", b"{broken", b'{"type": "track", "userId": "p0001@example.test"}']
    lines.insert(40, b'{"type": "track", "userId": "p0002@example.test", "event": "Page Viewed"}')
    lines.insert(
        90,
        b'{"type": "track", "userId": "p0003@example.test", "event": "X", '
        b'"timestamp": "not a time"}',
    )
    # another contact sends a messageId already taken: it is ignored, in any part
    taken = json.loads(lines[200])
    taken["userId"], taken["timestamp"] = "stranger@example.test", "2026-04-01T00:00:00Z"
    taken.pop("anonymousId", None)
    lines.append(json.dumps(taken).encode())
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = _outcome(path, 1)
    assert "stranger@example.test" not in json.loads(one)[0]["contacts"]
    assert len(json.loads(one)[0]["rejected"]) == 3
    assert _outcome(path, 2) == one
    assert _outcome(path, 3) == one


def test_a_split_simulation_stops_where_one_process_does_with_until(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=40, seed=3)) + b"\n")
    for until in ("2026-02-15T00:00:00Z", "2026-09-01T00:00:00Z"):
        assert _outcome(path, 2, until) == _outcome(path, 1, until)


def test_a_wait_due_before_a_merge_runs_before_it_in_any_part(tmp_path: Path) -> None:
    """a2's welcome wait (5 days) is due before a2 becomes u5. In one process x's quiet
    spell ended a batch between the two, so the wait ran on a2 before the merge; in a
    part without x it ran after, on u5 (found by review). Now a merge runs the due waits
    of both contacts first, at their own moments, wherever batches end."""
    path = tmp_path / "history.jsonl"
    path.write_bytes(
        b"\n".join(
            _lines(
                {
                    "type": "track",
                    "userId": "x",
                    "event": "Page Viewed",
                    "timestamp": "2023-12-17T12:00:00Z",
                },
                {
                    "type": "track",
                    "anonymousId": "a2",
                    "event": "Page Viewed",
                    "timestamp": "2024-01-09T00:00:00Z",
                },
                {
                    "type": "track",
                    "userId": "u5",
                    "event": "Page Viewed",
                    "timestamp": "2024-01-15T04:00:00Z",
                },
                {
                    "type": "identify",
                    "userId": "u5",
                    "anonymousId": "a2",
                    "timestamp": "2024-01-17T00:00:00Z",
                },
            )
        )
        + b"\n"
    )
    one = simulate([WORKFLOWS], path, jobs=1)
    two = simulate([WORKFLOWS], path, jobs=2)
    assert two.parts == 2
    assert two.result == one.result
    assert (one.ended, one.started) == (two.ended, two.started)


def test_workflows_watching_account_scores_are_not_split(tmp_path: Path) -> None:
    """An account crossing is stamped with the latest moment of the batch that caused it,
    and batches end elsewhere in a part: such simulations stay in one process."""
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=20, seed=6)) + b"\n")
    watching = simulate([WORKFLOWS, WORKFLOWS / "models"], path, jobs=2)
    assert watching.parts == 1
    assert simulate([WORKFLOWS], path, jobs=2).parts == 2


def test_cli_jobs_gives_the_same_json() -> None:
    runner = CliRunner()
    args = ["simulate", "--workflows", str(WORKFLOWS), "--events", str(EXAMPLES), "--json"]
    one = runner.invoke(main, [*args, "--jobs", "1"])
    two = runner.invoke(main, [*args, "--jobs", "2"])
    assert one.exit_code == two.exit_code == 0
    assert json.loads(two.output) == json.loads(one.output)
    assert one.output == two.output


def test_simulate_from_python_takes_text_paths_and_refuses_a_naive_until() -> None:
    """A text path was read as a list of one-letter paths, and a naive ``until`` raised a
    TypeError deep inside (found by a reviewing helper)."""
    from datetime import datetime

    by_text = simulate(str(WORKFLOWS), str(EXAMPLES), jobs=1)
    assert by_text.result == simulate([WORKFLOWS], EXAMPLES, jobs=1).result
    with pytest.raises(ValueError, match="until: expected an aware datetime"):
        simulate([WORKFLOWS], EXAMPLES, until=datetime(2026, 3, 1), jobs=1)


# --- failures -------------------------------------------------------------------------------


def _kept_parts(monkeypatch: pytest.MonkeyPatch, then: Any) -> list[Any]:
    """Run ``then(parts)`` before the coordinator starts; returns the parts started."""
    seen: list[Any] = []
    coordinate = simulate_parts._coordinate

    def wrapped(parts: list[Any], *args: Any) -> Any:
        seen.extend(parts)
        then(parts)
        return coordinate(parts, *args)

    monkeypatch.setattr(simulate_parts, "_coordinate", wrapped)
    return seen


def test_a_part_killed_fails_the_simulation_and_the_others_are_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=20, seed=4)) + b"\n")

    def kill_second(parts: list[Any]) -> None:
        parts[1].process.kill()
        parts[1].process.wait()

    parts = _kept_parts(monkeypatch, kill_second)
    with pytest.raises(SimulationPartFailed, match=r"part 1 .* without an answer \(exit code -9\)"):
        simulate([WORKFLOWS], path, jobs=2)
    assert len(parts) == 2
    assert all(part.process.poll() is not None for part in parts)


def test_an_error_in_a_part_comes_back_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=20, seed=5)) + b"\n")
    start = simulate_parts._Part.start
    started: list[Any] = []

    def elsewhere(number: int, paths: list[Path], events_path: Path, folder: Path) -> Any:
        # the parts are sent to read a file that is not there
        started.append(start(number, paths, tmp_path / "gone.jsonl", folder))
        return started[-1]

    monkeypatch.setattr(simulate_parts._Part, "start", elsewhere)
    with pytest.raises(
        SimulationPartFailed, match=r"(?s)part \d of the simulation failed.*FileNotFoundError"
    ):
        simulate([WORKFLOWS], path, jobs=2)
    assert len(started) == 2
    assert all(part.process.poll() is not None for part in started)


def _recorded_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    start = simulate_parts._Part.start
    started: list[Any] = []

    def recorded(*args: Any) -> Any:
        started.append(start(*args))
        return started[-1]

    monkeypatch.setattr(simulate_parts._Part, "start", recorded)
    return started


def test_parts_started_before_the_plan_and_not_needed_are_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history that splits into fewer parts than asked for: the processes started
    while the plan was made and left without a part are ended, and the outcome is one
    process's."""
    path = tmp_path / "history.jsonl"
    three = [
        {"type": kind, "userId": f"{who}@example.test", "timestamp": f"2026-01-0{day}T10:00:00Z"}
        | ({"event": "Signed Up"} if kind == "track" else {"traits": {"FIRSTNAME": who}})
        for day, kind in ((5, "identify"), (6, "track"))
        for who in ("ann", "bob", "cy")
    ]
    path.write_bytes(b"\n".join(_lines(*three)) + b"\n")
    monkeypatch.setattr(simulate_parts, "EARLY_START_BYTES", 0)
    started = _recorded_starts(monkeypatch)
    one = _outcome(path, 1)
    assert started == []
    assert _outcome(path, 5) == one
    assert len(started) == 5  # all before the plan, which made 3 parts
    assert all(part.process.poll() is not None for part in started)
    started.clear()
    assert simulate([WORKFLOWS], path, jobs=5).parts == 3
    assert len(started) == 5

    alone = tmp_path / "alone.jsonl"
    alone.write_bytes(b"\n".join(_history(people=1, seed=6)) + b"\n")
    started.clear()
    assert simulate([WORKFLOWS], alone, jobs=2).parts == 1
    assert len(started) == 2 and all(p.process.poll() is not None for p in started)


def test_a_small_history_starts_no_process_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=20, seed=7)) + b"\n")
    started = _recorded_starts(monkeypatch)
    monkeypatch.setattr(engine.simulate, "usable_cpus", lambda: 2)
    assert simulate([WORKFLOWS], path).parts == 1
    assert started == []


def test_how_many_parts_start_before_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    big = simulate_parts.EARLY_START_BYTES
    per = simulate_parts.BYTES_PER_MESSAGE
    assert simulate_parts._early_parts(path, 4, 0) == 0  # no such file: the plan says why
    for size, jobs, least, early in [
        (big - 1, 4, 0, 0),  # planned before a part would have started
        (big, 4, 0, 4),  # --jobs 4: as many as asked
        (big, 4, big // per // 2, 2),  # room for 2 parts of ``least`` messages
        (big, 4, big // per, 0),  # for one: no split likely
        (10 * big, 4, big // per, 4),
    ]:
        with path.open("wb") as handle:
            handle.truncate(size)
        assert simulate_parts._early_parts(path, jobs, least) == early, (size, jobs, least)


def test_a_part_that_fails_before_its_plan_comes_back_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The part checks the workflows while the plan is made; if that fails and it is
    gone before the plan is sent, its traceback is still what the caller sees."""
    injected = tmp_path / "injected"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(
        "import engine.simulate_parts as parts\n"
        "def broken(paths):\n"
        "    raise RuntimeError('the workflows could not be read')\n"
        "parts.validate_paths = broken\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(injected))
    monkeypatch.setattr(simulate_parts, "EARLY_START_BYTES", 0)
    started = _recorded_starts(monkeypatch)
    plan = simulate_parts.plan_shards

    def slow_plan(*args: Any) -> Any:
        for part in started:  # the parts fail and end first
            part.process.wait(timeout=60)
        return plan(*args)

    monkeypatch.setattr(simulate_parts, "plan_shards", slow_plan)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(_history(people=20, seed=8)) + b"\n")
    with pytest.raises(
        SimulationPartFailed, match=r"(?s)part 0 of the simulation failed.*could not be read"
    ):
        simulate([WORKFLOWS], path, jobs=2)
    assert len(started) == 2 and all(p.process.poll() is not None for p in started)
