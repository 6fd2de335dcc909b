"""Load the recorded FreeSWITCH transcripts (``*.esl``) byte for byte.

The transcripts are the ground truth for both the parser and the emulator, so
tests read them rather than hand-written strings.  The directory is found
through ``SWITCHDESK_FIXTURES`` or the copy in ``tests/recordings/freeswitch``,
which is how CI lays it out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(rb"(>>> SEND|<<< RECV) (\d+) @([0-9.]+)\n")


def fixtures_dir() -> Path:
    """``SWITCHDESK_FIXTURES`` if set, else the copy in the repository (``tests/recordings/freeswitch``)."""
    env = os.environ.get("SWITCHDESK_FIXTURES")
    if env:
        return Path(env)
    return _REPO / "tests" / "recordings" / "freeswitch"


@dataclass(frozen=True)
class Block:
    """One SEND (client -> FreeSWITCH) or RECV (FreeSWITCH -> client) chunk."""

    direction: str  # "SEND" or "RECV"
    data: bytes
    t: float


@dataclass(frozen=True)
class Transcript:
    name: str
    meta: list[str]
    blocks: list[Block]

    @property
    def received(self) -> bytes:
        """Everything FreeSWITCH wrote, joined: the stream a parser must handle."""
        return b"".join(b.data for b in self.blocks if b.direction == "RECV")

    @property
    def sent(self) -> list[bytes]:
        return [b.data for b in self.blocks if b.direction == "SEND"]

    def exchanges(self) -> list[tuple[bytes, bytes]]:
        """(sent, bytes received until the next SEND) pairs, in wire order."""
        out: list[tuple[bytes, bytes]] = []
        pending: bytes | None = None
        acc = b""
        for b in self.blocks:
            if b.direction == "SEND":
                if pending is not None:
                    out.append((pending, acc))
                pending, acc = b.data, b""
            elif pending is not None:
                acc += b.data
        if pending is not None:
            out.append((pending, acc))
        return out

    def greeting(self) -> bytes:
        """Bytes received before the first SEND."""
        acc = b""
        for b in self.blocks:
            if b.direction == "SEND":
                break
            acc += b.data
        return acc


def parse_transcript(raw: bytes, name: str = "") -> Transcript:
    """Split a transcript into blocks, counting bytes exactly as recorded."""
    meta: list[str] = []
    pos = 0
    while raw.startswith(b"###", pos):
        end = raw.index(b"\n", pos)
        meta.append(raw[pos:end].decode("utf-8", "replace"))
        pos = end + 1
    blocks: list[Block] = []
    while pos < len(raw):
        m = _BLOCK.match(raw, pos)
        if m is None:
            raise ValueError(f"{name}: bad block header at byte {pos}: {raw[pos:pos + 40]!r}")
        n = int(m.group(2))
        start = m.end()
        data = raw[start:start + n]
        if len(data) != n or raw[start + n:start + n + 1] != b"\n":
            raise ValueError(f"{name}: block at byte {pos} is truncated")
        direction = "SEND" if m.group(1).startswith(b">>>") else "RECV"
        blocks.append(Block(direction, data, float(m.group(3))))
        pos = start + n + 1
    return Transcript(name, meta, blocks)


@cache
def load(name: str) -> Transcript:
    """Parse one recording by file name (e.g. ``"auth-fail.esl"``)."""
    path = fixtures_dir() / name
    return parse_transcript(path.read_bytes(), name)


def esl_files() -> list[str]:
    """Every ``*.esl`` recording, sorted (empty if the fixtures are missing)."""
    d = fixtures_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.glob("*.esl"))
