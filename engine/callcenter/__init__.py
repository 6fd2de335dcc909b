"""The call center: queues and their tiers (membership, modes, time groups), agents (check-in,
check-out, pause, wrap-up, setQueues), check-in codes dialled from a phone, pause reasons, time
groups, and keeping FreeSWITCH's mod_callcenter in step with all of it (`sync`, with the names it
gives things in FreeSWITCH in `fsconfig`). The agent commands are `agents`; what an agent's stored
state means for mod_callcenter (activity, ready_time, the sync's runtime values, what the clock ends)
is `agent_state`; what mod_callcenter reports about agents is `agent_events`. `agent_runtime` is the
engine plugin that follows mod_callcenter's events and runs the pause, wrap-up and time-group timers.

May use: `engine.store`, `engine.esl`, `engine.events.outbox` (to record agent:* and queue:* events
in the caller's transaction), and the directory's public functions (extensions for number clashes).
"""
