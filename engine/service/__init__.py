"""The HTTP service (``leadflow serve``): Segment-compatible collection under ``/v1``, a
Brevo-compatible subset under ``/v3``, Leadflow's own API under ``/api``, health, metrics
and OpenAPI docs. :func:`engine.service.app.create_app` builds the ASGI app.
"""
