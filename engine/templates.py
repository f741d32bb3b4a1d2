"""Which message templates exist: the shipped ones plus the user's folders."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path


class TemplateCatalog:
    """Email templates by name (``NAME.txt``, and ``NAME.html`` for an HTML part). The run
    renders them (engine/messaging/render.py), so a typo fails the run instead of sending
    junk."""

    def __init__(self, folders: Iterable[Path] = (), shipped: bool = True) -> None:
        self.sources: dict[str, str] = {}
        self.html: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}
        """Templates of the user's folders that could not be read, by name: the reason.
        A run that sends one fails with it; the other templates are unaffected."""
        found = {".txt": self.sources, ".html": self.html}
        if shipped:
            for entry in files("workflows").joinpath("templates").iterdir():
                for suffix, into in found.items():
                    if entry.name.endswith(suffix):
                        into[entry.name.removesuffix(suffix)] = entry.read_text("utf-8-sig")
        for folder in folders:
            for suffix, into in found.items():
                for path in sorted(Path(folder).glob(f"*{suffix}")):
                    try:
                        # utf-8-sig: a byte order mark (Windows editors) would hide the header block
                        into[path.stem] = path.read_text("utf-8-sig")
                    except UnicodeDecodeError as exc:
                        self.unreadable[path.stem] = (
                            f"{path}: not UTF-8 (byte {exc.start + 1}: {exc.reason})"
                        )
                    except OSError as exc:
                        self.unreadable[path.stem] = f"{path}: cannot be read: {exc.strerror}"

    def __contains__(self, name: object) -> bool:
        return name in self.sources

    @classmethod
    def near(cls, workflow_paths: Iterable[Path]) -> TemplateCatalog:
        """Shipped templates plus any ``templates/`` folder beside or inside the workflow
        paths given on the command line."""
        folders = []
        for path in workflow_paths:
            base = path if path.is_dir() else path.parent
            if (base / "templates").is_dir():
                folders.append(base / "templates")
        return cls(folders)
