"""Call an HTTP endpoint (a CRM, a sales channel) through the outbox."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from engine.fragments import NEXT
from engine.kinds import Continue, NodeContext, NodeKind, Step
from engine.messaging.values import render_json


@dataclass(frozen=True, slots=True)
class Webhook(NodeKind):
    type: ClassVar[str] = "webhook"
    title: ClassVar[str] = "Call a webhook"
    description: ClassVar[str] = "POST a JSON body to a URL; retried by the outbox until it lands."
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "url": {
                "title": "URL",
                "description": "http(s) address to POST to.",
                "type": "string",
                "format": "uri",
                "pattern": "^https?://",
            },
            "body": {
                "title": "Body",
                "description": "JSON body; text values may hold {{ contact.id }} placeholders.",
            },
            "next": NEXT,
        },
        "required": ["url"],
    }

    url: str
    body: Any
    next: str | None

    @classmethod
    def template_texts(cls, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        texts: list[tuple[str, str]] = []

        def keep(text: str, where: str) -> str:
            texts.append((f"/body{where if where != '/' else ''}", text))
            return text

        if "body" in data:
            render_json(data["body"], keep)
        yield from texts

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["url"], data.get("body"), data.get("next"))

    def label(self) -> str:
        return f"webhook {urlsplit(self.url).netloc}"

    def execute(self, ctx: NodeContext) -> Step:
        body = render_json(
            self.body, lambda text, where: ctx.render_text(text, f"webhook body at {where}")
        )
        ctx.send("webhook", {"url": self.url, "body": self.body, "rendered": {"body": body}})
        return Continue(self.next)
