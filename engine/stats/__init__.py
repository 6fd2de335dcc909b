"""Statistics: live queue and agent figures, the 15-minute history, reports and wallboard links.

Owns the tables of engine.store.models.stats. Figures come from what FreeSWITCH
reported — mod_callcenter's callcenter::info events (`queues`) and the agent
activity the engine already follows, heard as the agent:status events it
records (`agents`, through engine.events.outbox.on_emit) — written as they
happen, in the transaction of the change; after FreeSWITCH was unreachable the
live part is rebuilt from its own lists (`live`). Nothing here polls FreeSWITCH.

May use: store, esl (through the engine), directory (views), callcenter (fsconfig names).
The engine plugin is `engine.stats.plugin`; the API reads `snapshot`, `reports`, `hub` and `wallboards`.
"""
