"""Queue an email from a template; delivery goes through the outbox, never inline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.errors import ActionFailed
from engine.fragments import NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class SendEmail(NodeKind):
    type: ClassVar[str] = "send_email"
    title: ClassVar[str] = "Send an email"
    description: ClassVar[str] = (
        "Send an email built from a template. The message is written to the outbox in the "
        "same transaction as the step, so a retry never sends it twice."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "template": text(
                "Template", "Name of the email template (workflows/templates/NAME.txt)."
            ),
            "subject": text("Subject", "Subject line; overrides the template's own."),
            "next": NEXT,
        },
        "required": ["template"],
    }

    template: str
    subject: str | None
    next: str | None

    @classmethod
    def template_texts(cls, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if isinstance(data.get("subject"), str):
            yield "/subject", data["subject"]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["template"], data.get("subject"), data.get("next"))

    def label(self) -> str:
        return f"email {self.template}"

    def execute(self, ctx: NodeContext) -> Step:
        if not ctx.has_template(self.template):
            raise ActionFailed(f"unknown email template {self.template!r}")
        payload: dict[str, Any] = {"template": self.template}
        if self.subject is not None:
            payload["subject"] = self.subject
        payload["rendered"] = ctx.render_email(self.template, self.subject)
        ctx.send("email", payload)
        return Continue(self.next)
