"""Write ``events.jsonl``: an example Segment event history for the shipped workflows.

Thirteen contacts at four companies (plus a student and a job seeker with no company) over
75 days from Monday 2026-01-05, one Segment message per line (identify, track, group), sorted
by timestamp, each with a unique ``messageId``. Every shipped workflow has something to do:

- ann@acme.com: signs up, confirms, downloads, watches, views pricing, crosses 81 with grade A
  (qualify-on-score-and-grade calls sales), requests a quote, and finally orders.
- bob@acme.com, carla@acme.com: the rest of the Acme buying committee (account scoring);
  carla never confirms her subscription (double-opt-in times out).
- dan@globex.com: engaged for a week, then silent: his score is reset after 30 days without
  email engagement, he goes on the nurture track after 45 days, and clicks the first nurture
  email.
- erin@globex.com: reaches 70 points, then only opens emails: the weekly decay takes her down
  to the 50-point floor.
- frank@globex.com: event, ads product pages and ebook, then a careers page view.
- gina, hank, ivy @initech.com: customers (Order Completed) who get the monthly NPS survey and
  answer it (promoter, passive then detractor, detractor).
- jon@northwind.com: a quote request out of the blue (fast track, then double opt-in that he
  never confirms), then nothing.
- kim@northwind.com: videos watched to 30 %, 60 %, 80 % and 10 %.
- sam.lee@student.uni.example: a very active student (job_title Student, company_size 1) who
  crosses 81 but is nurtured instead of sent to sales.
- jay.morgan@mail.example: a job seeker who keeps visiting the careers pages.

Plus background noise: newsletter opens and blog visits drawn from a fixed seed.

Run ``python generate_events.py`` (stdlib only); it writes events.jsonl next to itself and
always produces the same file.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SEED = 20260105
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; day 0 of the story
DAYS = 75
OUT = Path(__file__).with_name("events.jsonl")

ACCOUNTS: dict[str, dict[str, Any]] = {
    "acme": {"name": "Acme", "industry": "Retail", "employees": 500},
    "globex": {"name": "Globex", "industry": "Manufacturing", "employees": 2000},
    "initech": {"name": "Initech", "industry": "Software", "employees": 250},
    "northwind": {"name": "Northwind Traders", "industry": "Logistics", "employees": 80},
}

# userId -> (identify traits, account or None)
CONTACTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "ann@acme.com": (
        {
            "FIRSTNAME": "Ann",
            "LASTNAME": "Keller",
            "job_title": "VP Marketing",
            "company_size": 500,
            "country": "US",
            "phone": "+15550100101",
        },
        "acme",
    ),
    "bob@acme.com": (
        {
            "FIRSTNAME": "Bob",
            "LASTNAME": "Okafor",
            "job_title": "IT Manager",
            "company_size": 500,
            "country": "US",
            "phone": "+15550100102",
        },
        "acme",
    ),
    "carla@acme.com": (
        {
            "FIRSTNAME": "Carla",
            "LASTNAME": "Mendes",
            "job_title": "CFO",
            "company_size": 500,
            "country": "US",
        },
        "acme",
    ),
    "dan@globex.com": (
        {
            "FIRSTNAME": "Dan",
            "LASTNAME": "Schmidt",
            "job_title": "Marketing Manager",
            "company_size": 2000,
            "country": "DE",
            "phone": "+4915550100104",
        },
        "globex",
    ),
    "erin@globex.com": (
        {
            "FIRSTNAME": "Erin",
            "LASTNAME": "Walsh",
            "job_title": "Head of Growth",
            "company_size": 2000,
            "country": "IE",
        },
        "globex",
    ),
    "frank@globex.com": (
        {
            "FIRSTNAME": "Frank",
            "LASTNAME": "Rossi",
            "job_title": "Data Engineer",
            "company_size": 2000,
            "country": "IT",
        },
        "globex",
    ),
    "gina@initech.com": (
        {
            "FIRSTNAME": "Gina",
            "LASTNAME": "Park",
            "job_title": "COO",
            "company_size": 250,
            "country": "US",
            "phone": "+15550100107",
        },
        "initech",
    ),
    "hank@initech.com": (
        {
            "FIRSTNAME": "Hank",
            "LASTNAME": "Novak",
            "job_title": "IT Director",
            "company_size": 250,
            "country": "US",
        },
        "initech",
    ),
    "ivy@initech.com": (
        {
            "FIRSTNAME": "Ivy",
            "LASTNAME": "Chen",
            "job_title": "Procurement Lead",
            "company_size": 250,
            "country": "US",
        },
        "initech",
    ),
    "jon@northwind.com": (
        {
            "FIRSTNAME": "Jon",
            "LASTNAME": "Berg",
            "job_title": "Purchasing Manager",
            "company_size": 80,
            "country": "NO",
        },
        "northwind",
    ),
    "kim@northwind.com": (
        {
            "FIRSTNAME": "Kim",
            "LASTNAME": "Larsen",
            "job_title": "Marketing Analyst",
            "company_size": 80,
            "country": "DK",
            "phone": "+4555500111",
        },
        "northwind",
    ),
    "sam.lee@student.uni.example": (
        {
            "FIRSTNAME": "Sam",
            "LASTNAME": "Lee",
            "job_title": "Student",
            "company_size": 1,
            "country": "GB",
        },
        None,
    ),
    "jay.morgan@mail.example": (
        {
            "FIRSTNAME": "Jay",
            "LASTNAME": "Morgan",
            "job_title": "Software Engineer",
            "company_size": 50,
            "country": "US",
        },
        None,
    ),
}

# Contacts whose history must stay exactly as scripted (silence, decay) get no noise.
# userId -> (chance to open a newsletter, chance to read the blog that week)
NOISE: dict[str, tuple[float, float]] = {
    "ann@acme.com": (0.9, 0.4),
    "bob@acme.com": (0.6, 0.3),
    "carla@acme.com": (0.5, 0.1),
    "frank@globex.com": (0.4, 0.3),
    "gina@initech.com": (0.8, 0.2),
    "hank@initech.com": (0.7, 0.2),
    "ivy@initech.com": (0.5, 0.1),
    "kim@northwind.com": (0.7, 0.3),
    "sam.lee@student.uni.example": (0.95, 0.6),
}
BLOG_POSTS = (
    "/blog/lead-scoring-101",
    "/blog/score-vs-grade",
    "/blog/account-based-scoring",
    "/blog/score-decay",
    "/blog/nps-for-b2b",
    "/docs/getting-started",
)


class Story:
    """Collects messages; ``write`` sorts them and numbers the messageIds."""

    def __init__(self) -> None:
        self.messages: list[tuple[datetime, int, dict[str, Any]]] = []

    def _add(self, when: datetime, message: dict[str, Any]) -> None:
        self.messages.append((when, len(self.messages), message))

    def identify(self, user: str, when: datetime) -> None:
        traits, account = CONTACTS[user]
        self._add(when, {"type": "identify", "userId": user, "traits": {"email": user, **traits}})
        if account is not None:
            self._add(
                when + timedelta(seconds=30),
                {
                    "type": "group",
                    "userId": user,
                    "groupId": account,
                    "traits": ACCOUNTS[account],
                },
            )

    def track(self, user: str, when: datetime, event: str, **properties: Any) -> None:
        self._add(when, {"type": "track", "userId": user, "event": event, "properties": properties})

    def page(self, user: str, when: datetime, url: str) -> None:
        self.track(user, when, "Page Viewed", url=url)

    def write(self, path: Path) -> int:
        lines = []
        for number, (when, _, message) in enumerate(sorted(self.messages), start=1):
            assert START <= when < START + timedelta(days=DAYS), (when, message)
            message = {
                **message,
                "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "messageId": f"ex-{number:04d}",
            }
            lines.append(json.dumps(message, ensure_ascii=False))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return len(lines)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of the story: ``day`` days after 2026-01-05, at hour:minute UTC."""
    return START + timedelta(days=day, hours=hour, minutes=minute)


def newsletter(day: int) -> str:
    return f"newsletter-{at(day, 0):%Y-%m-%d}"


def signup(s: Story, user: str, when: datetime, *, confirm_after: timedelta | None) -> None:
    """Identify, Signed Up, and (optionally) the click on the confirmation link."""
    s.identify(user, when)
    s.track(user, when + timedelta(minutes=1), "Signed Up", source="newsletter form")
    if confirm_after is not None:
        s.track(user, when + confirm_after, "Subscription Confirmed", list="Newsletter")


def opened_and_clicked(s: Story, user: str, when: datetime, campaign: str, url: str) -> None:
    s.track(user, when, "Email Opened", campaign=campaign)
    s.track(user, when + timedelta(minutes=1), "Email Clicked", campaign=campaign, url=url)


def ann(s: Story) -> None:
    u = "ann@acme.com"
    signup(s, u, at(0, 10, 0), confirm_after=timedelta(minutes=18))
    opened_and_clicked(s, u, at(1, 9, 15), "welcome", "/blog/lead-scoring-101")
    s.track(
        u, at(3, 14, 5), "Ebook Downloaded", ebook="The analytics playbook", product="analytics"
    )
    s.page(u, at(7, 11, 0), "/products/analytics")
    s.page(u, at(7, 11, 4), "/products/analytics/dashboards")
    s.track(u, at(9, 16, 30), "Video Watched", video="Product tour", percent=90)
    s.page(u, at(15, 10, 12), "/pricing")
    opened_and_clicked(s, u, at(17, 8, 40), newsletter(15), "/customers/contoso")
    s.track(u, at(22, 13, 0), "Quote Requested", product="analytics", seats=40)
    s.page(u, at(23, 9, 30), "/pricing/enterprise")
    s.track(u, at(72, 15, 0), "Order Completed", order_id="o-1042", total=18000, currency="USD")


def bob(s: Story) -> None:
    u = "bob@acme.com"
    s.identify(u, at(2, 9, 0))
    s.track(u, at(2, 9, 1), "Event Attended", event_name="Retail Tech Summit 2026")
    opened_and_clicked(s, u, at(4, 8, 5), "welcome", "/docs/getting-started")
    s.page(u, at(10, 14, 0), "/products/crm")
    s.track(u, at(10, 14, 6), "Ebook Downloaded", ebook="CRM migration guide", product="crm")
    opened_and_clicked(s, u, at(30, 10, 20), newsletter(29), "/blog/score-vs-grade")


def carla(s: Story) -> None:
    u = "carla@acme.com"
    signup(s, u, at(11, 16, 0), confirm_after=None)  # never confirms: consent stays false
    s.page(u, at(14, 9, 45), "/pricing")
    s.track(u, at(15, 11, 0), "Contact Sales Requested", topic="Budget for Q2")


def dan(s: Story) -> None:
    u = "dan@globex.com"
    signup(s, u, at(1, 8, 30), confirm_after=timedelta(minutes=10))
    opened_and_clicked(s, u, at(2, 7, 50), "welcome", "/blog/lead-scoring-101")
    s.track(
        u, at(4, 13, 0), "Ebook Downloaded", ebook="The analytics playbook", product="analytics"
    )
    s.track(u, at(8, 12, 10), "Email Opened", campaign=newsletter(8))
    s.page(u, at(9, 14, 0), "/blog/score-decay")
    # ... silence: reset at day 38, nurture at day 54; he clicks the first nurture email.
    opened_and_clicked(s, u, at(56, 9, 12), "nurture-1", "/guides/model-review-checklist")
    s.page(u, at(56, 9, 14), "/guides/model-review-checklist")


def erin(s: Story) -> None:
    u = "erin@globex.com"
    signup(s, u, at(0, 11, 0), confirm_after=timedelta(minutes=30))
    opened_and_clicked(s, u, at(1, 10, 0), "welcome", "/templates/starter-model")
    s.track(u, at(3, 15, 20), "Ebook Downloaded", ebook="Ads that convert", product="ads")
    s.page(u, at(7, 10, 40), "/pricing")
    s.track(u, at(8, 16, 0), "Video Watched", video="Product tour", percent=55)
    # From here on she only opens the newsletter: no engagement, so her score decays.
    for day in range(15, DAYS, 7):
        s.track(u, at(day, 7, 35), "Email Opened", campaign=newsletter(day))


def frank(s: Story) -> None:
    u = "frank@globex.com"
    s.identify(u, at(16, 17, 0))
    s.track(u, at(16, 17, 1), "Event Attended", event_name="Data Leaders Meetup Berlin")
    s.page(u, at(17, 10, 0), "/products/ads")
    s.page(u, at(17, 10, 3), "/products/ads/audiences")
    s.track(u, at(18, 11, 30), "Ebook Downloaded", ebook="Ads that convert", product="ads")
    s.page(u, at(21, 19, 10), "/careers")


def gina(s: Story) -> None:
    u = "gina@initech.com"
    signup(s, u, at(0, 14, 0), confirm_after=timedelta(minutes=5))
    opened_and_clicked(s, u, at(2, 9, 0), "welcome", "/tour")
    s.page(u, at(4, 10, 0), "/pricing")
    s.track(u, at(7, 15, 30), "Quote Requested", product="crm", seats=25)
    s.track(u, at(10, 12, 0), "Order Completed", order_id="o-1001", total=4800, currency="USD")
    s.track(u, at(28, 8, 30), "Email Opened", campaign="nps-survey")
    s.track(u, at(28, 8, 31), "NPS Answered", score=9)


def hank(s: Story) -> None:
    u = "hank@initech.com"
    s.identify(u, at(3, 9, 30))
    s.track(u, at(3, 9, 31), "Event Attended", event_name="Initech partner day")
    s.track(u, at(11, 10, 0), "Order Completed", order_id="o-1007", total=1200, currency="USD")
    s.track(u, at(29, 9, 0), "Email Opened", campaign="nps-survey")
    s.track(u, at(29, 9, 2), "NPS Answered", score=7)
    s.track(u, at(50, 9, 0), "Email Opened", campaign=newsletter(50))
    s.track(u, at(57, 16, 0), "Email Opened", campaign="nps-survey")
    s.track(u, at(57, 16, 2), "NPS Answered", score=4)


def ivy(s: Story) -> None:
    u = "ivy@initech.com"
    signup(s, u, at(4, 13, 0), confirm_after=timedelta(hours=3))
    s.track(u, at(14, 11, 0), "Order Completed", order_id="o-1011", total=950, currency="USD")
    s.track(u, at(30, 14, 0), "Email Opened", campaign="nps-survey")
    s.track(u, at(30, 14, 3), "NPS Answered", score=3)


def jon(s: Story) -> None:
    u = "jon@northwind.com"
    s.identify(u, at(22, 15, 0))
    s.page(u, at(22, 15, 1), "/products/crm")
    s.track(u, at(22, 15, 10), "Quote Requested", product="crm", seats=10)
    # ... then nothing: the confirmation email is never answered.


def kim(s: Story) -> None:
    u = "kim@northwind.com"
    signup(s, u, at(7, 12, 0), confirm_after=timedelta(hours=20))
    s.track(u, at(9, 13, 0), "Video Watched", video="Product tour", percent=30)
    s.track(u, at(15, 13, 30), "Video Watched", video="Scoring in 5 minutes", percent=60)
    s.track(u, at(24, 16, 0), "Video Watched", video="Account-based scoring", percent=80)
    s.track(u, at(25, 9, 0), "Event Attended", event_name="Nordic Marketing Days")
    opened_and_clicked(s, u, at(28, 8, 0), newsletter(22), "/blog/account-based-scoring")
    s.track(u, at(30, 12, 0), "Video Watched", video="Customer story: Contoso", percent=10)


def sam(s: Story) -> None:
    u = "sam.lee@student.uni.example"
    signup(s, u, at(4, 20, 0), confirm_after=timedelta(minutes=2))
    opened_and_clicked(s, u, at(5, 21, 0), "welcome", "/blog/lead-scoring-101")
    s.track(
        u, at(6, 22, 0), "Ebook Downloaded", ebook="The analytics playbook", product="analytics"
    )
    s.track(u, at(6, 22, 10), "Ebook Downloaded", ebook="CRM migration guide", product="crm")
    s.track(u, at(8, 19, 0), "Video Watched", video="Product tour", percent=100)
    opened_and_clicked(s, u, at(9, 20, 0), newsletter(8), "/blog/score-vs-grade")
    s.page(u, at(11, 21, 0), "/pricing")  # crosses 81: grade is not A/B, so Nurture
    s.track(u, at(12, 20, 30), "Video Watched", video="Scoring in 5 minutes", percent=100)
    s.track(u, at(14, 18, 0), "Ebook Downloaded", ebook="Ads that convert", product="ads")
    s.page(u, at(18, 22, 0), "/pricing")
    for day in range(22, DAYS, 7):  # keeps clicking every newsletter
        opened_and_clicked(s, u, at(day + 1, 21, 15), newsletter(day), "/blog/nps-for-b2b")


def jay(s: Story) -> None:
    u = "jay.morgan@mail.example"
    s.identify(u, at(14, 18, 0))
    s.page(u, at(14, 18, 1), "/careers")
    s.page(u, at(14, 18, 3), "/careers/backend-engineer")
    s.track(u, at(14, 18, 6), "Signed Up", source="careers page")
    s.track(u, at(14, 18, 9), "Subscription Confirmed", list="Newsletter")
    opened_and_clicked(s, u, at(16, 19, 0), "welcome", "/careers")
    s.page(u, at(21, 20, 0), "/careers")
    s.page(u, at(21, 20, 5), "/careers/apply")
    s.page(u, at(35, 12, 0), "/careers/backend-engineer")


def noise(s: Story, rng: random.Random) -> None:
    """Newsletter opens (Tuesdays) and blog visits for the contacts listed in NOISE."""
    first_seen = {
        user: min(when for when, _, m in s.messages if m["userId"] == user) for user in NOISE
    }
    for day in range(1, DAYS - 1, 7):
        for user, (open_rate, blog_rate) in NOISE.items():
            if first_seen[user] >= at(day, 0):
                continue
            if rng.random() < open_rate:
                when = at(day + rng.randint(0, 1), rng.randint(7, 21), rng.randint(0, 59))
                s.track(user, when, "Email Opened", campaign=newsletter(day))
            if rng.random() < blog_rate:
                when = at(day + rng.randint(0, 4), rng.randint(8, 22), rng.randint(0, 59))
                s.page(user, when, rng.choice(BLOG_POSTS))


def main() -> None:
    story = Story()
    for chapter in (ann, bob, carla, dan, erin, frank, gina, hank, ivy, jon, kim, sam, jay):
        chapter(story)
    noise(story, random.Random(SEED))
    count = story.write(OUT)
    print(f"wrote {count} messages to {OUT}")


if __name__ == "__main__":
    main()
