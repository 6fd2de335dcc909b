"""A queue's `exits`: where a caller goes when the queue gives up on them.

The shape (README, "Queue exits"; OpenAPI `QueueExits`):

    {"max_wait": EXIT,            # waited max_wait_time seconds (mod_callcenter: cc_cancel_reason TIMEOUT)
     "no_agent": EXIT,            # no agent for max_wait_time_with_no_agent seconds (NO_AGENT_TIMEOUT);
                                  # without it, max_wait applies
     "keys": {"1": EXIT, ...}}    # the caller pressed that key while waiting (EXIT_WITH_KEY, cc_exit_keys)

    EXIT = {"type": "queue", "target": <queue id>}        another queue of the account
         | {"type": "extension", "target": "<number>"}    an extension (or any number the account's dialplan routes)
         | {"type": "voicemail", "target": <user id>}     the user's voicemail box
         | {"type": "number", "target": "<+E.164 or digits>"}  an outside number, through the outbound gateway
         | {"type": "hangup"}

Every part is optional; `{}` (the default) leaves the caller to mod_callcenter, which hangs up.
The dialplan (api.freeswitch) sends the caller, once `callcenter` returns, to
`switchdesk_exit_<queue id>_${cc_cancel_reason}_${cc_exit_key}`, which this configuration resolves.
"""
from __future__ import annotations

import re
from typing import Any

from engine.errors import ServiceError
from engine.store.models import Queue, User

TYPES = ("queue", "extension", "voicemail", "number", "hangup")
REASONS = {"TIMEOUT": "max_wait", "NO_AGENT_TIMEOUT": "no_agent", "EXIT_WITH_KEY": "keys"}
KEYS = "0123456789*#"
NUMBER = re.compile(r"^\+?[0-9]{2,20}$")
EXTENSION = re.compile(r"^[0-9*#+]{1,32}$")


def _bad(field: str, why: str) -> ServiceError:
    return ServiceError(400, f"{field}: {why}")


def _exit(account_id: int, field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "must be an object with `type` (and `target`)")
    unknown = set(value) - {"type", "target"}
    if unknown:
        raise _bad(field, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    kind = value.get("type")
    if kind not in TYPES:
        raise _bad(f"{field}.type", f"must be one of {', '.join(TYPES)}")
    target = value.get("target")
    if kind == "hangup":
        if target is not None:
            raise _bad(f"{field}.target", "hangup takes no target")
        return {"type": "hangup"}
    if kind in ("queue", "voicemail"):
        if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target <= 2**53:
            raise _bad(f"{field}.target", f"a {'queue' if kind == 'queue' else 'user'} id")
        model = Queue if kind == "queue" else User
        if not model.select(model.id).where((model.account == account_id) & (model.id == target)).exists():
            raise _bad(f"{field}.target", f"no {'queue' if kind == 'queue' else 'user'} with id {target}")
        return {"type": kind, "target": target}
    pattern = EXTENSION if kind == "extension" else NUMBER
    if not isinstance(target, str) or not pattern.match(target):
        raise _bad(f"{field}.target", "an extension number (digits, * # +, up to 32)" if kind == "extension"
                   else "a phone number (digits, optionally a leading +, 2 to 20 digits)")
    return {"type": kind, "target": target}


def validate(account_id: int, exits: Any, queue_id: int | None = None) -> dict[str, Any]:
    """The normalised exits, or 400 naming the part that is wrong (targets must exist in the account)."""
    if exits in (None, {}):
        return {}
    if not isinstance(exits, dict):
        raise _bad("exits", "must be an object")
    unknown = set(exits) - {"max_wait", "no_agent", "keys"}
    if unknown:
        raise _bad("exits", f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; known: max_wait, no_agent, keys")
    out: dict[str, Any] = {}
    for name in ("max_wait", "no_agent"):
        if exits.get(name) is not None:
            out[name] = _exit(account_id, f"exits.{name}", exits[name])
    keys = exits.get("keys")
    if keys is not None:
        if not isinstance(keys, dict) or len(keys) > len(KEYS):
            raise _bad("exits.keys", "must be an object from a key (0-9 * #) to an exit")
        out["keys"] = {}
        for key, value in keys.items():
            if not isinstance(key, str) or len(key) != 1 or key not in KEYS:
                raise _bad("exits.keys", f"{key!r} is not one key of 0-9 * #")
            out["keys"][key] = _exit(account_id, f"exits.keys.{key}", value)
    for exit_ in [out.get("max_wait"), out.get("no_agent"), *out.get("keys", {}).values()]:
        if exit_ and exit_["type"] == "queue" and queue_id is not None and exit_["target"] == queue_id:
            raise _bad("exits", "a queue cannot exit to itself")
    return out


def for_reason(exits: dict[str, Any], reason: str, key: str = "") -> dict[str, Any] | None:
    """The exit a caller takes for mod_callcenter's `cc_cancel_reason` (and `cc_exit_key`), if any."""
    if reason == "NO_AGENT_TIMEOUT":
        return exits.get("no_agent") or exits.get("max_wait")
    if reason == "TIMEOUT":
        return exits.get("max_wait")
    if reason == "EXIT_WITH_KEY":
        return (exits.get("keys") or {}).get(key)
    return None


def exit_keys(exits: dict[str, Any]) -> str:
    """mod_callcenter's `cc_exit_keys`: the keys that end the wait."""
    return "".join(k for k in KEYS if k in (exits.get("keys") or {}))
