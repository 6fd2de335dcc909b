"""A FreeSWITCH emulator that speaks the real event-socket wire protocol.

``FakeSwitch`` (server.py) is the core: the inbound socket, api/bgapi,
subscriptions, events, faults, and FreeSWITCH's side of an outbound socket.
mod_callcenter's state model lives in ``callcenter.py`` and is registered as
``callcenter_config`` when present.
"""

from .server import FakeOutboundCall, FakeSwitch, fs_urlencode, render_json, render_plain

__all__ = ["FakeOutboundCall", "FakeSwitch", "fs_urlencode", "render_json", "render_plain"]
