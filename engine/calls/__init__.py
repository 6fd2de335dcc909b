"""Calls: the call:* events built from FreeSWITCH's channel and mod_callcenter events (`callevents`,
an engine plugin, with the durable record of live calls that lets a missed `call:end` be
reconstructed), and click-to-call (`originate`). Active calls, supervision and recordings land here.

May use: `engine.store`, `engine.esl`, `engine.events.outbox`, the call center's names in FreeSWITCH
(`callcenter.fsconfig`).
"""
