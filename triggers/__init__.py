"""Trigger kinds: one module each. Register a new kind by adding one line below."""

from engine.kinds import TriggerKind
from triggers import (
    attribute_changed,
    contact_created,
    event,
    inactivity,
    list_added,
    list_removed,
    schedule,
    score_crossed,
)

TRIGGER_KINDS: tuple[type[TriggerKind], ...] = (
    event.EventTrigger,
    contact_created.ContactCreated,
    attribute_changed.AttributeChanged,
    list_added.ListAdded,
    list_removed.ListRemoved,
    score_crossed.ScoreCrossed,
    inactivity.Inactivity,
    schedule.Schedule,
)
