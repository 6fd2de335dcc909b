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


def moh_sound(queue: Queue, media: dict[int, str] | None = None) -> str:
    """The queue's hold music: its playlist (`audio_playback.playlist`, played in order, then again), else
    its `moh_id` file, else the music that ships with switchdesk. mod_callcenter plays `moh-sound` over and
    over while the caller waits, so one file or one `file_string://` list loops. A media id that has no
    file (`media` lacks it) falls back to the default: a source that cannot be opened makes mod_callcenter
    log ~1,000 errors a second per caller (DESIGN.md)."""
    media = media or {}
    playlist = [media[i] for i in playlist_ids(queue) if i in media]
    if playlist:
        return playlist[0] if len(playlist) == 1 else "file_string://" + "!".join(playlist)
    if queue.moh_id and queue.moh_id in media:
        return media[queue.moh_id]
    return DEFAULT_MOH


def playlist_ids(queue: Queue) -> list[int]:
    """`audio_playback: {"playlist": [media ids]}`: the queue's hold-music playlist."""
    value = queue.audio_playback if isinstance(queue.audio_playback, dict) else {}
    ids = value.get("playlist")
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)] if isinstance(ids, list) else []


def media_ids(queue: Queue) -> set[int]:
    """Every media id the queue's callcenter.conf entry and dialplan may play."""
    ids = {queue.moh_id, queue.announce_id, queue.join_announce, queue.pre_bridge_announce, *playlist_ids(queue)}
    return {i for i in ids if i}


def queue_params(queue: Queue, media: dict[int, str] | None = None) -> list[tuple[str, str]]:
    """mod_callcenter queue parameters, in callcenter.conf's names; `media` maps the queue's media ids to
    their files (engine.media.library.paths_of)."""
    media = media or {}
    params = [
        ("strategy", STRATEGIES.get(queue.strategy, "longest-idle-agent")),
        ("moh-sound", moh_sound(queue, media)),
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
    if queue.announce_id and queue.announce_id in media and queue.announce_frequency > 0:
        # mod_callcenter plays it to the waiting caller every announce-frequency seconds
        params += [("announce-sound", media[queue.announce_id]), ("announce-frequency", str(queue.announce_frequency))]
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
