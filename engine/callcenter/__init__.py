"""The call center: queues and their tiers (membership, modes, time groups), agents (check-in,
check-out, pause, wrap-up, setQueues), check-in codes dialled from a phone, pause reasons, time
groups, and keeping FreeSWITCH's mod_callcenter in step with all of it (`sync`, with the names it
gives things in FreeSWITCH in `fsconfig`). `agent_runtime` is the engine plugin that follows
mod_callcenter's events and runs the pause, wrap-up and time-group timers.

May use: `engine.store`, `engine.esl`, `engine.events.outbox` (to record agent:* and queue:* events
in the caller's transaction), and the directory's public functions (extensions for number clashes).
"""
