"""FreeSWITCH's own cache of our directory answers, and keeping it honest.

Every call used to cost three xml_curl requests: the caller's digest check
(`sip_auth`), the callee's `user/` dial string, and the dialplan. The two
directory ones ask for what rarely changes (a device's a1-hash and variables),
so the answer marks the user `cacheable` and FreeSWITCH keeps it
(`switch_xml_locate_user_merged`: the merged user, keyed by `id`, user and
domain, for `cacheable` milliseconds). What keeps that cache from going stale
is here:

* a change notice of a device, an account, a user, a voicemail box, ... (the
  kinds the in-memory views drop on; engine.store.changes; on
  PostgreSQL other boxes' too, through pgnotify) flushes it with
  `xml_flush_cache`, at once and again once FreeSWITCH's xml_curl timeout has
  passed, so an answer built before the commit and still in flight cannot
  settle in the cache after the first flush;
* a new command connection flushes it (notices sent while no connection was
  up were not acted on), and so does any change of whether this process hears
  other boxes' notices;
* an answer is only marked cacheable when the in-memory views may be used
  (`views.armed()`: on PostgreSQL, only while other boxes' notices are heard);
* the TTL (`SWITCHDESK_FS_USER_CACHE_MS`, default 10 minutes, 0 turns the
  marking off) bounds what a flush that never reached FreeSWITCH can cost.

A flush clears every cached user of the switch: device changes are admin
actions, rare next to calls, and one `xml_flush_cache` is cheaper than
tracking which usernames a deleted device had.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import gevent

from engine.directory import views
from engine.esl.errors import ESLError
from engine.store import changes

log = logging.getLogger("switchdesk.fscache")

ENV = "SWITCHDESK_FS_USER_CACHE_MS"
DEFAULT_MS = 600_000
# whatever the views drop on (a directory answer is built from the device, its account, its user's caller-ID
# overrides and routing, a voicemail box and its PIN): a flush costs FreeSWITCH one lookup per user after it
KINDS = views.KINDS
XML_CURL_TIMEOUT = 5.0  # freeswitch-conf's xml_curl timeout: no answer is in flight longer than this
EVENTS: tuple[str, ...] = ()


def cache_ms() -> int:
    """Milliseconds FreeSWITCH may keep a directory user; 0 when it must ask every time."""
    try:
        value = int(os.environ.get(ENV, DEFAULT_MS))
    except ValueError:
        value = DEFAULT_MS
    return max(0, min(value, 86_400_000))


def cacheable() -> str | None:
    """The `cacheable` attribute for a directory user answered now, or None for none."""
    ms = cache_ms()
    return str(ms) if ms and views.armed() else None


class SwitchUserCache:
    """Flushes FreeSWITCH's user cache when what it holds may have changed."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.flushes = 0  # sent and answered (tests wait on it)
        self._again: gevent.Greenlet | None = None
        self._epoch = changes.hearing_epoch()

    def on_change(self, kind: str, _account_id: int, _ids: list[int]) -> None:
        epoch = changes.hearing_epoch()
        if kind in KINDS or epoch != self._epoch:
            self._epoch = epoch
            self.flush(again=True)

    def on_hearing(self) -> None:
        epoch = changes.hearing_epoch()
        if epoch != self._epoch:
            self._epoch = epoch
            self.flush(again=True)

    def flush(self, *, again: bool = False) -> None:
        """Send `xml_flush_cache` now (and once more after the xml_curl timeout when `again`)."""
        self.engine.group.spawn(self._send)
        if again and (self._again is None or self._again.dead):
            self._again = gevent.spawn_later(XML_CURL_TIMEOUT + 1.0, self._send)
            self.engine.group.add(self._again)

    def _send(self) -> None:
        client = self.engine.commands.client
        if client is None:
            return  # the next connection flushes
        try:
            client.bgapi("xml_flush_cache", timeout=10)
            self.flushes += 1
        except ESLError as exc:
            log.warning("xml_flush_cache failed (%s); FreeSWITCH's directory cache expires by itself", exc)

    def stop(self) -> None:
        changes.unlisten(self.on_change)
        changes.unhear(self.on_hearing)
        if self._again is not None:
            self._again.kill(block=False)


def attach(engine: Any) -> SwitchUserCache:
    plugin = SwitchUserCache(engine)
    engine.fscache = plugin
    changes.listen(plugin.on_change)
    changes.on_hearing(plugin.on_hearing)
    engine.commands.on_connect(lambda _client: plugin.flush())
    engine.on_stop(plugin.stop)
    return plugin
