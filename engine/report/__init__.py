"""``leadflow report``: where the leads stand, in the terminal, as an HTML page and a PNG."""

from engine.report.cli import report_command

__all__ = ["report_command"]
