"""Calls: the call:* events built from FreeSWITCH's channel and mod_callcenter events (`callevents`,
an engine plugin, with the durable record of live calls; the fields of each event are built by
`call_fields`, and `reconcile` reconstructs a missed `call:end` after a reconnect), and click-to-call
(`originate`), the call records written as legs end (`records`), recordings (`recordings`, an engine
plugin: which calls are recorded, FreeSWITCH's record events, files, retention) and the live calls for
supervisors with listen / whisper / barge (`supervision`).

May use: `engine.store`, `engine.esl`, `engine.events.outbox`, the call center's names in FreeSWITCH
(`callcenter.fsconfig`), the CSV-injection defence of the leads' CSV (`leads.csvformat.defuse`).
"""
