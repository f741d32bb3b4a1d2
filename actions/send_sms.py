"""Queue a text message; its text is a template rendered when the node runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class SendSms(NodeKind):
    type: ClassVar[str] = "send_sms"
    title: ClassVar[str] = "Send an SMS"
    description: ClassVar[str] = "Send a text message through the outbox."
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "text": text(
                "Text",
                "Message text; {{ contact.attributes.NAME }} style placeholders allowed.",
                maxLength=1600,
            ),
            "next": NEXT,
        },
        "required": ["text"],
    }

    text: str
    next: str | None

    @classmethod
    def template_texts(cls, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if isinstance(data.get("text"), str):
            yield "/text", data["text"]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["text"], data.get("next"))

    def label(self) -> str:
        short = self.text if len(self.text) <= 24 else self.text[:23] + "…"
        return f"SMS “{short}”"

    def execute(self, ctx: NodeContext) -> Step:
        rendered = ctx.render_text(self.text, "SMS text")
        ctx.send("sms", {"text": self.text, "rendered": {"text": rendered}})
        return Continue(self.next)
