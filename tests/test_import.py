"""``leadflow import contacts``: good rows in as identify calls, bad rows out with their line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import at
from sqlalchemy import Engine, select

from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.importer import (
    ImportOptions,
    ImportProblem,
    auto_value,
    import_contacts,
    normalise,
    typed_value,
)
from engine.store.db import make_engine
from engine.store.tables import contacts, rejected
from engine.views import contact_view

ROOT = Path(__file__).resolve().parent.parent

# line 1 header; 2-3 good; 4 no id; 5 a company size that is not a number; 6 too few
# fields; 7-8 one record over two lines (a quoted newline); 9 good; 10 blank; 11 too many
CRM = (
    "Email,Job Title,Company Size,Newsletter,Score Hint,Notes,Zip\r\n"
    'ann@acme.com,VP Marketing,500,Yes,1.5,"likes ""quotes""",01234\r\n'
    "bob@acme.com,Select,20,No,,,\r\n"
    ",Nobody,1,No,,,\r\n"
    "carl@x.example,CEO,lots,Yes,,,\r\n"
    "dan@x.example,Engineer,10\r\n"
    '"eve@x.example","Head of\r\nSales",200,true,,,\r\n'
    "fay@x.example,Student,1,FALSE,-2,,\r\n"
    "\r\n"
    "gus@x.example,CTO,5,No,,,,extra\r\n"
)
OPTIONS = ImportOptions(
    mapping={"Job Title": "job_title", "Company Size": "company_size"},
    types={"Company Size": "int"},
    missing=("Select",),
)
TITLED = {
    "id": "titled",
    "version": 1,
    "name": "Titled contacts",
    "notes": "Test: a job title change puts the contact on a list.",
    "triggers": [{"type": "attribute_changed", "attribute": "job_title"}],
    "reentry": "always",
    "start": "add",
    "nodes": {"add": {"type": "add_to_list", "list": "Has a title"}},
}


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    path = tmp_path / "crm.csv"
    path.write_bytes(CRM.encode("utf-8"))
    return path


def flow(store: Engine) -> Leadflow:
    leadflow = Leadflow(engine=store, clock=VirtualClock(at("2026-01-05 10:00")))
    leadflow.deploy([TITLED, ROOT / "workflows" / "models" / "b2b-grade.json"])
    return leadflow


def test_good_rows_go_in_and_bad_rows_are_kept_out_with_their_line(
    store: Engine, crm: Path
) -> None:
    leadflow = flow(store)
    report = import_contacts(store, crm, OPTIONS, leadflow.clock, leadflow.runner)
    assert (report.rows, report.imported, report.created, report.updated) == (8, 4, 4, 0)
    assert [(r.line, r.reason) for r in report.rejections] == [
        (4, "no contact id (column 'Email' is empty)"),
        (5, "column 'Company Size': expected a whole number, found 'lots'"),
        (6, "expected 7 fields, found 3"),
        (11, "expected 7 fields, found 8"),
    ]
    assert report.id_column == "Email"
    assert report.columns == {
        "Job Title": "job_title",
        "Company Size": "company_size",
        "Newsletter": "newsletter",
        "Score Hint": "score_hint",
        "Notes": "notes",
        "Zip": "zip",
    }
    ann = contact_view_of(store, "ann@acme.com")
    assert ann["attributes"] == {
        "job_title": "VP Marketing",
        "company_size": 500,
        "newsletter": True,
        "score_hint": 1.5,
        "notes": 'likes "quotes"',
        "zip": "01234",
    }
    assert type(ann["attributes"]["company_size"]) is int
    assert ann["grade"] == "B"  # VP (30) + 200+ employees (25): graded on the way in
    assert ann["lists"] == ["Has a title"]  # attribute_changed fired
    bob = contact_view_of(store, "bob@acme.com")
    assert bob["attributes"] == {"company_size": 20, "newsletter": False}  # Select is empty
    assert bob["lists"] == []
    eve = contact_view_of(store, "eve@x.example")
    assert eve["attributes"]["job_title"] == "Head of\r\nSales"
    assert eve["attributes"]["newsletter"] is True
    fay = contact_view_of(store, "fay@x.example")
    assert fay["attributes"]["score_hint"] == -2 and fay["attributes"]["newsletter"] is False
    assert fay["grade"] == "F"  # student (-40), fewer than 5 employees (-20)
    with store.connect() as connection:
        kept = connection.execute(
            select(rejected.c.source, rejected.c.line, rejected.c.reason, rejected.c.raw).order_by(
                rejected.c.line
            )
        ).all()
    assert [(row.source, row.line) for row in kept] == [(str(crm), n) for n in (4, 5, 6, 11)]
    assert kept[1].raw == "carl@x.example,CEO,lots,Yes,,,"


def contact_view_of(store: Engine, contact: str) -> dict[str, Any]:
    with store.connect() as connection:
        return contact_view(connection, contact)


def test_importing_again_updates_and_empty_cells_leave_attributes_alone(
    store: Engine, tmp_path: Path, crm: Path
) -> None:
    leadflow = flow(store)
    import_contacts(store, crm, OPTIONS, leadflow.clock, leadflow.runner)
    again = tmp_path / "again.csv"
    again.write_text("Email,Job Title,Company Size\nann@acme.com,,9\nnew@x.example,CFO,\n")
    report = import_contacts(store, again, OPTIONS, leadflow.clock, leadflow.runner)
    assert (report.rows, report.imported, report.created, report.updated) == (2, 2, 1, 1)
    ann = contact_view_of(store, "ann@acme.com")["attributes"]
    assert (ann["job_title"], ann["company_size"], ann["zip"]) == ("VP Marketing", 9, "01234")
    assert contact_view_of(store, "new@x.example")["attributes"] == {"job_title": "CFO"}


def test_only_mapped_columns_and_an_explicit_id_column(store: Engine, crm: Path) -> None:
    leadflow = flow(store)
    options = ImportOptions(
        id_column="Email",
        mapping={"Job Title": "job_title", "Email": "email"},
        only_mapped=True,
        missing=("Select",),
    )
    report = import_contacts(store, crm, options, leadflow.clock, leadflow.runner)
    assert report.rejected == 3  # 'lots' is text without --type: carl goes in
    assert contact_view_of(store, "carl@x.example")["attributes"] == {
        "job_title": "CEO",
        "email": "carl@x.example",
    }


def test_options_that_do_not_fit_the_file_import_nothing(store: Engine, crm: Path) -> None:
    leadflow = flow(store)
    clock = leadflow.clock
    with pytest.raises(ImportProblem, match=r"no column 'Job title'.*did you mean 'Job Title'"):
        import_contacts(store, crm, ImportOptions(mapping={"Job title": "x"}), clock)
    with pytest.raises(ImportProblem, match="--id-column: no column 'id'"):
        import_contacts(store, crm, ImportOptions(id_column="id"), clock)
    with pytest.raises(ImportProblem, match="expected one of int, float, bool, text"):
        import_contacts(store, crm, ImportOptions(types={"Zip": "date"}), clock)
    twice = crm.with_name("twice.csv")
    twice.write_text("Email,Name,email\nzed@acme.com,Zed,zed@other.example\n")
    with pytest.raises(
        ImportProblem,
        match=r"columns 1 \('Email'\) and 3 \('email'\) could each hold the contact id: "
        "name the one to use with --id-column",
    ):
        import_contacts(store, twice, ImportOptions(), clock)
    assert import_contacts(store, twice, ImportOptions(id_column="Email"), clock).imported == 1
    assert contact_view_of(store, "zed@acme.com")["attributes"] == {
        "name": "Zed",
        "email": "zed@other.example",
    }
    same = crm.with_name("same.csv")
    same.write_text("email,Name,email\nann@acme.com,Ann,ann@other.example\n")
    with pytest.raises(ImportProblem, match="could each hold the contact id"):
        import_contacts(store, same, ImportOptions(), clock)
    with pytest.raises(
        ImportProblem,
        match="--id-column: columns 1 and 3 are all named 'email'; rename all but one",
    ):
        import_contacts(store, same, ImportOptions(id_column="email"), clock)
    with pytest.raises(ImportProblem, match="--map: columns 1 and 3 are all named 'email'"):
        import_contacts(store, same, ImportOptions(id_column="Name", mapping={"email": "x"}), clock)
    headless = crm.with_name("no-id.csv")
    headless.write_text("Name,Title\nAnn,VP\n")
    with pytest.raises(ImportProblem, match="no id column"):
        import_contacts(store, headless, ImportOptions(), clock)
    latin = crm.with_name("latin.csv")
    latin.write_bytes("email,city\nann@acme.com,Montr\xe9al\n".encode("latin-1"))
    with pytest.raises(ImportProblem, match="not utf-8-sig"):
        import_contacts(store, latin, ImportOptions(), clock)
    report = import_contacts(store, latin, ImportOptions(encoding="latin-1"), clock)
    assert contact_view_of(store, "ann@acme.com")["attributes"] == {"city": "Montréal"}
    assert report.imported == 1


def test_values_are_typed_by_their_look_or_by_type() -> None:
    looks = ["Yes", "no", "TRUE", "0", "-3", "007", "2.50", "1e3", "nan", "inf", "+33 6", "x"]
    assert [auto_value(v) for v in looks] == [
        True,
        False,
        True,
        0,
        -3,
        "007",
        2.5,
        1000.0,
        "nan",
        "inf",
        "+33 6",
        "x",
    ]
    assert typed_value("5.0", "int") == 5 and type(typed_value("5.0", "int")) is int
    assert typed_value("007", "int") == 7
    assert typed_value("7", "float") == 7.0
    assert typed_value("007", "text") == "007"
    assert typed_value("y", "bool") is True and typed_value("0", "bool") is False
    for value, kind, message in (
        ("5.5", "int", "expected a whole number, found '5.5'"),
        ("1_000", "int", "expected a whole number, found '1_000'"),
        ("inf", "float", "expected a finite number, found 'inf'"),
        ("maybe", "bool", "expected Yes/No or true/false, found 'maybe'"),
    ):
        with pytest.raises(ValueError) as caught:
            typed_value(value, kind)
        assert str(caught.value) == message
    assert normalise(" Total Time Spent on Website ") == "total_time_spent_on_website"
    assert normalise("A free copy of Mastering The Interview") == (
        "a_free_copy_of_mastering_the_interview"
    )


def invoke(args: list[str], code: int) -> Result:
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def test_the_command_prints_counts_and_exits_1_on_rejected_rows(store_url: str, crm: Path) -> None:
    args = [
        "import",
        "contacts",
        str(crm),
        "--map",
        "Job Title=job_title",
        "--type",
        "Company Size=int",
        "--missing",
        "Select",
        "--db",
        store_url,
    ]
    dry = invoke([*args, "--dry-run"], code=1)
    assert dry.stdout.strip() == (
        "8 row(s): 4 would be imported (4 new, 0 updated contact(s)), 4 rejected"
    )
    result = invoke(args, code=1)
    assert result.stdout.strip() == (
        "8 row(s): 4 imported (4 new, 0 updated contact(s)), 4 rejected"
    )
    assert result.stderr.splitlines() == [
        f"{crm}: line 4: no contact id (column 'Email' is empty)",
        f"{crm}: line 5: column 'Company Size': expected a whole number, found 'lots'",
        f"{crm}: line 6: expected 7 fields, found 3",
        f"{crm}: line 11: expected 7 fields, found 8",
    ]
    good = crm.with_name("good.csv")
    good.write_text("user_id;Plan;Seats\nu-1;Pro;3\nu-2;Free;\n")
    data = json.loads(
        invoke(
            ["import", "contacts", str(good), "--json", "--db", store_url],
            code=0,
        ).stdout
    )
    assert data == {
        "source": str(good),
        "id_column": "user_id",
        "columns": {"Plan": "plan", "Seats": "seats"},
        "rows": 2,
        "imported": 2,
        "created": 2,
        "updated": 0,
        "rejected": [],
    }
    missing = invoke(["import", "contacts", str(good), "--map", "Nope=x", "--db", store_url], 1)
    assert "no column 'Nope' in the file" in missing.stderr
    invoke(["import", "contacts", str(good), "--map", "Plan", "--db", store_url], code=2)
    pipes = crm.with_name("pipes.csv")
    pipes.write_text("id|a,b\nu-3|x,y\n")
    invoke(["import", "contacts", str(pipes), "--delimiter", "|", "--db", store_url], code=0)
    invoke(["import", "contacts", str(pipes), "--delimiter", "||", "--db", store_url], code=2)


# --- found by a reviewing helper (session 14) ---------------------------------------------


def test_a_contact_id_too_long_for_the_store_is_a_rejected_row_on_both_backends(
    store_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's id column holds 320 characters: a longer id crashed the import there
    (a KeyError traceback, the good rows lost too) and went in whole on SQLite."""
    path = tmp_path / "crm.csv"
    path.write_text("email,product\n" + "x" * 400 + ",Ads\nbob@acme.com,CRM\n", encoding="utf-8")
    result = invoke(["import", "contacts", str(path), "--db", store_url], code=1)
    assert "line 2" in result.stdout + result.stderr
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            assert connection.scalars(select(contacts.c.id)).all() == ["bob@acme.com"]
            (kept,) = connection.execute(select(rejected.c.reason)).all()
        assert "400 characters long; at most 320" in kept.reason
    finally:
        engine.dispose()
    long_event = json.dumps({"type": "track", "userId": "y" * 321, "event": "Go"}) + "\n"
    ingested = CliRunner().invoke(main, ["ingest", "-", "--db", store_url], input=long_event)
    assert ingested.exit_code == 1, ingested.output
    assert "'userId' is 321 characters long; at most 320" in ingested.output


def test_int_type_keeps_every_digit() -> None:
    """``--type COL=int`` went through float(): 9007199254740993 became ...992."""
    for text in ("9007199254740993", "12345678901234567890", "-9007199254740993"):
        assert auto_value(text) == int(text)
        assert typed_value(text, "int") == int(text), text


def _import_text(store: Engine, tmp_path: Path, text: str) -> tuple[Any, dict[str, Any]]:
    path = tmp_path / "crm.csv"
    path.write_text(text, encoding="utf-8")
    report = import_contacts(store, path, ImportOptions(), VirtualClock(at("2026-01-05 00:00")))
    with store.connect() as connection:
        rows = dict(connection.execute(select(contacts.c.id, contacts.c.attributes)).all())
    return report, rows


def test_an_unclosed_quote_is_a_rejected_row_not_the_rest_of_the_file(
    store: Engine, tmp_path: Path
) -> None:
    """The csv module read on to the end of the file for the closing quote: one contact
    named "Ann\\nbob@acme.com,Bob", 0 rejected."""
    text = 'email,name\nann@acme.com,"Ann\nbob@acme.com,Bob\n'
    report, rows = _import_text(store, tmp_path, text)
    assert not any("bob@acme.com" in str(a.get("name")) for a in rows.values()), rows
    assert report.rejections[0].line == 2


def test_a_stray_quote_inside_a_field_is_a_rejected_row(store: Engine, tmp_path: Path) -> None:
    text = 'email,name\nann@acme.com,Ann\nbob@acme.com,"Bo"b"\ncid@acme.com,Cid\n'
    report, rows = _import_text(store, tmp_path, text)
    assert [r.line for r in report.rejections] == [3]
    assert sorted(rows) == ["ann@acme.com", "cid@acme.com"]


def test_a_file_in_another_encoding_names_the_line(store: Engine, tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_bytes("email,name\nann@acme.com,Ann\nbob@acme.com,Müller\n".encode("latin-1"))
    with pytest.raises(ImportProblem) as caught:
        import_contacts(store, path, ImportOptions(), VirtualClock(at("2026-01-05 00:00")))
    assert "line 3: the file is not utf-8-sig" in str(caught.value)
