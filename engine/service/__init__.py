"""The HTTP service (``leadflow serve``): Segment-compatible collection under ``/v1``, a
Brevo-compatible subset under ``/v3``, Leadflow's own API under ``/api``, the links in
emails (``/unsubscribe/{token}``, ``/confirm/{token}``), ``/health``, ``/metrics``,
``/openapi.json`` and ``/docs``. :func:`engine.service.app.create_app` builds the ASGI app.

How events flow: a request is checked (key, size, JSON, each message against the Segment
spec) and its messages are written to the inbox in one INSERT before the client hears 200
(:mod:`engine.service.inbox`). A thread of the same process applies the inbox moments later
through ``Runner.ingest`` (dedupe by ``messageId``, rejected input kept in ``rejected``),
in large rounds, so collection keeps up with bursts while workflows run at their own pace.
On a SQLite file the inbox is a side file (``<file>-inbox``) so accepting never waits for
the store's single writer. Brevo contact and list calls change contacts at once, through
``Runner.update_contacts`` (audited; triggers fire).

Keys (``leadflow keys create``): ``ingest`` may send events (``/v1``, ``POST
/v3/events``); ``admin`` may do everything. See :mod:`engine.service.keys`.
"""
