from engine.api import Leadflow
from engine.clock import VirtualClock
from helpers import at
def test_smoke(store_url):
    clock = VirtualClock(at("2026-01-05 10:00"))
    flow = Leadflow(store_url, clock)
    flow.deploy(["workflows/consideration-stage.json", "workflows/score-bands.json"])
    flow.track("ann@acme.com", "Quote Requested", timestamp=at("2026-01-05 10:00"), message_id="m1")
    flow.track("ann@acme.com", "Quote Requested", timestamp=at("2026-01-05 10:01"), message_id="m1")
    c = flow.contact("ann@acme.com", history=True)
    assert c["scores"]["SCORE"] == 30, c
    assert "Warm leads" in c["lists"], c
    flow.close()
