"""The one escaping function for values that reach FreeSWITCH (DESIGN.md).

Client strings (names, caller ids, tags, lead ids) never appear on an ESL
command line as words; they travel only as channel variables in
``{var=value,...}`` (global) or ``[var=value,...]`` (per leg) prefixes.
FreeSWITCH splits those lists on unescaped ``,``, ends them at ``}`` / ``]``,
and treats single quotes as grouping, so those characters are escaped with a
backslash and values with spaces are single-quoted.  Control characters
(a newline would end the ESL command and start another) are refused outright:
there is no escaping that FreeSWITCH would undo for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = [
    "channel_var_value",
    "channel_vars",
    "check_name",
    "leg_vars",
    "quote_arg",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Words on a callcenter_config line (agent/queue names, statuses): no quoting
# can make these safe, so they are checked instead.
_ARG_FORBIDDEN = re.compile(r"['\x00-\x1f\x7f]")


def _refuse_control(value: str) -> None:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed in values sent to FreeSWITCH")


def channel_var_value(value: object, *, bracket: bool = False) -> str:
    """Escape one channel-variable value for a ``{...}`` (or ``[...]`` with bracket=True) list.

    ``,`` ``}`` ``'`` (and ``]`` in bracket lists) get a backslash; a value
    with a space is wrapped in single quotes so FreeSWITCH keeps it whole.
    Raises ValueError for control characters.
    """
    text = "" if value is None else str(value)
    _refuse_control(text)
    specials = ",}'\\" + ("]" if bracket else "")
    out = "".join("\\" + ch if ch in specials else ch for ch in text)
    if " " in out:
        out = f"'{out}'"
    return out


def _vars(variables: Mapping[str, object] | Iterable[tuple[str, object]], bracket: bool) -> str:
    items = variables.items() if isinstance(variables, Mapping) else variables
    parts = []
    for name, value in items:
        if not _VAR_NAME.match(name):
            raise ValueError(f"invalid channel variable name {name!r}")
        parts.append(f"{name}={channel_var_value(value, bracket=bracket)}")
    return ",".join(parts)


def channel_vars(variables: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """``{a=1,b='x y'}`` for originate: variables for every leg."""
    return "{" + _vars(variables, False) + "}"


def leg_vars(variables: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """``[a=1,b='x y']``: variables for one leg of a dial string."""
    return "[" + _vars(variables, True) + "]"


def quote_arg(value: str) -> str:
    """One argument of a ``callcenter_config`` line, quoted if it has spaces.

    mod_callcenter splits its arguments on spaces and honours single quotes,
    so ``On Break`` must go as ``'On Break'`` (unquoted, only ``On`` is used).
    Arguments here are ids, statuses and numbers built by switchdesk, never
    client strings; a quote or control character is a bug, so it raises.
    """
    text = str(value)
    if _ARG_FORBIDDEN.search(text):
        raise ValueError(f"unsafe callcenter_config argument {text!r}")
    if text == "" or " " in text:
        return f"'{text}'"
    return text


def check_name(value: str) -> str:
    """Validate a FreeSWITCH object name (``12@example.com``): no spaces, quotes or controls."""
    if not value or _ARG_FORBIDDEN.search(value) or " " in value:
        raise ValueError(f"invalid FreeSWITCH name {value!r}")
    return value
