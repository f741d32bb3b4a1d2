"""Node kinds: one module each. Register a new kind by adding one line below."""

from actions import (
    add_to_list,
    condition,
    exit,
    remove_from_list,
    send_email,
    send_sms,
    set_attribute,
    split,
    start_workflow,
    update_score,
    wait,
    wait_for_event,
    webhook,
)
from engine.kinds import NodeKind

NODE_KINDS: tuple[type[NodeKind], ...] = (
    update_score.UpdateScore,
    set_attribute.SetAttribute,
    add_to_list.AddToList,
    remove_from_list.RemoveFromList,
    send_email.SendEmail,
    send_sms.SendSms,
    webhook.Webhook,
    wait.Wait,
    wait_for_event.WaitForEvent,
    condition.Condition,
    split.Split,
    start_workflow.StartWorkflow,
    exit.Exit,
)
