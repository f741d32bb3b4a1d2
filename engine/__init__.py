"""Leadflow: JSON workflows, a durable graph runner and simulation on a virtual clock.

The public embedding API lives in :mod:`engine.api`; everything else is internal.
"""

__version__ = "0.1.0"
