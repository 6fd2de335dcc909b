"""What FreeSWITCH is told about our configuration: names, queue parameters, agent contacts.

Names in FreeSWITCH are built from ids only (DESIGN.md): queue
`<queue_id>@<domain>`, agent `<user_id>@<domain>`. Client strings never reach
an ESL command line.
"""
from __future__ import annotations

import re

from engine.store.models import Account, Device, Queue

# The API's strategy names -> mod_callcenter's. mod_callcenter treats an unknown
# name as level/position order, and has no `sequentially-by-next-agent-order`;
# its `round-robin` is exactly that behaviour (next position after the last
# offered agent on the same level, then wrap around).
STRATEGIES = {
    "ring-all": "ring-all",
    "longest-idle-agent": "longest-idle-agent",
    "round-robin": "round-robin",
    "top-down": "top-down",
    "agent-with-least-talk-time": "agent-with-least-talk-time",
    "agent-with-fewest-calls": "agent-with-fewest-calls",
    "sequentially-by-agent-order": "sequentially-by-agent-order",
    "sequentially-by-next-agent-order": "round-robin",
    "random": "random",
    "ring-progressively": "ring-progressively",
}

DEFAULT_MOH = "local_stream://moh"
_NAME = re.compile(r"^(\d+)@([a-z0-9.-]+)$")


def queue_name(queue_id: int, domain: str) -> str:
    return f"{queue_id}@{domain}"


def agent_name(user_id: int, domain: str) -> str:
    return f"{user_id}@{domain}"


def parse_name(name: str) -> tuple[int, str] | None:
    """(id, domain) of a queue or agent name we made, else None (not ours)."""
    match = _NAME.match(name or "")
    return (int(match.group(1)), match.group(2)) if match else None


def _bool(value: bool) -> str:
    return "true" if value else "false"


def queue_params(queue: Queue) -> list[tuple[str, str]]:
    """mod_callcenter queue parameters, in callcenter.conf's names."""
    params = [
        ("strategy", STRATEGIES.get(queue.strategy, "longest-idle-agent")),
        ("moh-sound", DEFAULT_MOH),
        ("time-base-score", queue.time_base_score if queue.time_base_score in ("system", "queue") else "system"),
        ("max-wait-time", str(queue.max_wait_time)),
        ("max-wait-time-with-no-agent", str(queue.max_wait_time_with_no_agent)),
        ("max-wait-time-with-no-agent-time-reached", str(queue.max_wait_time_with_no_agent_time_reached)),
        ("tier-rules-apply", _bool(queue.tier_rules_apply)),
        ("tier-rule-wait-second", str(queue.tier_rule_wait_second)),
        ("tier-rule-wait-multiply-level", _bool(queue.tier_rule_wait_multiply_level)),
        ("tier-rule-no-agent-no-wait", _bool(queue.tier_rule_no_agent_no_wait)),
        ("discard-abandoned-after", str(queue.discard_abandoned_after)),
        ("abandoned-resume-allowed", _bool(queue.abandoned_resume_allowed)),
    ]
    # `record` is not mod_callcenter's record-template: switchdesk starts every recording itself, into its
    # own folder, after applying the README's precedence (engine.calls.recordings)
    return params


DEFAULT_RING_SECONDS = 30  # a device without its own `timeout`, as click-to-call rings it


def device_contact(device: Device, account: Account) -> str:
    """The dial string that rings this device (through the directory's dial-string)."""
    return f"user/{device.sip_username}@{account.domain}"


def agent_contact(sip_username: str, domain: str, timeout: int | None) -> str:
    """The contact mod_callcenter offers queue calls to: the device, ringing for the device's own
    `timeout`. Without `leg_timeout` mod_callcenter rings every offer for a fixed 60 s."""
    return f"[leg_timeout={timeout or DEFAULT_RING_SECONDS}]user/{sip_username}@{domain}"
