"""switchdesk's FreeSWITCH event-socket layer.

Three pieces, as in wazo-amid: a pure parser (:mod:`.protocol`), a client
(:mod:`.client`, built on greenswitch) and a supervisor that rebuilds the
connection (:mod:`.supervisor`); plus the outbound-socket server
(:mod:`.outbound`) and the one escaping function for channel variables
(:mod:`.quoting`).  The client and the outbound sessions share the connection
core (:mod:`.connection`: reader, command/reply pairing), with event dispatch
(:mod:`.dispatch`) and bgapi jobs (:mod:`.jobs`) mixed in; the errors every
caller catches are in :mod:`.errors`.  Everything uses explicit gevent APIs, so it works whether
or not the process is monkey-patched.
"""

from .protocol import Event, Frame, FrameParser, ProtocolError

__all__ = ["Event", "Frame", "FrameParser", "ProtocolError"]
