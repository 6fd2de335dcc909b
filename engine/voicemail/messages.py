"""A box's messages, as mod_voicemail keeps them, over the event socket.

`vm_list <box>@<domain>` answers one line per message,
`created:read:box:domain:folder:file:uuid:cid_name:cid_number:seconds` (colon-separated, as seen on
FreeSWITCH 1.10.12; a caller name may hold colons, so the last fields are read from the right).
The file is on the FreeSWITCH box; `file_path` gives it for a download when switchdesk runs on
the same box (DESIGN.md: media and recordings are files on the FreeSWITCH box).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.errors import ServiceError
from engine.voicemail.boxes import box_user

NOT_CONNECTED = "FreeSWITCH is not connected"
UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


@dataclass(frozen=True)
class Message:
    uuid: str
    created: int
    read: int
    folder: str
    path: str
    cid_name: str
    cid_number: str
    seconds: int

    def record(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "created": self.created, "read": self.read, "folder": self.folder,
                "cid_name": self.cid_name, "cid_number": self.cid_number, "seconds": self.seconds}


def _int(value: str) -> int:
    return int(value) if value.isdigit() else 0


def parse_list(text: str) -> list[Message]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 10 or not parts[0].isdigit() or not parts[-1].isdigit():
            continue
        created, read, _box, _domain, folder, path, uuid = parts[:7]
        if not UUID.match(uuid):
            continue
        out.append(Message(uuid, _int(created), _int(read), folder, path, ":".join(parts[7:-2]), parts[-2],
                           _int(parts[-1])))
    return out


def _client(commands: Any) -> Any:
    if commands is None:
        raise ServiceError(503, NOT_CONNECTED)
    try:
        return commands.require_client()
    except Exception:
        raise ServiceError(503, NOT_CONNECTED) from None


def list_messages(commands: Any, box_id: int, domain: str) -> list[Message]:
    """The box's messages, newest first."""
    text = _client(commands).api(f"vm_list {box_user(box_id)}@{domain}", timeout=10, check=False)
    return sorted(parse_list(text or ""), key=lambda m: (-m.created, m.uuid))


def find(commands: Any, box_id: int, domain: str, uuid: str) -> Message:
    for message in list_messages(commands, box_id, domain):
        if message.uuid == uuid:
            return message
    raise ServiceError(404, f"Message {uuid} not found")


def delete(commands: Any, box_id: int, domain: str, uuid: str) -> None:
    find(commands, box_id, domain, uuid)
    _client(commands).api(f"vm_delete {box_user(box_id)}@{domain} {uuid}", timeout=10, check=False)
