"""Messaging: rendering at run time, outbox delivery, consent.

- :mod:`engine.messaging.render` renders email, SMS and webhook content while a run executes
  (Jinja2 sandbox, strict about missing variables), so a bad template fails the run.
- :mod:`engine.messaging.delivery` delivers the outbox: claimed rows, leases, retries with
  backoff and jitter, a dead-letter state, every attempt recorded.
- :mod:`engine.messaging.consent` decides who may be written to (consent, unsubscribes,
  quiet hours, frequency caps) and holds :func:`confirm` and :func:`unsubscribe`, the two
  functions behind the links in the emails.
- :mod:`engine.messaging.providers` talks SMTP and HTTP.
- :mod:`engine.messaging.settings` reads the ``settings`` table and the environment.
"""
