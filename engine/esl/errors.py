"""The ways an ESL command can fail, shared by every connection and every caller.

Callers (the supervisor, click-to-call, the engine's plugins) catch these
without caring which kind of connection raised them, and the inbound client,
the outbound sessions and the bgapi jobs all decide the same way what counts
as an error reply; so the vocabulary lives apart from the connection code.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TIMEOUT", "AuthError", "CommandTimeout", "ConnectionLost", "ESLError", "is_error_reply"]

#: Seconds a command waits for its reply before :class:`CommandTimeout`.
DEFAULT_TIMEOUT = 30.0


class ESLError(Exception):
    """FreeSWITCH answered with an error (``-ERR ...``); ``text`` is its reply."""

    def __init__(self, text: str, command: str | None = None) -> None:
        super().__init__(text.strip() if command is None else f"{command!r}: {text.strip()}")
        self.text = text
        self.command = command


class ConnectionLost(ESLError, ConnectionError):
    """The connection is gone (or never was); the command's fate is unknown."""

    def __init__(self, reason: str = "connection lost") -> None:
        ESLError.__init__(self, reason)


class CommandTimeout(ESLError, TimeoutError):
    """No reply within the timeout.  The command may still run in FreeSWITCH."""


class AuthError(ESLError):
    """FreeSWITCH refused the password (``-ERR invalid``)."""


def is_error_reply(text: str) -> bool:
    """True for FreeSWITCH's ``-ERR ...`` and ``-USAGE...`` api replies."""
    return text.startswith("-ERR") or text.startswith("-USAGE")
