"""Turn the X Education leads file into a Segment event history Leadflow can replay.

    python workflows/examples/x-education/convert.py x-education.jsonl
    python workflows/examples/x-education/convert.py x-education.jsonl --leads PATH/Leads.csv
    python workflows/examples/x-education/convert.py sample.jsonl --limit 500

Input: ``Leads.csv`` of ``shared/data/x-education`` (9,240 leads, 37 columns; see
``shared/data/README.md``). The script checks the file's SHA-256 against the one that README
gives and refuses any other file (altered copies are in circulation). Standard library only.

Output: Segment-spec JSON Lines, one message per line, sorted by timestamp (ties in file
order). For every lead, in this order:

1. ``identify`` (``userId`` = ``Prospect ID``) with the lead's traits (table below), at the
   moment the lead was created.
2. ``Ebook Downloaded`` (``{"ebook": "Mastering The Interview"}``) one minute later when
   ``A free copy of Mastering The Interview`` is Yes: the e-book is asked for on the sign-up
   form.
3. The website visits: ``TotalVisits`` visits, each a run of ``Page Viewed`` events
   (properties ``visit``, ``page``, ``seconds``). The lead's page views are
   ``round(TotalVisits x Page Views Per Visit)`` (half up, at least one per visit), spread
   evenly over the visits (earlier visits take the remainder), and ``Total Time Spent on
   Website`` (taken to be seconds; the unit is not stated) is spread evenly over the page
   views (earlier pages take the remainder). So per lead the number of visits, the page
   views and the seconds add up exactly to the file's figures. The four leads with visits
   but no time get ``seconds`` 0; the 137 leads with no visit figures get no visits.
4. The *Last Notable Activity*, when it is a real activity (not ``Modified``, which only
   says the record was edited) and differs from the Last Activity; then the *Last
   Activity*. They are the lead's last recorded activities, so they come after the visits.
   The file keeps only these two, not a full history. Each becomes one event named after
   the activity (two renamed: ``Page Visited on Website`` -> ``Page Viewed`` and ``Form
   Submitted on Website`` -> ``Form Submitted``), with properties ``activity`` (the file's
   words) and ``recorded_as`` (``last_activity``, ``last_notable_activity`` or both).
5. ``Lead Converted`` when ``Converted`` is 1, after everything else: the outcome to
   backtest against (3,561 leads).

Time: the file has no dates, so every moment is synthesised from a random generator seeded
with the lead's ``Prospect ID`` (and a fixed salt), so each lead's history is the same on
every run and does not depend on the other rows (``--limit`` gives a prefix of the full
output's leads with the same events). The lead is created at a moment drawn uniformly over
the 26 weeks from Monday 2025-01-06 00:00 UTC; its visits start at moments drawn uniformly
over the 28 days after creation (sorted; a visit never starts before the previous one ended
plus a minute), with page views one after the other inside the visit; the notable and last
activities follow 1 to 72 hours apart (after the last visit, or the creation when there is
none); the conversion comes 1 to 14 days after the last event. Times are whole seconds.
Nothing here says *when* X Education's leads really did things: use the history for what
the scores add up to and their order per lead, not for calendar effects, decay or
inactivity (the data README says so too).

Traits (missing values, empty cells and the form default ``Select``, are left out):

- ``lead_number`` (integer) from Lead Number;
- ``lead_origin``, ``lead_source`` from Lead Origin and Lead Source, as written (``google``
  and ``Google`` both occur);
- ``occupation`` (What is your current occupation), ``specialization``, ``country``,
  ``city``, ``heard_from`` (How did you hear about X Education), ``what_matters_most``
  (What matters most to you in choosing a course);
- ``do_not_email`` and ``emailBlacklisted`` (booleans) from Do Not Email: Leadflow's consent
  check suppresses email to a contact whose ``emailBlacklisted`` is true. SMS is not
  blocked: ``CONSENT`` false would block both, and the lead only refused email;
- ``do_not_call`` (boolean; Leadflow has no call channel, use it in conditions);
- ``ad_search``, ``ad_magazine``, ``ad_newspaper_article``, ``ad_forums``,
  ``ad_newspaper``, ``ad_digital`` (booleans) from Search, Magazine, Newspaper Article,
  X Education Forums, Newspaper and Digital Advertisement;
- ``through_recommendations`` (boolean);
- ``updates_courses``, ``updates_supply_chain``, ``updates_dm``, ``pay_by_cheque``
  (booleans, always false in this file) from Receive More Updates About Our Courses,
  Update me on Supply Chain Content, Get updates on DM Content and I agree to pay the
  amount through cheque;
- ``free_copy_requested`` (boolean) from A free copy of Mastering The Interview, which
  also gives the ``Ebook Downloaded`` event.

Left out of the traits: ``Converted`` (the ``Lead Converted`` event), the activity columns
(events), and ``Tags``, ``Lead Quality``, ``Lead Profile`` and the four ``Asymmetrique``
columns: sales fills them in after contacting the lead, so any rule on them would leak the
outcome into a backtest (data README, "Leakage warning").

``messageId`` is ``xe-<Lead Number>-<n>``, n counting the lead's messages from 1.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

LEADS_SHA256 = "1426dffd94246b8c7f08d1080d9c04115a0c4b67eadcba1ed9d2fa10d3762802"
LEADS_ROWS = 9240
LEADS_COLUMNS = 37
DEFAULT_LEADS = Path(__file__).resolve().parents[3].parent / "shared/data/x-education/Leads.csv"

SALT = "leadflow x-education 1"
WINDOW_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
CREATION_DAYS = 26 * 7
VISIT_DAYS = 28
GAP_BETWEEN_VISITS = 60  # seconds after the end of one visit before the next can start
ACTIVITY_GAP_HOURS = (1, 72)
CONVERSION_DAYS = (1, 14)
EBOOK = "Mastering The Interview"
MISSING = ("", "Select")

TEXT_TRAITS = {
    "Lead Origin": "lead_origin",
    "Lead Source": "lead_source",
    "What is your current occupation": "occupation",
    "Specialization": "specialization",
    "Country": "country",
    "City": "city",
    "How did you hear about X Education": "heard_from",
    "What matters most to you in choosing a course": "what_matters_most",
}
BOOLEAN_TRAITS = {
    "Do Not Email": "do_not_email",
    "Do Not Call": "do_not_call",
    "Search": "ad_search",
    "Magazine": "ad_magazine",
    "Newspaper Article": "ad_newspaper_article",
    "X Education Forums": "ad_forums",
    "Newspaper": "ad_newspaper",
    "Digital Advertisement": "ad_digital",
    "Through Recommendations": "through_recommendations",
    "Receive More Updates About Our Courses": "updates_courses",
    "Update me on Supply Chain Content": "updates_supply_chain",
    "Get updates on DM Content": "updates_dm",
    "I agree to pay the amount through cheque": "pay_by_cheque",
    "A free copy of Mastering The Interview": "free_copy_requested",
}
LEAKY = (
    "Tags",
    "Lead Quality",
    "Lead Profile",
    "Asymmetrique Activity Index",
    "Asymmetrique Profile Index",
    "Asymmetrique Activity Score",
    "Asymmetrique Profile Score",
)
RENAMED = {
    "Page Visited on Website": "Page Viewed",
    "Form Submitted on Website": "Form Submitted",
}
NOT_AN_ACTIVITY = ("", "Modified")


class ConversionError(Exception):
    """The input is not the file this converter was written for."""


def verify(path: Path) -> bytes:
    """The file's bytes, after checking its SHA-256 against the data README."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read it: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != LEADS_SHA256:
        raise ConversionError(
            f"{path}: SHA-256 is {digest}, not {LEADS_SHA256} (shared/data/README.md); this "
            "is not the original Leads.csv (altered copies are in circulation): refusing"
        )
    return data


def read_leads(data: bytes) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(data.decode("ascii"), newline=""))
    rows = list(reader)
    if len(reader.fieldnames or []) != LEADS_COLUMNS or len(rows) != LEADS_ROWS:
        raise ConversionError(f"expected {LEADS_ROWS} rows of {LEADS_COLUMNS} columns")
    return rows


_DAYS: dict[int, str] = {}


def _stamp(second: int) -> str:
    """Seconds after WINDOW_START as ``2025-01-06T10:22:31Z``."""
    day, rest = divmod(second, 86400)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = (WINDOW_START + timedelta(days=day)).date().isoformat()
    hour, rest = divmod(rest, 3600)
    minute, sec = divmod(rest, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{sec:02d}Z"


def _rng(prospect_id: str) -> random.Random:
    seed = hashlib.sha256(f"{SALT}:{prospect_id}".encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _yes(value: str) -> bool:
    return value.strip().lower() == "yes"


def traits(row: dict[str, str]) -> dict[str, Any]:
    """The identify traits of one lead (see the table in the module docstring)."""
    found: dict[str, Any] = {"lead_number": int(row["Lead Number"])}
    for column, name in TEXT_TRAITS.items():
        value = row[column].strip()
        if value not in MISSING:
            found[name] = value
    for column, name in BOOLEAN_TRAITS.items():
        value = row[column].strip()
        if value not in MISSING:
            found[name] = _yes(value)
    if "do_not_email" in found:
        found["emailBlacklisted"] = found["do_not_email"]
    return found


def _half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _spread(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole shares, the first ones taking the remainder."""
    share, rest = divmod(total, parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


def lead_messages(row: dict[str, str]) -> list[tuple[int, dict[str, Any]]]:
    """Every message of one lead with its moment (seconds after WINDOW_START), in the
    lead's own order."""
    prospect = row["Prospect ID"]
    rng = _rng(prospect)
    created = rng.randrange(CREATION_DAYS * 86400)
    out: list[tuple[int, dict[str, Any]]] = []

    def add(moment: int, message: dict[str, Any]) -> None:
        message = {
            **message,
            "userId": prospect,
            "timestamp": _stamp(moment),
            "messageId": f"xe-{row['Lead Number']}-{len(out) + 1}",
        }
        out.append((moment, message))

    def track(moment: int, event: str, properties: dict[str, Any]) -> None:
        add(moment, {"type": "track", "event": event, "properties": properties})

    add(created, {"type": "identify", "traits": traits(row)})
    last = created
    if _yes(row["A free copy of Mastering The Interview"]):
        last = created + 60
        track(last, "Ebook Downloaded", {"ebook": EBOOK})
    visits_text = row["TotalVisits"].strip()
    if visits_text:
        visits = int(Decimal(visits_text))
        per_visit = Decimal(row["Page Views Per Visit"].strip() or "0")
        seconds_total = int(Decimal(row["Total Time Spent on Website"].strip() or "0"))
        if visits > 0:
            pages_total = max(visits, _half_up(visits * per_visit))
            pages = _spread(pages_total, visits)
            seconds = _spread(seconds_total, pages_total)
            starts = sorted(rng.randrange(VISIT_DAYS * 86400) for _ in range(visits))
            page_index = 0
            free_from = created
            for number, (offset, count) in enumerate(zip(starts, pages, strict=True), start=1):
                moment = max(created + offset, free_from)
                for page in range(1, count + 1):
                    spent = seconds[page_index]
                    page_index += 1
                    track(moment, "Page Viewed", {"visit": number, "page": page, "seconds": spent})
                    last = max(last, moment)
                    moment += max(spent, 1)
                free_from = moment + GAP_BETWEEN_VISITS
    activity = row["Last Activity"].strip()
    notable = row["Last Notable Activity"].strip()
    steps: list[tuple[str, str]] = []
    if notable not in NOT_AN_ACTIVITY and notable != activity:
        steps.append((notable, "last_notable_activity"))
    if activity not in NOT_AN_ACTIVITY:
        both = notable == activity
        steps.append(
            (activity, "last_activity, last_notable_activity" if both else "last_activity")
        )
    for name, recorded in steps:
        last += rng.randrange(ACTIVITY_GAP_HOURS[0] * 3600, ACTIVITY_GAP_HOURS[1] * 3600 + 1)
        track(last, RENAMED.get(name, name), {"activity": name, "recorded_as": recorded})
    if row["Converted"].strip() == "1":
        last += rng.randrange(CONVERSION_DAYS[0] * 86400, CONVERSION_DAYS[1] * 86400 + 1)
        track(last, "Lead Converted", {})
    return out


def convert(rows: list[dict[str, str]]) -> Iterator[str]:
    """JSON lines of every lead's messages, sorted by timestamp, ties in file order."""
    keyed: list[tuple[int, int, int, dict[str, Any]]] = []
    for index, row in enumerate(rows):
        for seq, (moment, message) in enumerate(lead_messages(row)):
            keyed.append((moment, index, seq, message))
    keyed.sort(key=lambda item: item[:3])
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for _, _, _, message in keyed:
        yield encode(message) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert the X Education Leads.csv into Segment JSON Lines "
        "(identify traits, page views, last activities, Lead Converted).",
    )
    parser.add_argument("output", type=Path, help="JSON Lines file to write ('-' for stdout)")
    parser.add_argument(
        "--leads",
        type=Path,
        default=DEFAULT_LEADS,
        help=f"the leads file (default: {DEFAULT_LEADS})",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N leads of the file"
    )
    parser.add_argument(
        "--traits-only",
        action="store_true",
        help="write only the identify messages (contacts and their traits)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        rows = read_leads(verify(args.leads))
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.limit is not None:
        rows = rows[: max(args.limit, 0)]
    lines = list(convert(rows))
    if args.traits_only:
        lines = [line for line in lines if line.startswith('{"type":"identify"')]
    text = "".join(lines)
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8", newline="\n")
    converted = sum(1 for row in rows if row["Converted"].strip() == "1")
    first = json.loads(lines[0])["timestamp"] if lines else "-"
    last = json.loads(lines[-1])["timestamp"] if lines else "-"
    print(
        f"{len(rows)} leads, {len(lines)} messages ({converted} converted), "
        f"{first} to {last}, in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
