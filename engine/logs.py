"""Logging for `switchdesk serve`: one line per event, as text or JSON, with secrets masked.

Secrets reach log lines by accident: a query string in an access line
(`?api_key=...&password=...` is valid input), an exception message that
quotes a URL with credentials, a debug dump of a command. So masking is not
left to each call site: every line passes through :func:`redact` on its way
out, which masks values by the shape of secrets switchdesk issues (API keys,
session tokens), by the name they are given (`password=`, `"api_key": ...`,
`Authorization: Bearer ...`, URL user-info) and the exact values the process
was configured with (:func:`add_secret`: the ESL and xml_curl passwords,
`SWITCHDESK_SECRET_KEY`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import IO, Any

MASK = "***"

# names whose values are secret wherever they appear (query strings, forms, JSON, key=value text)
_SECRET_NAME = r"[\w.-]*(?:pass(?:word|wd)?|secret|api[_-]?key|token|auth|pwd|a1_hash|cookie)[\w.-]*"  # noqa: S105
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization headers and their like
    (re.compile(r"(?i)\b(bearer|basic|digest)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    # API keys: sdk_<public prefix>_<secret>; the prefix is kept to tell keys apart
    (re.compile(r"\b(sdk_[0-9a-f]+_)[A-Za-z0-9_-]+"), r"\1" + MASK),
    # user-info in URLs: postgresql://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # "password": "..." in JSON or a repr
    (re.compile(r"(?i)([\"']" + _SECRET_NAME + r"[\"']\s*:\s*)([\"'])(?:\\.|(?!\2).)*\2"), r"\1\2" + MASK + r"\2"),
    # password=... in query strings, forms, key=value text
    (re.compile(r"(?i)(\b" + _SECRET_NAME + r"=)[^&\s\"',;]+"), r"\1" + MASK),
    # header-style lines: X-API-Key: ..., X-Auth-Token: ...
    (re.compile(r"(?i)(\b" + _SECRET_NAME + r":[ \t]*)[^\s,;]+"), r"\1" + MASK),
    # ESL auth lines and channel variables such as sip_auth_password
    (re.compile(r"(?im)^(auth\s+)\S+"), r"\1" + MASK),
]
# anything else that looks like an issued token (token_urlsafe(32) is 43 characters)
_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{40,}(?![\w-])")
# Each of _PATTERNS needs one of these words, matched case-insensitively like the patterns. Most
# lines (every access line) have none, and the patterns cost ~30 us a line, on every request.
_KEYWORDS = ("pass", "secret", "apikey", "api_key", "api-key", "token", "auth", "pwd", "a1_hash", "cookie",
             "bearer", "basic", "digest", "sdk_", "://")
_exact: set[str] = set()


def _may_name_a_secret(text: str) -> bool:
    # Only for ASCII text is lower() exactly re.IGNORECASE (which also folds e.g. U+017F to "s").
    if not text.isascii():
        return True
    lowered = text.lower()
    return any(word in lowered for word in _KEYWORDS)


def add_secret(value: str | None) -> None:
    """Mask this exact value in every line from now on (configured passwords and keys)."""
    if value and len(value) >= 4:
        _exact.add(value)


def redact(text: str) -> str:
    for secret in sorted(_exact, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if _may_name_a_secret(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return _TOKEN.sub(MASK, text)


# attributes every LogRecord has; anything else was passed as `extra=` and goes into the JSON line
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger> <message>`; a traceback is folded into the same line."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={v!r}" for k, v in extras.items())
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return redact(line.replace("\n", "\\n"))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then any `extra=` fields (and `exc`)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(_redact_values(out), ensure_ascii=False, separators=(",", ":"))


def _redact_values(out: dict[str, Any]) -> dict[str, Any]:
    clean = {}
    for key, value in out.items():
        if isinstance(value, str):
            value = redact(value)
            if re.fullmatch(_SECRET_NAME, key, re.I):
                value = MASK
        clean[key] = value
    return clean


def setup(fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Install the one handler of the process (stderr by default; journald reads it under systemd).

    peewee's SQL (with its parameters) stays off even at DEBUG: it would put lead data and hashes
    in the log.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("peewee").setLevel(max(root.level, logging.INFO))
    for name in ("SWITCHDESK_SECRET_KEY", "SWITCHDESK_ESL_PASSWORD", "SWITCHDESK_XMLCURL_PASSWORD"):
        add_secret(os.environ.get(name))
    return handler
