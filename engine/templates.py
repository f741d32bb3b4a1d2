"""Which message templates exist: the shipped ones plus the user's folders."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path


class TemplateCatalog:
    """Email templates by name (``NAME.txt``). Rendering comes with delivery; the runner
    only needs to know a template exists, so a typo fails the run instead of sending junk."""

    def __init__(self, folders: Iterable[Path] = (), shipped: bool = True) -> None:
        self.sources: dict[str, str] = {}
        if shipped:
            for entry in files("workflows").joinpath("templates").iterdir():
                if entry.name.endswith(".txt"):
                    self.sources[entry.name.removesuffix(".txt")] = entry.read_text("utf-8")
        for folder in folders:
            for path in sorted(Path(folder).glob("*.txt")):
                self.sources[path.stem] = path.read_text("utf-8")

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
